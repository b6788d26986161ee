"""Parity tolerances, per precision, in one place.

Errors are measured against the PyTorch model evaluated in float64:
``max_abs`` = max |out - ref|, ``max_rel`` = max_abs / max |ref|,
``rel_l2`` = ||out - ref||_2 / ||ref||_2.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    max_rel: float
    rel_l2: float


TOLERANCES: dict[str, Tolerance] = {
    # float32 everywhere: rounding of float32 accumulation only.
    "fp32": Tolerance(max_rel=1e-5, rel_l2=1e-5),
}


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise ValueError(f"no tolerance for precision '{precision}'; known: {sorted(TOLERANCES)}") from None
