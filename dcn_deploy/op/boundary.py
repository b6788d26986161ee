"""Exact emulation of non-canonical sampling rules by remapping offsets (and the mask).

Some DCN implementations sample differently from the canonical rule (zeros outside,
bilinear fade in the one-pixel band around the image). Their rules differ from canonical
only through the sampling coordinate, per axis, so a data-independent transform of the
coordinate ``r`` (and a mask factor) in front of the canonical op reproduces them exactly.
It depends only on ``r`` and the input size ``L``, and exports as ordinary ONNX ops.

==============  ==========================================  ==================================
rule            source behaviour, per axis                  transform before the canonical op
==============  ==========================================  ==================================
``zeros``       canonical: 0 unless -1 < r < L, fade band   none
``mxnet_v1``    MSRA/MXNet DCNv1 (and ChunhuanLin, old      r in (-1, 0) or (L-1, L) -> floor(r)
                4uiiurz1): 0 unless 0 <= r < L; r in        (a sample in (-1, 0) becomes 0, one
                [L-1, L) takes row L-1 at full weight       in (L-1, L) row L-1 at weight 1)
``clamp_twice`` 4uiiurz1 with padding 0: r clamped to       r -> clamp(r, 0, L-1); mask x2 on
                [0, L-1], both corners clamped too, so      each axis where r < 0 or r >= L-1
                outside the range the border counts twice
==============  ==========================================  ==================================
"""
from __future__ import annotations

import torch
from torch import Tensor

from dcn_deploy.op.reference import sampling_grid

BOUNDARY_RULES = ("zeros", "mxnet_v1", "clamp_twice")


def _mxnet_axis(r: Tensor, length) -> Tensor:
    in_band = ((r > -1) & (r < 0)) | ((r > length - 1) & (r < length))
    return torch.where(in_band, torch.floor(r), r)


def _clamp_axis(r: Tensor, length) -> tuple[Tensor, Tensor]:
    doubled = (r < 0) | (r >= length - 1)
    factor = torch.where(doubled, torch.full_like(r, 2.0), torch.ones_like(r))
    return r.clamp(min=0).clamp(max=length - 1), factor


def remap_for_boundary(
    offset: Tensor,
    mask: Tensor | None,
    input_hw: tuple,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilation: tuple[int, int],
    offset_groups: int,
    rule: str,
) -> tuple[Tensor, Tensor | None]:
    """Offsets and mask that make the canonical op sample as ``rule`` does."""
    if rule == "zeros":
        return offset, mask
    if rule not in BOUNDARY_RULES:
        raise ValueError(f"unknown boundary rule '{rule}', expected one of {BOUNDARY_RULES}")
    n, _, ho, wo = offset.shape
    taps = kernel[0] * kernel[1]
    height, width = input_hw
    base_y, base_x = sampling_grid(kernel, stride, pads, dilation, (ho, wo), offset.dtype, offset.device)
    pairs = offset.reshape(n, offset_groups, taps, 2, ho, wo)
    y = base_y + pairs[:, :, :, 0]
    x = base_x + pairs[:, :, :, 1]
    if rule == "mxnet_v1":
        y, x = _mxnet_axis(y, height), _mxnet_axis(x, width)
    else:
        (y, fy), (x, fx) = _clamp_axis(y, height), _clamp_axis(x, width)
        factor = (fy * fx).reshape(n, offset_groups * taps, ho, wo)
        mask = factor if mask is None else mask * factor
    remapped = torch.stack((y - base_y, x - base_x), dim=3).reshape(offset.shape)
    return remapped, mask
