"""A small, independent deformable im2col + grouped GEMM, used by the kernel-style oracles.

Written for the tests only; it deliberately does not import anything from ``dcn_deploy``.

Two boundary rules are available:

``"canonical"``
    The rule of the mmcv / CharlesShang / chengdazhi / detectron2 / Paddle / MXNet-DCNv2
    kernels: a sample at ``(h, w)`` is 0 unless ``-1 < h < H`` and ``-1 < w < W``; inside,
    the four bilinear corners are read from the image, a corner outside the image counting 0.

``"mxnet_v1"``
    The rule of the MSRA Deformable-ConvNets DCNv1 ``deformable_im2col``: a sample is 0
    unless ``0 <= h < H`` and ``0 <= w < W``; inside, a coordinate whose floor reaches the
    last row (column) snaps onto that row (column), so the four corners are always in range.

Offsets are ``(dy, dx)`` interleaved per tap, taps row-major, deformable groups outermost;
masks are ``(group, tap)``; input channels are split into deformable groups contiguously.
Padding is symmetric ``(pad_h, pad_w)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["RULES", "as_pair", "conv_out_size", "sample_columns", "deform_conv"]

RULES = ("canonical", "mxnet_v1")


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return (int(value[0]), int(value[0]))
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, got {value!r}")
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def conv_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _corners_canonical(hs: Tensor, ws: Tensor, height: int, width: int):
    """Yield (row, col, weight, valid) for the four corners, canonical rule."""
    inside = (hs > -1) & (ws > -1) & (hs < height) & (ws < width)
    zero = torch.zeros((), dtype=hs.dtype, device=hs.device)
    hs = torch.where(inside, hs, zero)  # keeps NaN / inf away from the index maths
    ws = torch.where(inside, ws, zero)
    h_low_f = torch.floor(hs)
    w_low_f = torch.floor(ws)
    lh = hs - h_low_f
    lw = ws - w_low_f
    hh = 1 - lh
    hw = 1 - lw
    h_low = h_low_f.long()
    w_low = w_low_f.long()
    h_high = h_low + 1
    w_high = w_low + 1
    return inside, [
        (h_low, w_low, hh * hw, (h_low >= 0) & (w_low >= 0)),
        (h_low, w_high, hh * lw, (h_low >= 0) & (w_high <= width - 1)),
        (h_high, w_low, lh * hw, (h_high <= height - 1) & (w_low >= 0)),
        (h_high, w_high, lh * lw, (h_high <= height - 1) & (w_high <= width - 1)),
    ]


def _snap(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """MXNet DCNv1 per-axis handling: returns (low, high, fraction)."""
    low_f = torch.floor(coord)
    at_end = low_f >= size - 1
    last = torch.full((), float(size - 1), dtype=coord.dtype, device=coord.device)
    low_f = torch.where(at_end, last, low_f)
    coord = torch.where(at_end, last, coord)
    low = low_f.long()
    high = torch.where(at_end, low, low + 1)
    return low, high, coord - low_f


def _corners_mxnet_v1(hs: Tensor, ws: Tensor, height: int, width: int):
    inside = (hs >= 0) & (ws >= 0) & (hs < height) & (ws < width)
    zero = torch.zeros((), dtype=hs.dtype, device=hs.device)
    hs = torch.where(inside, hs, zero)
    ws = torch.where(inside, ws, zero)
    h_low, h_high, lh = _snap(hs, height)
    w_low, w_high, lw = _snap(ws, width)
    hh = 1 - lh
    hw = 1 - lw
    always = torch.ones_like(inside)
    return inside, [
        (h_low, w_low, hh * hw, always),
        (h_low, w_high, hh * lw, always),
        (h_high, w_low, lh * hw, always),
        (h_high, w_high, lh * lw, always),
    ]


def sample_columns(
    x: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    deform_groups: int = 1,
    rule: str = "canonical",
) -> Tensor:
    """Deformed samples of every input channel at every tap: ``(N, C, kh*kw, Ho, Wo)``."""
    if rule not in RULES:
        raise ValueError(f"unknown boundary rule {rule!r}; expected one of {RULES}")
    if x.dim() != 4:
        raise ValueError(f"input must be 4-D, got {tuple(x.shape)}")
    n, c, height, width = x.shape
    kh, kw = as_pair(kernel_size)
    sh, sw = as_pair(stride)
    ph, pw = as_pair(padding)
    dh, dw = as_pair(dilation)
    taps = kh * kw
    groups = int(deform_groups)
    if groups < 1 or c % groups:
        raise ValueError(f"{c} input channels cannot be split into {groups} deformable groups")
    ho = conv_out_size(height, kh, sh, ph, dh)
    wo = conv_out_size(width, kw, sw, pw, dw)
    if ho < 1 or wo < 1:
        raise ValueError(f"empty output {ho}x{wo} for input {height}x{width}")
    if tuple(offset.shape) != (n, 2 * groups * taps, ho, wo):
        raise ValueError(
            f"offset has shape {tuple(offset.shape)}, expected {(n, 2 * groups * taps, ho, wo)}"
        )
    if mask is not None and tuple(mask.shape) != (n, groups * taps, ho, wo):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {(n, groups * taps, ho, wo)}")

    dtype, device = x.dtype, x.device
    offset = offset.to(dtype).reshape(n, groups, taps, 2, ho, wo)
    tap_row = torch.arange(kh, device=device).repeat_interleave(kw) * dh  # (K,)
    tap_col = torch.arange(kw, device=device).repeat(kh) * dw
    out_row = torch.arange(ho, device=device) * sh - ph
    out_col = torch.arange(wo, device=device) * sw - pw
    grid_h = (tap_row.view(taps, 1, 1) + out_row.view(1, ho, 1)).to(dtype)  # (K, Ho, 1)
    grid_w = (tap_col.view(taps, 1, 1) + out_col.view(1, 1, wo)).to(dtype)  # (K, 1, Wo)
    hs = grid_h + offset[:, :, :, 0]  # (N, G, K, Ho, Wo)
    ws = grid_w + offset[:, :, :, 1]

    corner_fn = _corners_canonical if rule == "canonical" else _corners_mxnet_v1
    inside, corners = corner_fn(hs, ws, height, width)

    per_group = c // groups
    length = taps * ho * wo
    planes = x.reshape(n, groups, per_group, height * width)
    zero = torch.zeros((), dtype=dtype, device=device)
    acc = None
    for row, col, weight, valid in corners:
        flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).reshape(n, groups, 1, length)
        picked = torch.gather(planes, 3, flat.expand(n, groups, per_group, length))
        keep = (valid & inside).reshape(n, groups, 1, length)
        term = torch.where(keep, picked * weight.reshape(n, groups, 1, length), zero)
        acc = term if acc is None else acc + term
    if mask is not None:
        acc = acc * mask.to(dtype).reshape(n, groups, 1, length)
    return acc.reshape(n, c, taps, ho, wo)


def deform_conv(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    deform_groups: int | None = None,
    mask: Tensor | None = None,
    rule: str = "canonical",
) -> Tensor:
    """Deformable convolution (modulated when ``mask`` is given) with the chosen boundary rule."""
    n, c = x.shape[:2]
    m, c_per_group, kh, kw = weight.shape
    taps = kh * kw
    if groups < 1 or c % groups or m % groups or c_per_group * groups != c:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit {c} input channels in {groups} groups")
    if deform_groups is None:
        if offset.shape[1] % (2 * taps):
            raise ValueError(f"offset channels {offset.shape[1]} not a multiple of {2 * taps}")
        deform_groups = offset.shape[1] // (2 * taps)
    cols = sample_columns(x, offset, mask, (kh, kw), stride, padding, dilation, deform_groups, rule)
    ho, wo = cols.shape[-2:]
    cols = cols.reshape(n, groups, c_per_group * taps, ho * wo)
    w = weight.to(x.dtype).reshape(groups, m // groups, c_per_group * taps)
    out = torch.einsum("gok,ngkl->ngol", w, cols).reshape(n, m, ho, wo)
    if bias is not None:
        out = out + bias.to(x.dtype).view(1, m, 1, 1)
    return out
