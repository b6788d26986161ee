"""The benchmark layers: shapes (``CxHxW`` specs), their random tensors, and one-layer ONNX models of the
custom op, ONNX Runtime's native DeformConv, the INT8 op and the dense Conv of the same shape."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from dcn_deploy.bench.errors import BenchError
from dcn_deploy.op.geometry import output_size
from dcn_deploy.op.int8 import quantize_symmetric, quantize_weight_per_channel


@dataclass(frozen=True)
class LayerShape:
    """One DCNv2 layer: ``in_channels`` -> ``out_channels`` on ``height`` x ``width``, 3x3, pad 1, stride 1."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: int = 3
    pad: int = 1
    stride: int = 1

    @property
    def spec(self) -> str:
        channels = (str(self.in_channels) if self.in_channels == self.out_channels
                    else f"{self.in_channels}:{self.out_channels}")
        return f"{channels}x{self.height}x{self.width}"

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(output_size(n, self.kernel, self.stride, 1, self.pad, self.pad) for n in (self.height, self.width))

    def describe(self) -> dict:
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "height": self.height,
            "width": self.width, "kernel": [self.kernel, self.kernel], "pads": [self.pad] * 4,
            "stride": [self.stride, self.stride], "dilation": [1, 1], "groups": 1, "offset_groups": 1,
            "mask": True, "bias": True, "out_height": self.out_hw[0], "out_width": self.out_hw[1],
        }


DEFAULT_SHAPES = (
    LayerShape(64, 64, 64, 64),
    LayerShape(256, 256, 50, 68),
    LayerShape(512, 512, 25, 34),
    LayerShape(128, 128, 100, 136),
)


_SPEC = re.compile(r"^(\d+)(?::(\d+))?x(\d+)x(\d+)$")


def parse_shape_spec(text: str) -> LayerShape:
    """``CxHxW`` (C input = output channels, e.g. ``64x64x64``) or ``C:MxHxW`` (``M`` output channels).

    Raises BenchError naming the spec when it is malformed.
    """
    match = _SPEC.match(text.strip().lower())
    if not match:
        raise BenchError(
            f"bad shape spec '{text}': expected CxHxW (channels x height x width, input = output channels, "
            "e.g. 64x64x64) or C:MxHxW (e.g. 64:128x56x56)"
        )
    c, m, h, w = match.groups()
    shape = LayerShape(int(c), int(m or c), int(h), int(w))
    if min(shape.in_channels, shape.out_channels, shape.height, shape.width) <= 0:
        raise BenchError(f"bad shape spec '{text}': every size must be positive")
    return shape


def layer_arrays(shape: LayerShape, batch: int, seed: int, offset_scale: float) -> dict:
    rng = np.random.default_rng([seed, shape.in_channels, shape.out_channels, shape.height, shape.width, batch])
    c, m, k = shape.in_channels, shape.out_channels, shape.kernel
    ho, wo = shape.out_hw
    taps = k * k

    def normal(*dims, scale=1.0):
        return (rng.standard_normal(dims, dtype=np.float32) * scale).astype(np.float32)

    return {
        "X": normal(batch, c, shape.height, shape.width),
        "W": normal(m, c, k, k, scale=1.0 / (c * taps) ** 0.5),
        "offset": normal(batch, 2 * taps, ho, wo, scale=offset_scale),
        "B": normal(m, scale=0.1),
        "mask": rng.uniform(0.0, 1.0, (batch, taps, ho, wo)).astype(np.float32),
    }


def int8_layer_tensors(t32: dict) -> dict:
    """The INT8 form of one layer's float32 tensors (same device): ``X`` and ``W`` quantized
    symmetrically (``x_scale = max|X| / 127``, per-channel ``w_scale``), float32 offset, mask and
    bias, and the scales. ``y_scale`` (requantized output) is 1/16 of the worst-case ``|Y|`` bound
    over 127: it only decides how many outputs saturate, which does not change the timing."""

    x = t32["X"].detach().float().cpu()
    x_scale = max(float(x.abs().max()), 1e-6) / 127.0
    wq, w_scale = quantize_weight_per_channel(t32["W"].detach().float().cpu())
    device = t32["X"].device
    y_bound = x_scale * 127.0 * float(wq.abs().flatten(1).sum(dim=1).to(torch.float64).max()) * max(w_scale)
    return {
        "X": quantize_symmetric(x, x_scale).to(device), "W": wq.to(device),
        "offset": t32["offset"].float(), "mask": None if t32["mask"] is None else t32["mask"].float(),
        "B": None if t32["B"] is None else t32["B"].float(),
        "x_scale": x_scale, "w_scale": w_scale, "y_scale": max(y_bound / 16.0 / 127.0, 1e-6),
    }
