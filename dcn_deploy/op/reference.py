"""The float reference of the canonical op in plain PyTorch: bilinear sampling of every tap into columns,
then one grouped multiply (shared with the INT8 and fake-quant references in ``dcn_deploy.op.int8``)."""
from __future__ import annotations

import os

import torch
from torch import Tensor

from dcn_deploy.op.geometry import DeformConvGeometry


def sampling_grid(kernel, stride, pads, dilation, out_hw, dtype, device) -> tuple[Tensor, Tensor]:
    """Undeformed sampling coordinates of every tap and output position: rows ``(K, Ho, 1)``
    and columns ``(K, 1, Wo)``, taps row-major."""
    kh, kw = kernel
    ho, wo = out_hw
    tap_y = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw) * dilation[0]
    tap_x = torch.arange(kw, device=device, dtype=dtype).repeat(kh) * dilation[1]
    out_y = torch.arange(ho, device=device, dtype=dtype) * stride[0] - pads[0]
    out_x = torch.arange(wo, device=device, dtype=dtype) * stride[1] - pads[1]
    return tap_y.view(-1, 1, 1) + out_y.view(1, -1, 1), tap_x.view(-1, 1, 1) + out_x.view(1, 1, -1)


def sample_columns(input: Tensor, offset: Tensor, mask: Tensor | None, geo: DeformConvGeometry) -> Tensor:
    """Bilinear samples of every input channel at every tap: ``(N, C, kh*kw, Ho*Wo)``."""
    n, c, h, w = input.shape
    kh, kw = geo.kernel
    ho, wo = geo.out_hw
    taps, groups = kh * kw, geo.offset_groups
    dtype, device = input.dtype, input.device

    offset = offset.reshape(n, groups, taps, 2, ho, wo)
    base_y, base_x = sampling_grid(geo.kernel, geo.stride, geo.pads, geo.dilation, (ho, wo), dtype, device)
    y = base_y + offset[:, :, :, 0]  # (N, G, K, Ho, Wo)
    x = base_x + offset[:, :, :, 1]

    # Written so that NaN fails it: a non-finite coordinate never reaches an index.
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    y = torch.where(inside, y, torch.zeros_like(y))
    x = torch.where(inside, x, torch.zeros_like(x))
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    y0, x0 = y0.long(), x0.long()

    weight_mask = inside.to(dtype)
    if mask is not None:
        weight_mask = weight_mask * mask.reshape(n, groups, taps, ho, wo)

    source = input.reshape(n, groups, c // groups, h * w)
    columns = None
    for dy, dx, wy, wx in ((0, 0, 1 - ly, 1 - lx), (0, 1, 1 - ly, lx), (1, 0, ly, 1 - lx), (1, 1, ly, lx)):
        cy, cx = y0 + dy, x0 + dx
        valid = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).reshape(n, groups, 1, taps * ho * wo)
        corner_weight = (wy * wx * valid.to(dtype) * weight_mask).reshape(n, groups, 1, taps * ho * wo)
        gathered = torch.gather(source, 3, index.expand(n, groups, c // groups, taps * ho * wo))
        term = gathered * corner_weight
        columns = term if columns is None else columns + term
    return columns.reshape(n, c, taps, ho * wo)


def grouped_convolution(weight: Tensor, columns: Tensor, geo: DeformConvGeometry) -> Tensor:
    """``(N, M, Ho, Wo)``: the weight ``(M, C/groups, kh, kw)`` applied, group by group, to sampled
    columns ``(N, C, kh*kw, Ho*Wo)``, in the columns' dtype (the multiply of every reference form)."""
    n, c, taps = columns.shape[:3]
    m = weight.shape[0]
    ho, wo = geo.out_hw
    # explicit sizes, no -1: a batch of 0 has 0 elements, from which reshape cannot infer an axis
    columns = columns.reshape(n, geo.groups, (c // geo.groups) * taps, ho * wo)
    weight_groups = weight.reshape(geo.groups, m // geo.groups, (c // geo.groups) * taps)
    return torch.einsum("gmk,ngkl->ngml", weight_groups, columns).reshape(n, m, ho, wo)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX: no check
        return None


def check_reference_memory(input: Tensor, geo: DeformConvGeometry, where: str = "deform_conv2d") -> None:
    """A clean error before allocating when the sampled columns ``(N, C, kh*kw, Ho*Wo)`` (the reference
    holds about three such tensors at once) would not fit in this machine's memory."""
    memory = _physical_memory()
    n, c = input.shape[:2]
    elements = n * c * geo.kernel[0] * geo.kernel[1] * geo.out_hw[0] * geo.out_hw[1]
    needed = 3 * elements * input.element_size()
    if memory is not None and needed > memory:
        raise ValueError(
            f"{where}: the reference would need about {needed / 2**30:.1f} GiB for its sampled columns "
            f"(N*C*kh*kw*Ho*Wo = {elements} elements of {input.dtype}), more than this machine's "
            f"{memory / 2**30:.1f} GiB")


def deform_conv2d_reference(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, geo: DeformConvGeometry
) -> Tensor:
    """The reference computation for already validated arguments."""
    m = weight.shape[0]
    out = grouped_convolution(weight, sample_columns(input, offset, mask, geo), geo)
    if bias is not None:
        out = out + bias.view(1, m, 1, 1)
    return out
