"""The decode gate: the viewer's image work outside renders (decoding an upload, the first opening
of a served file, the PNG of a source image) runs through :class:`DecodeGate`. A few jobs run at
once in the gate's own threads, a few wait, the rest get 503 at once; requests for the same key
share one job (single flight); the heap's free pages go back to the OS after every job.

So a burst of uploads or of first requests for a large file holds at most ``workers`` decodes in
memory, however many clients send them, and Starlette's thread pool, which answers the listing,
never fills up with decodes."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from fastapi import HTTPException

from liif.render.kernels import release_free_memory

T = TypeVar("T")


class DecodeGate:
    """At most ``workers`` jobs run (in a thread pool), at most ``queue`` wait; :meth:`run` refuses
    the rest with 503. A job is admitted and counted on the event loop (no lock needed there);
    ``running`` is counted in the worker threads, under a lock."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers, self.queue = workers, queue
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liif-decode")
        self.loop = asyncio.get_running_loop()
        self.flights: dict[Hashable, asyncio.Task[Any]] = {}
        self.lock = threading.Lock()
        self.admitted = self.running = 0
        self.peak_admitted = self.peak_running = 0
        self.jobs = self.shared = self.refused = 0

    async def run(self, fn: Callable[[], T], key: Hashable | None = None) -> T:
        """``fn()`` in a worker thread. With a ``key``, a request that comes while a job of the same
        key is admitted gets that job's result (or error) instead of a job of its own. A request
        that goes away does not stop its job: the others may wait for it, and it ends soon."""
        task = self.flights.get(key) if key is not None else None
        if task is not None:
            self.shared += 1
        else:
            if self.admitted >= self.workers + self.queue:
                self.refused += 1
                raise HTTPException(503, "the server is busy decoding images; retry shortly",
                                    headers={"Retry-After": "1"})
            self.admitted += 1
            self.peak_admitted = max(self.peak_admitted, self.admitted)
            task = self.loop.create_task(self._job(fn))
            task.add_done_callback(_retrieve)
            if key is not None:
                self.flights[key] = task
                task.add_done_callback(lambda t: self._land(key, t))
        return cast(T, await asyncio.shield(task))

    def _land(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self.flights.get(key) is task:
            del self.flights[key]

    async def _job(self, fn: Callable[[], T]) -> T:
        try:
            return await self.loop.run_in_executor(self.pool, self._call, fn)
        finally:
            self.admitted -= 1

    def _call(self, fn: Callable[[], T]) -> T:
        with self.lock:
            self.running += 1
            self.jobs += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            return fn()
        finally:
            with self.lock:
                self.running -= 1
            release_free_memory()  # the job's buffers (and any image it evicted) are free by now


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a job's error as seen: when every request waiting for it went away, nobody else does."""
    if not task.cancelled():
        task.exception()


__all__ = ["DecodeGate"]
