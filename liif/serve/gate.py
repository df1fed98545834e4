"""The render gate: every render of the viewer, LIIF or bicubic, runs through :class:`RenderGate`.
A few run at once in a thread pool, a few wait, the rest get 503 at once; a render stops early
when its client leaves (499), when it runs past the time limit (504) or when the server shuts
down (503)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import HTTPException, Request

from liif.api import RenderCancelled
from liif.serve.limits import Limits


@dataclass
class _Job:
    deadline: float  # time.monotonic() after which the render stops
    gone: bool = False  # the client disconnected
    over: bool = False  # nobody waits for the result any more


class RenderGate:
    """At most ``workers`` renders run (in a thread pool), at most ``queue`` wait; ``run`` refuses
    the rest at once. Counters live on the event loop, so no lock is needed.

    A render is a function of a ``stop()`` callable, which it calls between stripes (see
    ``Upscaler.upscale(cancel=...)``); ``stop()`` turns True when the client disconnects, when
    ``seconds`` have passed since the request was admitted, or after :meth:`close`."""

    def __init__(self, workers: int, queue: int, seconds: float = Limits.request_seconds) -> None:
        self.workers, self.queue, self.seconds = workers, queue, seconds
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liif-render")
        self.slots = asyncio.Semaphore(workers)
        self.loop = asyncio.get_running_loop()
        self.admitted = self.running = 0
        self.peak_admitted = self.peak_running = 0
        self.refused = self.cancelled = 0
        self.closing = False

    def close(self) -> None:
        """Refuse new renders and stop the running ones at their next stripe. It only sets a flag,
        so a signal handler or another thread may call it."""
        self.closing = True

    async def run(self, request: Request, fn: Callable[[Callable[[], bool]], bytes]) -> bytes:
        if self.closing:
            raise HTTPException(503, "the server is shutting down")
        if self.admitted >= self.workers + self.queue:
            self.refused += 1
            raise HTTPException(503, "the renderer is busy; retry shortly", headers={"Retry-After": "1"})
        job = _Job(time.monotonic() + self.seconds)
        self.admitted += 1
        self.peak_admitted = max(self.peak_admitted, self.admitted)
        try:
            async with self.slots:
                if await request.is_disconnected():  # the page moved on while this waited
                    raise HTTPException(499, "client went away")
                if self.closing:
                    raise HTTPException(503, "the server is shutting down")
                if time.monotonic() > job.deadline:  # waited its whole time in the queue
                    raise HTTPException(504, f"no render slot within the {self.seconds:g} s allowed per request")
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
                try:
                    return await self._render(request, fn, job)
                finally:
                    self.running -= 1
        finally:
            self.admitted -= 1

    async def _render(self, request: Request, fn: Callable[[Callable[[], bool]], bytes], job: _Job) -> bytes:
        def stop() -> bool:  # called from the render thread
            return job.gone or job.over or self.closing or time.monotonic() > job.deadline

        watcher = asyncio.ensure_future(self._watch(request, job))
        try:
            return await self.loop.run_in_executor(self.pool, fn, stop)
        except RenderCancelled:
            self.cancelled += 1
            if self.closing:
                raise HTTPException(503, "the server is shutting down") from None
            if job.gone:
                raise HTTPException(499, "client went away") from None
            raise HTTPException(504, f"the render took longer than the {self.seconds:g} s allowed per request; "
                                     "ask for fewer pixels") from None
        finally:
            job.over = True  # also when this task itself is cancelled: the thread stops at its next stripe
            watcher.cancel()

    @staticmethod
    async def _watch(request: Request, job: _Job) -> None:
        """Note a disconnect while the render runs (it ends when the render does)."""
        while not job.over:
            if await request.is_disconnected():
                job.gone = True
                return
            await asyncio.sleep(0.2)


__all__ = ["RenderGate"]
