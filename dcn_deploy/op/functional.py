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

from typing import Sequence

import torch
from torch import Tensor

from dcn_deploy.op.geometry import DeformConvGeometry, check_float_tensors
from dcn_deploy.op.reference import check_reference_memory, deform_conv2d_reference
from dcn_deploy.op.torch_op import deform_conv2d_node


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
    check_float_tensors(input, offset, weight, bias, mask)
    geo = DeformConvGeometry.check(input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups)
    if torch.compiler.is_exporting():
        return deform_conv2d_node(input, offset, weight, bias, mask, geo)
    check_reference_memory(input, geo)
    return deform_conv2d_reference(input, offset, weight, bias, mask, geo)
