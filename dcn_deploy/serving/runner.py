"""The threads that run the model for ``dcn-deploy serve``, each run watched against a timeout.

``workers`` daemon threads take runs from one queue. A run still going ``timeout_s`` after it
started is abandoned: its caller gets :class:`RunTimeout` at once, a fresh thread takes the stuck
one's place (a model that hangs costs a thread, never the server's capacity), and the stuck thread
ends when its run returns, if ever. Daemon threads: a hung run cannot keep the process from
exiting. A run that raises hands its exception to its caller alone.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

LOG = logging.getLogger("dcn_deploy.serving.server")


class RunTimeout(TimeoutError):
    """A model run took longer than the timeout; the message says how long."""


@dataclass(eq=False)
class _Job:
    fn: Callable
    args: tuple
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    started: float | None = None
    abandoned: bool = False
    cancelled: bool = False
    thread: threading.Thread | None = field(default=None, repr=False)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up, or the watchdog answered for it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class RunPool:
    """``await pool.run(fn, *args)`` runs ``fn(*args)`` on one of ``workers`` threads (module docstring);
    ``timeout_s`` None: runs are never abandoned. Counters: ``stuck`` (abandoned runs not returned
    yet), ``abandoned`` (all so far)."""

    def __init__(self, workers: int, timeout_s: float | None = None, name: str = "dcn-deploy-run"):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers, self.timeout, self.name = workers, timeout_s, name
        self.stuck = self.abandoned = 0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: set[_Job] = set()
        self._threads: list[threading.Thread] = []
        self._watchdog: asyncio.Task | None = None
        self._spawned = 0
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        self._spawned += 1
        thread = threading.Thread(target=self._work, name=f"{self.name}-{self._spawned}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancelled:
                continue
            with self._lock:
                job.started, job.thread = time.monotonic(), threading.current_thread()
                self._running.add(job)
            result, error = None, None
            try:
                result = job.fn(*job.args)
            except BaseException as failure:  # noqa: BLE001 - handed to this run's caller
                error = failure
            with self._lock:
                self._running.discard(job)
                abandoned = job.abandoned
                if abandoned:
                    self.stuck -= 1
            if not abandoned:
                try:
                    job.loop.call_soon_threadsafe(_settle, job.future, result, error)
                except RuntimeError:  # the event loop is closed: nobody waits any more
                    pass
            # drop the inputs and outputs now, not when the next job comes: a large request's
            # arrays would otherwise stay alive in an idle thread
            job = result = error = None
            if abandoned:
                return  # a fresh thread has taken this one's place

    async def run(self, fn: Callable, *args) -> Any:
        loop = asyncio.get_running_loop()
        if self.timeout is not None and (self._watchdog is None or self._watchdog.done()):
            self._watchdog = loop.create_task(self._watch())
        job = _Job(fn, args, loop, loop.create_future())
        self._jobs.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # not started yet: skipped; running: its result is dropped
            raise

    async def _watch(self) -> None:
        period = min(0.25, self.timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            with self._lock:
                late = [job for job in self._running if now - job.started > self.timeout]
                for job in late:
                    self._running.discard(job)
                    job.abandoned = True
                    self.stuck += 1
                    self.abandoned += 1
                    self._threads.remove(job.thread)
                    self._spawn()
            for job in late:
                LOG.error("a model run passed the %.3g s request timeout: abandoned (thread %s; %d stuck), a new "
                          "thread takes its place", self.timeout, job.thread.name, self.stuck)
                _settle(job.future, None, RunTimeout(f"the model run took longer than the request timeout of "
                                                     f"{self.timeout:g} s"))

    async def stop(self, timeout: float = 10.0) -> None:
        """End the threads once their runs return (stuck ones end on their own)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
