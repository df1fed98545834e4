"""Idle-time warming: the viewer's server fills its features cache before the page asks.

A render of a view first needs the encoder's output over the view's LR footprint (for EDSR-baseline
on a CPU, most of a cold view's time); the decode that follows is cheaper, for LMF much cheaper. So
while no render is admitted, :class:`Warmer` computes, in one background thread, the whole image's
features and maps (``Pipeline.warm``) of the images the page is about to show: when the server
starts, the folder's first images in name order (the page opens the first when its URL names none;
deep links name the others), each only where it fits beside what the cache holds; and any image as
soon as the page opens it or renders from it. It works in the cache's pieces and gives way to
renders: it starts a piece only after the renderer has been idle for ``quiet`` seconds and stops
between pieces as soon as a render is admitted (what it finished stays cached; it resumes when the
renderer is idle again). Start-up warming never evicts; warming an opened image may, as its render
would (the cache is least-recently-used).
"""
from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from liif.api import RenderCancelled

Job = Callable[[Callable[[], bool]], object]  # job(cancel): warm one image


class Warmer:
    """One thread running the newest job first, only while ``busy()`` has been False for ``quiet``
    seconds; a job stopped by a render goes back to the queue, behind any job added meanwhile."""

    def __init__(self, busy: Callable[[], bool], quiet: float = 0.3) -> None:
        self.busy, self.quiet = busy, quiet
        self.jobs: OrderedDict[Hashable, Job] = OrderedDict()
        self.cond = threading.Condition()
        self.running: Hashable | None = None
        self.stopped = False
        self.done = self.interrupted = 0  # jobs finished, pieces given way to renders (tests and logs)
        self.thread = threading.Thread(target=self._loop, name="liif-warm", daemon=True)
        self.thread.start()

    def add(self, key: Hashable, job: Job) -> None:
        """Warm ``key`` next (a job already queued under ``key`` moves to the front)."""
        with self.cond:
            self.jobs[key] = job
            self.jobs.move_to_end(key, last=False)
            self.cond.notify()

    def idle(self) -> bool:
        with self.cond:
            return not self.jobs and self.running is None

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is queued or running; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.jobs.clear()
            self.cond.notify()

    def _quiet(self) -> bool:
        """Wait until the renderer has been idle for ``quiet`` seconds; False when stopped."""
        since = time.monotonic()
        while not self.stopped:
            if self.busy():
                since = time.monotonic()
            elif time.monotonic() - since >= self.quiet:
                return True
            time.sleep(0.02)
        return False

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.jobs and not self.stopped:
                    self.cond.wait()
                if self.stopped:
                    return
            if not self._quiet():
                return
            with self.cond:
                if not self.jobs:
                    continue
                key, job = self.jobs.popitem(last=False)
                self.running = key
            try:
                job(lambda: self.stopped or self.busy())
                self.done += 1
            except RenderCancelled:  # a render came: resume later, unless a newer job came meanwhile
                self.interrupted += 1
                with self.cond:
                    if not self.stopped:
                        self.jobs.setdefault(key, job)
            except Exception as e:  # warming is an optimisation: a failure only costs speed
                print(f"liif serve: warming {key!r} failed: {e}", file=sys.stderr)
            finally:
                with self.cond:
                    self.running = None


__all__ = ["Warmer"]
