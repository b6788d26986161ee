"""The canonical DCNv2 operator: a pure-PyTorch reference.

Semantics are those of ONNX ``DeformConv`` (opset 19/22) and ``torchvision.ops.deform_conv2d``:

=====================  ==============================================================
quantity               definition
=====================  ==============================================================
sampling point         ``y = oy*stride_h - pad_top + i*dil_h + offset[n, g*2K + 2(i*kw+j), oy, ox]``,
                       ``x`` likewise with ``pad_left``, ``dil_w`` and channel ``+1``
offset layout          ``(dy, dx)`` interleaved per tap, taps row-major, offset groups outermost
offset groups          the input channels split into ``offset_groups`` contiguous blocks
boundary               bilinear with zeros outside: the sample is 0 unless
                       ``-1 < y < H`` and ``-1 < x < W``; corners outside the image count 0
mask (DCNv2)           ``mask[n, g*K + i*kw + j, oy, ox]`` multiplies the sample; none = 1 (DCNv1)
output                 ``bias[o] + sum_{c in group(o), i, j} W[o, c, i, j] * sample``
pads                   ``(top, left, bottom, right)`` (ONNX ``pads`` order), may be asymmetric
output size            ``floor((H + top + bottom - (dil_h*(kh-1)+1)) / stride_h) + 1``
=====================  ==============================================================

NaN or infinite offsets fail the inside test, so such samples are 0 and nothing is read
outside the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["deform_conv2d", "DeformConvGeometry", "normalize_pads", "output_size"]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair, got {value}")
    return value  # type: ignore[return-value]


def normalize_pads(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Return pads as ``(top, left, bottom, right)``.

    Accepts an int (all sides), a pair ``(ph, pw)`` (symmetric, PyTorch style) or a
    4-tuple already in ONNX order ``(top, left, bottom, right)``.
    """
    if isinstance(padding, int):
        return (padding,) * 4  # type: ignore[return-value]
    pads = tuple(int(p) for p in padding)
    if len(pads) == 2:
        return (pads[0], pads[1], pads[0], pads[1])
    if len(pads) == 4:
        return pads  # type: ignore[return-value]
    raise ValueError(
        f"deform_conv2d: padding must be an int, (ph, pw) or (top, left, bottom, right), got {pads}"
    )


def output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """One spatial output size; works on ints and on symbolic sizes during export."""
    return (size + pad_begin + pad_end - (dilation * (kernel - 1) + 1)) // stride + 1


@dataclass(frozen=True)
class DeformConvGeometry:
    """Attributes of one DeformConv, validated against the shapes of its inputs."""

    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    offset_groups: int
    kernel: tuple[int, int]
    out_hw: tuple[int, int]

    @staticmethod
    def check(
        input: Tensor,
        offset: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        mask: Tensor | None,
        stride: int | Sequence[int],
        padding: int | Sequence[int],
        dilation: int | Sequence[int],
        groups: int,
        offset_groups: int | None,
        where: str = "deform_conv2d",
    ) -> "DeformConvGeometry":
        """Validate everything once; every message names ``where`` and what mismatches."""
        stride = _pair(stride, "stride")
        dilation = _pair(dilation, "dilation")
        pads = normalize_pads(padding)

        def fail(message: str) -> None:
            raise ValueError(f"{where}: {message}")

        if min(stride) <= 0:
            fail(f"stride must be positive, got {stride}")
        if min(dilation) <= 0:
            fail(f"dilation must be positive, got {dilation}")
        if min(pads) < 0:
            fail(f"pads must be non-negative, got (top, left, bottom, right) = {pads}")
        for name, tensor in (("input", input), ("offset", offset), ("weight", weight)):
            if tensor.dim() != 4:
                fail(f"{name} must be 4-D, got shape {tuple(tensor.shape)}")
        n, c, h, w = input.shape
        m, c_per_group, kh, kw = weight.shape
        if kh <= 0 or kw <= 0:
            fail(f"weight has an empty kernel {kh}x{kw}")
        if groups <= 0:
            fail(f"groups must be positive, got {groups}")
        if c % groups:
            fail(f"input channels {c} are not divisible by groups={groups}")
        if m % groups:
            fail(f"weight has {m} output channels, not divisible by groups={groups}")
        if c_per_group * groups != c:
            fail(
                f"weight has shape {tuple(weight.shape)}: dim 1 must be input channels / groups "
                f"= {c}/{groups} = {c // groups}, got {c_per_group}"
            )
        taps = kh * kw
        if offset_groups is None:
            if offset.shape[1] % (2 * taps):
                fail(
                    f"offset has {offset.shape[1]} channels, not a multiple of 2*kh*kw = {2 * taps} "
                    f"(kernel {kh}x{kw})"
                )
            offset_groups = offset.shape[1] // (2 * taps)
        if offset_groups <= 0:
            fail(f"offset_groups must be positive, got {offset_groups}")
        if c % offset_groups:
            fail(f"input channels {c} are not divisible by offset_groups={offset_groups}")
        if offset.shape[1] != 2 * offset_groups * taps:
            fail(
                f"offset has {offset.shape[1]} channels, expected 2*offset_group*kh*kw = "
                f"{2 * offset_groups * taps} (offset_group={offset_groups}, kernel {kh}x{kw})"
            )
        ho = output_size(h, kh, stride[0], dilation[0], pads[0], pads[2])
        wo = output_size(w, kw, stride[1], dilation[1], pads[1], pads[3])
        if ho < 1 or wo < 1:
            fail(
                f"output would be empty ({ho}x{wo}) for input {h}x{w}, kernel {kh}x{kw}, "
                f"stride {stride}, dilation {dilation}, pads {pads}"
            )
        if offset.shape[0] != n:
            fail(f"offset batch {offset.shape[0]} differs from input batch {n}")
        if tuple(offset.shape[2:]) != (ho, wo):
            fail(f"offset spatial size {tuple(offset.shape[2:])} differs from the output size {(ho, wo)}")
        if mask is not None:
            if mask.dim() != 4:
                fail(f"mask must be 4-D, got shape {tuple(mask.shape)}")
            if mask.shape[1] != offset_groups * taps:
                fail(
                    f"mask has {mask.shape[1]} channels, expected offset_group*kh*kw = "
                    f"{offset_groups * taps} (offset_group={offset_groups}, kernel {kh}x{kw})"
                )
            if mask.shape[0] != n:
                fail(f"mask batch {mask.shape[0]} differs from input batch {n}")
            if tuple(mask.shape[2:]) != (ho, wo):
                fail(f"mask spatial size {tuple(mask.shape[2:])} differs from the output size {(ho, wo)}")
        if bias is not None and tuple(bias.shape) != (m,):
            fail(f"bias has shape {tuple(bias.shape)}, expected ({m},)")
        return DeformConvGeometry(stride, pads, dilation, groups, offset_groups, (kh, kw), (ho, wo))


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


def _sample_columns(input: Tensor, offset: Tensor, mask: Tensor | None, geo: DeformConvGeometry) -> Tensor:
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
    n, m = columns.shape[0], weight.shape[0]
    ho, wo = geo.out_hw
    columns = columns.reshape(n, geo.groups, -1, ho * wo)
    weight_groups = weight.reshape(geo.groups, m // geo.groups, -1)
    return torch.einsum("gmk,ngkl->ngml", weight_groups, columns).reshape(n, m, ho, wo)


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    mask: Tensor | None = None,
    groups: int = 1,
    offset_groups: int | None = None,
) -> Tensor:
    """Modulated (mask given) or plain deformable 2-D convolution, canonical semantics.

    Args:
        input: ``(N, C, H, W)``, any floating dtype (float64 included).
        offset: ``(N, 2*offset_groups*kh*kw, Ho, Wo)``, ``(dy, dx)`` interleaved per tap.
        weight: ``(M, C/groups, kh, kw)``.
        bias: ``(M,)`` or None.
        stride, dilation: int or ``(h, w)``.
        padding: int, ``(ph, pw)`` or ``(top, left, bottom, right)``.
        mask: ``(N, offset_groups*kh*kw, Ho, Wo)`` or None (DCNv1).
        groups: weight groups.
        offset_groups: offset groups; inferred from ``offset`` when None.

    Differentiable in every tensor argument. While ``torch.onnx.export`` traces the
    model, the call is recorded as one ``dcn_deploy::deform_conv2d`` node instead.
    """
    geo = DeformConvGeometry.check(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups)
    if torch.compiler.is_exporting():
        from . import export as _export  # registers the custom op on first use

        return _export.deform_conv2d_node(input, offset, weight, bias, mask, geo)
    return deform_conv2d_reference(input, offset, weight, bias, mask, geo)


def deform_conv2d_reference(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, geo: DeformConvGeometry
) -> Tensor:
    """The reference computation for already validated arguments."""
    m = weight.shape[0]
    out = grouped_convolution(weight, _sample_columns(input, offset, mask, geo), geo)
    if bias is not None:
        out = out + bias.view(1, m, 1, 1)
    return out
