"""INT8 DeformConv: the one definition every backend computes, and its PyTorch reference.

Symmetric quantization, zero points 0 (TensorRT's and ONNX QuantizeLinear's int8 convention):

=====================  ===============================================================================
quantity               definition (float32 arithmetic unless stated)
=====================  ===============================================================================
input                  ``Xq`` int8, ``X ~ x_scale * Xq``; ``Xq = saturate(round_half_even(X / x_scale))``
                       (ONNX ``QuantizeLinear``)
weight                 ``Wq`` int8 in [-127, 127], per output channel: ``W ~ w_scale[o] * Wq[o]``
offset, mask, bias     floating point, never quantized (sampling positions stay exact)
sample                 ``s = sum_q (corner_weight_q * mask) * Xq[corner_q]``, the float bilinear
                       sample of the *integer* plane (zeros outside, as for float DeformConv)
requantized sample     ``vq = saturate_int8(round_half_even(s))``: the sample in units of ``x_scale``
accumulation           ``acc[o] = sum Wq * vq``, exact (int32 in kernels, int64 here)
float output           ``Y = float32(acc) * float32(x_scale * w_scale[o]) + bias[o]``
int8 output            ``Yq = saturate_int8(round_half_even(Y / y_scale))`` (the Requantized node)
=====================  ===============================================================================

Why the sample is taken on ``Xq`` and not on ``x_scale * Xq`` divided back by ``x_scale``: the
two are the same real number, but this form rounds once instead of three times, does not
depend on ``x_scale`` being a power of two, and keeps exact ties exact: a sample halfway
between two pixels of values ``a`` and ``b`` is exactly ``(a + b) / 2`` in every backend, so
round-half-to-even decides it the same way everywhere. Backends may still order the four
corner products differently (FMA, mask folded in or not); the result then differs from this
reference only where ``s`` lies within a rounding error of ``k + 0.5``, by one unit of ``vq``.
That is the tolerance of the exact parity check (:func:`compare_int8`).

``acc`` must fit in int32 in every kernel: ``C/group * kh * kw * 128 * 128 < 2**31`` (a weight may be
-128 in a graph this project did not quantize), i.e. at most 131071 products per output (checked by
:func:`check_int8_problem`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from dcn_deploy.op.geometry import DeformConvGeometry
from dcn_deploy.op.reference import grouped_convolution, sample_columns

INT8_MIN, INT8_MAX = -128, 127


# Largest C/group*kh*kw whose int32 accumulator cannot overflow: 128*128*n < 2**31 (|vq|, |Wq| <= 128).
MAX_PRODUCTS_PER_OUTPUT = (2**31 - 1) // (128 * 128)


def check_scale(value: float, name: str, where: str = "deform_conv2d_int8") -> float:
    """A quantization scale must be a finite positive float32 (float32 is what kernels read)."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"{where}: {name} must be finite and positive, got {scale}")
    as_float32 = np.float32(scale)
    if not (np.isfinite(as_float32) and as_float32 >= np.finfo(np.float32).tiny):
        raise ValueError(f"{where}: {name} = {scale} is not a positive normal float32")
    return float(as_float32)  # ONNX float attributes (what kernels read) are float32


@dataclass(frozen=True)
class Int8Scales:
    """The scales of one INT8 DeformConv: per-tensor input, per-output-channel weight, optional
    per-tensor output (present only when the node writes int8)."""

    x_scale: float
    w_scale: tuple[float, ...]
    y_scale: float | None = None

    @staticmethod
    def make(x_scale, w_scale, y_scale=None, out_channels: int | None = None, where: str = "deform_conv2d_int8"):
        """Validate: finite positive scales, ``w_scale`` of length ``out_channels`` (or 1, broadcast)."""
        x = check_scale(x_scale, "x_scale", where)
        try:
            w = np.atleast_1d(np.asarray(w_scale.detach().cpu() if isinstance(w_scale, Tensor) else w_scale,
                                         dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: w_scale must be a list of numbers, got {w_scale!r}") from None
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"{where}: w_scale must be a 1-D list of per-output-channel scales, got shape {w.shape}")
        if out_channels is not None:
            if w.size == 1:
                w = np.repeat(w, out_channels)
            elif w.size != out_channels:
                raise ValueError(
                    f"{where}: w_scale has {w.size} values, expected one per output channel ({out_channels}) or 1"
                )
        scales = tuple(check_scale(v, f"w_scale[{k}]", where) for k, v in enumerate(w.tolist()))
        y = None if y_scale is None else check_scale(y_scale, "y_scale", where)
        return Int8Scales(x, scales, y)

    def output_scale(self) -> np.ndarray:
        """``float32(x_scale * w_scale[o])``: the factor from the int32 accumulator to Y."""
        return (np.float64(self.x_scale) * np.asarray(self.w_scale, dtype=np.float64)).astype(np.float32)


def check_int8_problem(input: Tensor, weight: Tensor, where: str = "deform_conv2d_int8") -> None:
    """int8 X and W, and an accumulator that fits in int32."""
    for name, tensor in (("input", input), ("weight", weight)):
        if tensor.dtype != torch.int8:
            raise TypeError(f"{where}: {name} must be int8 (quantized), got {tensor.dtype}")
    products = weight.shape[1] * weight.shape[2] * weight.shape[3]
    if products > MAX_PRODUCTS_PER_OUTPUT:
        raise ValueError(
            f"{where}: C/group*kh*kw = {products} products per output could overflow the int32 "
            f"accumulator (at most {MAX_PRODUCTS_PER_OUTPUT})"
        )


def _round_saturate(values: Tensor, low: int = INT8_MIN, high: int = INT8_MAX) -> Tensor:
    # torch.round rounds half to even, as ONNX QuantizeLinear and the kernels do. NaN -> 0, as
    # the kernels' float-to-int conversion of a saturated NaN is not defined; the reference picks 0.
    values = torch.nan_to_num(values, nan=0.0)
    return torch.round(values).clamp_(low, high).to(torch.int8)


def quantize_symmetric(values: Tensor, scale: float) -> Tensor:
    """``saturate(round_half_even(values / scale))`` in int8: ONNX QuantizeLinear, zero point 0."""
    scale = check_scale(scale, "scale", "quantize_symmetric")
    return _round_saturate(values.to(torch.float32) / torch.tensor(scale, dtype=torch.float32))


def quantize_weight_per_channel(weight: Tensor) -> tuple[Tensor, tuple[float, ...]]:
    """Per-output-channel symmetric weight quantization: ``w_scale[o] = max|W[o]| / 127`` and
    ``Wq`` in [-127, 127]. An all-zero channel gets scale 1 (any scale represents it exactly)."""
    if weight.dim() != 4:
        raise ValueError(f"quantize_weight_per_channel: weight must be 4-D, got shape {tuple(weight.shape)}")
    w = weight.detach().to(torch.float64)
    if not torch.isfinite(w).all():
        raise ValueError("quantize_weight_per_channel: weight holds Inf or NaN")
    amax = w.abs().flatten(1).amax(dim=1)
    scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).to(torch.float32)
    quantized = torch.round(w / scales.double().view(-1, 1, 1, 1)).clamp_(-127, 127).to(torch.int8)
    return quantized, tuple(float(s) for s in scales)


def _geometry(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups, where):
    check_int8_problem(input, weight, where)
    # The geometry checks only look at shapes; they run on float views of the int8 tensors.
    return DeformConvGeometry.check(
        input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups, where=where
    )


def requantized_samples(input: Tensor, offset: Tensor, mask: Tensor | None, geo: DeformConvGeometry) -> Tensor:
    """``vq``: the int8 samples ``(N, C, kh*kw, Ho*Wo)`` of the integer plane (see the module table)."""
    samples = sample_columns(input.to(torch.float32), offset.to(torch.float32),
                              None if mask is None else mask.to(torch.float32), geo)
    return _round_saturate(samples)


def deform_conv2d_int8(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    x_scale: float,
    w_scale: Sequence[float] | Tensor | float,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    mask: Tensor | None = None,
    groups: int = 1,
    offset_groups: int | None = None,
    y_scale: float | None = None,
) -> Tensor:
    """The exact INT8 DeformConv (module table): int8 ``input`` and ``weight``, float offsets,
    mask and bias. Returns float32 Y, or int8 Yq when ``y_scale`` is given."""
    where = "deform_conv2d_int8"
    geo = _geometry(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups, where)
    m = weight.shape[0]
    scales = Int8Scales.make(x_scale, w_scale, y_scale, out_channels=m, where=where)
    # Exact integer accumulation: int64 products and sums (no float rounding before the scale).
    vq = requantized_samples(input, offset, mask, geo)
    acc = grouped_convolution(weight.to(torch.int64), vq.to(torch.int64), geo)
    out_scale = torch.from_numpy(scales.output_scale()).view(1, m, 1, 1)
    y = acc.to(torch.float32) * out_scale
    if bias is not None:
        y = y + bias.to(torch.float32).view(1, m, 1, 1)
    if scales.y_scale is None:
        return y
    return _round_saturate(y / torch.tensor(scales.y_scale, dtype=torch.float32))


def deform_conv2d_fake_quant(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    x_scale: float,
    w_scale: Sequence[float] | Tensor | float,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    mask: Tensor | None = None,
    groups: int = 1,
    offset_groups: int | None = None,
) -> Tensor:
    """The same definition in float64 quantize-dequantize form, as a training framework's
    fake-quant simulates it: dequantized X sampled in float64, requantized with ``x_scale``, then
    a float64 convolution with the dequantized weight. Agrees with :func:`deform_conv2d_int8`
    except at samples within float rounding of a tie (module docstring)."""
    where = "deform_conv2d_fake_quant"
    geo = _geometry(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups, where)
    m = weight.shape[0]
    scales = Int8Scales.make(x_scale, w_scale, out_channels=m, where=where)
    x = input.to(torch.float64) * scales.x_scale
    samples = sample_columns(x, offset.to(torch.float64), None if mask is None else mask.to(torch.float64), geo)
    dequantized = torch.round(samples / scales.x_scale).clamp(INT8_MIN, INT8_MAX) * scales.x_scale
    w = weight.to(torch.float64) * torch.tensor(scales.w_scale, dtype=torch.float64).view(-1, 1, 1, 1)
    out = grouped_convolution(w, dequantized, geo)
    if bias is not None:
        out = out + bias.to(torch.float64).view(1, m, 1, 1)
    return out


@dataclass
class Int8Agreement:
    """How an INT8 result agrees with the exact reference (:func:`compare_int8`)."""

    elements: int
    differing: int  # elements beyond float rounding of the reference (int8: any difference)
    max_steps: float  # largest difference: int8 outputs in steps of Yq, float outputs in accumulator steps

    @property
    def differing_fraction(self) -> float:
        return self.differing / max(self.elements, 1)

    def within(self, max_steps: float, max_fraction: float = 1e-3) -> bool:
        return self.max_steps <= max_steps and self.differing_fraction <= max_fraction


# One flipped tie moves one requantized sample by 1, so the accumulator by |Wq| <= 127 steps.
FLIPPED_TIE_STEPS = 127


def compare_int8(output, expected, acc_step: float | Sequence[float] | np.ndarray | None = None) -> Int8Agreement:
    """Compare a backend's INT8 result with :func:`deform_conv2d_int8`.

    int8 outputs: differences in steps of Yq (a flipped tie: 1). Float outputs: differences in
    accumulator steps ``x_scale * w_scale[o]`` (``acc_step``, per output channel); an element
    differs when it is off by more than half a step and more than float32 rounding (4 ulp; FMA
    and the evaluation order of scale and bias), since a flipped tie moves it by ``|Wq|`` steps.
    """
    a = np.asarray(output.detach().cpu() if isinstance(output, Tensor) else output)
    b = np.asarray(expected.detach().cpu() if isinstance(expected, Tensor) else expected)
    if a.shape != b.shape:
        raise ValueError(f"compare_int8: shapes differ: {a.shape} vs {b.shape}")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if b.dtype == np.int8:
        differing, steps = diff > 0, diff
    else:
        if acc_step is None:
            raise ValueError("compare_int8: float outputs need acc_step (x_scale * w_scale per output channel)")
        step = np.asarray(acc_step, dtype=np.float64)
        if step.ndim == 1 and b.ndim == 4:
            step = step.reshape(1, -1, 1, 1)
        rounding = np.maximum(0.5 * step, 4 * np.finfo(np.float32).eps * np.abs(b.astype(np.float64)))
        differing = ~(diff <= rounding)  # NaN counts as differing
        steps = np.where(differing, diff / step, 0.0)
    steps = np.where(np.isnan(steps), np.inf, steps)
    return Int8Agreement(int(a.size), int(differing.sum()), float(steps.max(initial=0.0)))
