"""Parity tolerances, per precision, in one place.

Errors are measured against the PyTorch model evaluated in float64:
``max_abs`` = max |out - ref|, ``max_rel`` = max_abs / max |ref|,
``rel_l2`` = ||out - ref||_2 / ||ref||_2.

A fixed relative bound misjudges an ill-conditioned output (a small-magnitude head whose values come
from cancelling large ones): PyTorch itself in float32 misses it by more than 1e-5. So every output is
also measured for the PyTorch model in float32 (its *baseline*), and an output passes when it is within
the fixed bound **or** within what its baseline predicts for the precision:

| precision | unit roundoff u | output passes when (per metric)                                   |
|-----------|-----------------|-------------------------------------------------------------------|
| fp32      | 2^-24           | error <= fixed bound, or <= 4 x baseline                            |
| fp16      | 2^-11           | error <= fixed bound, or <= 4 x baseline x 2^-11 / 2^-24 (x 8192)  |
| int8      | 2^-8            | error <= fixed bound, or <= 4 x baseline x 2^-8 / 2^-24 (x 65536)  |

The baseline divided by float32's roundoff is the output's condition; times the precision's roundoff
it is the error a correct export of that precision can have. ``--rtol`` / ``--atol`` override both.
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
    # A whole float16 model (`dcn-deploy export --precision fp16`): X/W/B/Y of every DCN node and
    # every other layer in float16, the offset/mask path in float32 (see export.convert_to_fp16).
    # Measured 2026-11-22 (3 seeded inputs, random N(0,1) images, vs float64 PyTorch):
    #   resnet50_dcn 1x3x224x224 in ONNX Runtime 1.31.1 CPU:  max rel <= 4.8e-4, rel L2 <= 2.8e-4
    #   demo 2x3x64x80 in ONNX Runtime 1.31.1 CPU:             max rel  4.7e-4, rel L2  2.9e-4
    #   the same graphs with every float16 tensor rounded where it is produced, as a GPU engine
    #   stores them (ONNX Runtime's CPU provider has no float16 Conv/Relu/Add/...: it runs them,
    #   and the DCN nodes between them, in float32 and rounds only the weights and graph I/O;
    #   tests/test_fp16.py's fp16_storage_emulation adds the roundings with explicit casts):
    #   resnet50_dcn max rel <= 1.07e-3, rel L2 <= 4.7e-4; demo 4.8e-4 / 2.9e-4.
    # Bound: about 3x the worst of those (deeper models and fp16-accumulating kernels add error;
    # a wrong offset or tap gives errors of 1e-2 and more, far above it).
    "fp16": Tolerance(max_rel=3e-3, rel_l2=1.5e-3),
    # An INT8 model from `dcn-deploy quantize` (DCN layers as DcnDeformConvInt8, every other Conv in
    # Q/DQ form by ONNX Runtime's quantizer), calibrated on its own synthetic set, against the float64
    # model. Measured 2026-11-23: resnet50_dcn 1x3x224x224 (8 calibration samples, max method):
    # rel L2 6.9e-3 to 1.3e-2, max rel <= 1.4e-2. The bound on rel L2 is 2e-2; max rel gets
    # the same headroom. The exact check of each INT8 node is apart (validate.check_int8_nodes).
    "int8": Tolerance(max_rel=3e-2, rel_l2=2e-2),
}


# One DCN node in float16 (X, W, B, Y float16; offset and mask float16 or float32), computed in
# float32 by the kernel and rounded once: what tests/test_fp16.py asserts for every tests/cases.py
# case. Measured 2026-11-22: rel L2 <= 2.2e-4 (max rel <= 3.6e-4) against the reference on the
# same float16 inputs; with float32 offsets/mask, rel L2 <= 4.2e-4 against the reference on the
# unrounded float32 inputs (float16 offsets reach 1.4e-3 there with offsets of 6 px).
FP16_NODE = Tolerance(max_rel=2e-3, rel_l2=1e-3)


UNIT_ROUNDOFF = {"fp32": 2.0**-24, "fp16": 2.0**-11, "int8": 2.0**-8}
BASELINE_SAFETY = 4.0  # a correct export's error over what its float32 baseline predicts, at most


def baseline_bound(precision: str, baseline: float) -> float:
    """The error a correct ``precision`` export may have for an output PyTorch float32 misses by ``baseline``."""
    return BASELINE_SAFETY * baseline * UNIT_ROUNDOFF[precision] / UNIT_ROUNDOFF["fp32"]


def tolerance_for(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise ValueError(f"no tolerance for precision '{precision}'; known: {sorted(TOLERANCES)}") from None
