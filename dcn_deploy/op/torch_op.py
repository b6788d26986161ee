"""The reference op as one PyTorch custom op, ``torch.ops.dcn_deploy.deform_conv2d``.

While ``torch.onnx.export`` traces a model, :func:`dcn_deploy.deform_conv2d` records this op (through
:func:`deform_conv2d_node`) instead of the reference's many small ops, so the exporter sees one node per
layer and translates it into one ``DcnDeformConv`` or ``DeformConv`` node (``dcn_deploy.onnx.export``).
Its attributes are named and ordered as ONNX's."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from dcn_deploy.op.geometry import DeformConvGeometry, output_size
from dcn_deploy.op.reference import deform_conv2d_reference


@torch.library.custom_op("dcn_deploy::deform_conv2d", mutates_args=())
def _deform_conv2d_op(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    kernel_shape: Sequence[int],
    group: int,
    offset_group: int,
) -> Tensor:
    geo = DeformConvGeometry(
        tuple(strides), tuple(pads), tuple(dilations), group, offset_group, tuple(kernel_shape), tuple(offset.shape[2:])
    )
    return deform_conv2d_reference(input, offset, weight, bias, mask, geo)


@_deform_conv2d_op.register_fake
def _(input, offset, weight, bias, mask, strides, pads, dilations, kernel_shape, group, offset_group):
    n, _, h, w = input.shape
    kh, kw = kernel_shape
    ho = output_size(h, kh, strides[0], dilations[0], pads[0], pads[2])
    wo = output_size(w, kw, strides[1], dilations[1], pads[1], pads[3])
    return input.new_empty((n, weight.shape[0], ho, wo))


def deform_conv2d_node(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, geo: DeformConvGeometry
) -> Tensor:
    """Record one DeformConv node (used by ``deform_conv2d`` while exporting)."""
    return _deform_conv2d_op(
        input,
        offset,
        weight,
        bias,
        mask,
        list(geo.stride),
        list(geo.pads),
        list(geo.dilation),
        list(geo.kernel),
        geo.groups,
        geo.offset_groups,
    )
