"""Timing: interleaved rounds of several implementations (so machine drift hits all alike) and the
median/min/max of each; CPU wall clock or CUDA events. The warm-up rounds (cold caches, lazy
initialisation, first-run allocations) run first and are discarded: never in the times."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from dcn_deploy.bench.errors import BenchError


@dataclass
class Timing:
    """Times of one implementation in one row, milliseconds; ``discarded``: the warm-up rounds run
    before them and not counted."""

    times_ms: list[float]
    discarded: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def max_ms(self) -> float:
        return max(self.times_ms)

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "max_ms": self.max_ms, "runs": len(self.times_ms),
                "discarded_rounds": self.discarded, "times_ms": [round(t, 6) for t in self.times_ms]}


# Cycles of the spin kernel queued before each timed GPU call: about 1 ms at 1.5-2 GHz, longer than
# the host needs to launch any implementation here, so the events see GPU time only.
_GPU_SPIN_CYCLES = 2_000_000


def _cpu_measure() -> Callable[[Callable[[], Any]], float]:
    def measure(function: Callable[[], Any]) -> float:
        start = time.perf_counter()
        function()
        return (time.perf_counter() - start) * 1e3

    return measure


def _cuda_measure() -> Callable[[Callable[[], Any]], float]:  # pragma: no cover - GPU only: CUDA events
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    spin = getattr(torch.cuda, "_sleep", None)

    def measure(function: Callable[[], Any]) -> float:
        if spin is not None:
            spin(_GPU_SPIN_CYCLES)
        start.record()
        function()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return measure


def time_interleaved(
    functions: dict[str, Callable[[], Any]],
    warmup: int,
    repeat: int,
    timer: str = "cpu",
    step: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Times every function ``repeat`` times after ``warmup`` untimed calls, interleaved.

    Round ``r`` runs every function once, starting at index ``r % len(functions)``, so no
    implementation always runs right after the same other one. ``timer`` is ``"cpu"``
    (``time.perf_counter``) or ``"cuda"`` (CUDA events on the current stream, host launch
    overhead hidden behind a spin kernel). ``step`` is called after each warm-up and each round.
    """
    if timer not in ("cpu", "cuda"):
        raise ValueError(f"timer must be 'cpu' or 'cuda', got {timer!r}")
    if repeat < 1 or warmup < 0:
        raise BenchError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    names = list(functions)
    measure = _cpu_measure() if timer == "cpu" else _cuda_measure()
    for _ in range(warmup):
        for name in names:
            functions[name]()
        if timer == "cuda":

            torch.cuda.synchronize()
        if step:
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        first = round_ % len(names) if names else 0
        for name in names[first:] + names[:first]:
            times[name].append(measure(functions[name]))
        if step:
            step()
    return {name: Timing(values, warmup) for name, values in times.items()}


def ratio(numerator: Timing | None, denominator: Timing | None) -> float | None:
    if numerator is None or denominator is None or denominator.median_ms <= 0:
        return None
    return numerator.median_ms / denominator.median_ms


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))
