"""The dynamic batcher of ``dcn-deploy serve``: stacks concurrent requests along axis 0 when
:mod:`dcn_deploy.serving.batch_axis` allows it, else runs them one by one."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dcn_deploy.backends.runtime import Runtime
from dcn_deploy.serving.batch_axis import (
    ALONE,
    PROBE,
    STACK,
    BatchAxis,
    batch_axis_from_graph,
    probe_batch_axis,
)
from dcn_deploy.serving.runner import RunPool, RunTimeout

LOG = logging.getLogger("dcn_deploy.serving.server")


@dataclass
class _Pending:
    arrays: dict[str, np.ndarray]
    rows: int
    elements: int  # of its largest input: stacked runs keep each input within max_elements
    key: tuple
    future: asyncio.Future
    outputs: list[str] = field(default_factory=list)


class DynamicBatcher:
    """Runs requests on ``runtime`` from an asyncio server, stacking concurrent ones along axis 0.

    ``await batcher.infer(arrays, output_names)`` returns that request's outputs, what ``runtime.run``
    returns for it alone. Requests are stacked only while ``batch_axis`` says ``stack``: from the graph,
    or, when it says ``probe``, after the first request small enough to probe with (run alone as
    usual, then checked by :func:`~dcn_deploy.serving.batch_axis.probe_batch_axis`); until then, and for good
    when the probe fails, requests run alone. ``workers`` threads run batches; while they are busy,
    new requests queue and make up the next batches. ``max_elements``: no stacked run gets an input of
    more elements (None: no limit). ``run_timeout_s``: a run still going that long fails with
    :class:`~dcn_deploy.serving.runner.RunTimeout` and its thread is replaced (None: runs are never
    abandoned; :mod:`dcn_deploy.serving.runner`). Counters: ``runs``, ``requests``,
    ``batched_requests`` (requests that shared a run), ``probe_runs``; ``pool.stuck``.
    """

    def __init__(self, runtime: Runtime, max_batch_size: int = 8, max_delay_ms: float = 1.0, workers: int = 2,
                 max_elements: int | None = None, run_timeout_s: float | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.runtime = runtime
        limit = runtime.max_batch if runtime.max_batch is not None else max_batch_size
        self.max_batch_size = min(max_batch_size, limit)
        self.batch_axis: BatchAxis = batch_axis_from_graph(runtime.inputs, runtime.outputs, runtime.max_batch)
        if self.max_batch_size <= 1 and self.batch_axis.verdict != ALONE:
            self.batch_axis = BatchAxis(ALONE, f"max batch size {self.max_batch_size}")
        self.max_delay = max_delay_ms / 1000.0
        self.workers = workers
        self.max_elements = max_elements
        self.pool = RunPool(workers, run_timeout_s)
        self.runs = self.requests = self.batched_requests = self.probe_runs = 0
        self._probing = False
        self._queue: asyncio.Queue | None = None
        self._held: deque[_Pending] = deque()  # taken from the queue but not fitting the batch it met
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start the batching tasks on the running event loop."""
        self._queue = asyncio.Queue()
        if self.batch_axis.verdict in (STACK, PROBE):
            self._tasks = [asyncio.get_running_loop().create_task(self._batch_loop()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.pool.stop()

    def describe(self) -> str:
        """How requests are run, in words (the reason included)."""
        how = {STACK: "stacks requests", PROBE: "stacks requests once a probe on the first request confirms the "
               "batch axis", ALONE: "runs requests one by one"}[self.batch_axis.verdict]
        return f"{how}: {self.batch_axis.reason}"

    def _stack_key(self, arrays: dict[str, np.ndarray]) -> tuple:
        return tuple((name, array.dtype.str, array.shape[1:]) for name, array in arrays.items())

    def _within(self, elements: int) -> bool:
        return self.max_elements is None or elements <= self.max_elements

    async def infer(self, arrays: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """The outputs of one request whose inputs :meth:`Runtime.check_inputs` has accepted."""
        self.requests += 1
        loop = asyncio.get_running_loop()
        rows = next(iter(arrays.values())).shape[0] if arrays else 0
        elements = max((array.size for array in arrays.values()), default=0)
        if (self.batch_axis.verdict == PROBE and not self._probing and 0 < 2 * rows <= self.max_batch_size
                and self._within(2 * elements)):
            return await self._answer_and_probe(arrays, output_names)
        if (not self.batch_axis.stack or rows >= self.max_batch_size or rows == 0
                or not self._within(2 * elements)):  # nothing else would fit beside it
            self.runs += 1
            return await self.pool.run(self.runtime.run_checked, arrays, output_names)
        future = loop.create_future()
        await self._queue.put(_Pending(arrays, rows, elements, self._stack_key(arrays), future, output_names))
        return await future

    async def _answer_and_probe(self, arrays: dict[str, np.ndarray], output_names: list[str]
                                ) -> dict[str, np.ndarray]:
        """Run this request alone (its answer), then probe the batch axis with its inputs; one probe at a
        time, the other requests meanwhile run alone."""
        self._probing = True
        try:
            names = list(dict.fromkeys([*output_names, *self.batch_axis.unproven]))
            self.runs += 1
            alone = await self.pool.run(self.runtime.run_checked, arrays, names)
            try:
                verdict = await self.pool.run(probe_batch_axis, self.runtime.run_checked, arrays,
                                              self.batch_axis.unproven, alone)
            except Exception as error:  # noqa: BLE001 - the model failed on the varied input: do not stack
                verdict = BatchAxis(ALONE, f"the batch-axis probe failed ({type(error).__name__}: {error})")
            self.probe_runs += 2
            self.batch_axis = verdict
            # a refusal is worth the operator's attention: the server runs slower than configured
            (LOG.info if verdict.stack else LOG.warning)("batching: %s", self.describe())
            return {name: alone[name] for name in output_names}
        finally:
            self._probing = False

    async def _next(self) -> _Pending:
        if self._held:
            return self._held.popleft()
        return await self._queue.get()

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next()
            batch, rows, elements = [first], first.rows, first.elements
            deadline = loop.time() + self.max_delay
            while rows < self.max_batch_size:
                if self._held:
                    candidate = self._held.popleft()
                else:
                    remaining = deadline - loop.time()
                    try:
                        if remaining > 0:
                            candidate = await asyncio.wait_for(self._queue.get(), remaining)
                        else:
                            candidate = self._queue.get_nowait()
                    except (asyncio.TimeoutError, asyncio.QueueEmpty):
                        break
                if (candidate.key != first.key or rows + candidate.rows > self.max_batch_size
                        or not self._within(elements + candidate.elements)):
                    self._held.appendleft(candidate)  # first in line for the next batch
                    break
                batch.append(candidate)
                rows += candidate.rows
                elements += candidate.elements
            try:
                await self._run_batch(batch)
            except Exception as error:  # noqa: BLE001 - answer the batch's callers, keep batching
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # a client that went away was cancelled
        if not batch:
            return
        names = list(dict.fromkeys(n for p in batch for n in p.outputs))
        self.runs += 1
        if len(batch) == 1:
            results = [await self._run_one(batch[0])]
        else:
            try:
                stacked = {name: np.concatenate([p.arrays[name] for p in batch]) for name in batch[0].arrays}
                outputs = await self.pool.run(self.runtime.run_checked, stacked, names)
                results = self._split(batch, outputs)
            except RunTimeout as timeout:  # run alone, each would take as long; the requests' time is up
                results = [timeout] * len(batch)
            except Exception:  # noqa: BLE001 - one request's failure must not fail the others: run each alone
                results = None
            if results is None:
                results = [await self._run_one(p) for p in batch]
            elif not isinstance(results[0], RunTimeout):
                self.batched_requests += len(batch)
        for pending, result in zip(batch, results):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result({n: result[n] for n in pending.outputs})

    async def _run_one(self, pending: _Pending):
        try:
            return await self.pool.run(self.runtime.run_checked, pending.arrays, pending.outputs)
        except Exception as error:  # noqa: BLE001 - handed to that request's caller
            return error

    @staticmethod
    def _split(batch: list[_Pending], outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]] | None:
        """Each request's rows of the stacked outputs; None when an output's axis 0 is not the rows'
        sum (a model that does not keep rows apart: run the requests one by one instead)."""
        total = sum(p.rows for p in batch)
        if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
            return None
        results, start = [], 0
        for pending in batch:
            stop = start + pending.rows
            results.append({name: value[start:stop] for name, value in outputs.items()})
            start = stop
        return results
