"""Oracle for Paddle's ``paddle.vision.ops.DeformConv2D`` and PaddleDetection's
``DeformableConvV2`` (``ppdet/modeling/layers.py``), as torch modules with Paddle's
parameter names.

* ``DeformConv2D(in, out, kernel_size, stride=1, padding=0, dilation=1,
  deformable_groups=1, groups=1, weight_attr=None, bias_attr=None)`` (note: deformable
  groups come before groups): ``weight`` ``[out, in/groups, kh, kw]`` initialised
  Normal(0, sqrt(2/(kh*kw*in))), ``bias`` ``[out]`` zeros unless ``bias_attr is False``.
  ``forward(x, offset, mask=None)``; canonical rule; symmetric padding.
* ``DeformableConvV2(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1,
  weight_attr=None, bias_attr=None, lr_scale=1, regularizer=None, skip_quant=False,
  dcn_bias_regularizer=None, dcn_bias_lr_scale=2.)``:
  ``conv_offset = Conv2D(in, 3*k*k, k, stride=stride, padding=(k-1)//2)`` (undilated,
  zero-initialised weight and bias) and ``conv_dcn = DeformConv2D(in, out, k,
  stride=stride, padding=(k-1)//2*dilation, dilation=dilation, groups=groups,
  bias_attr=<zeros> if bias_attr else False)``. The ``padding`` argument is ignored.
  Forward: split the offset conv output into ``[2*k*k, k*k]`` channels (offset is used as
  is, interleaved per tap), sigmoid the mask, ``conv_dcn(x, offset, mask)``.
* ``paddle_state_dict(module)`` gives the ``{name: numpy array}`` a Paddle checkpoint of the
  same layer would hold (BatchNorm statistics renamed ``_mean``/``_variance``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ._sampling import as_pair, deform_conv

__all__ = ["Conv2D", "DeformConv2D", "DeformableConvV2", "paddle_state_dict"]


def _paddle_normal_(weight: Tensor, in_channels: int, kernel_size) -> None:
    std = math.sqrt(2.0 / (kernel_size[0] * kernel_size[1] * in_channels))
    with torch.no_grad():
        weight.normal_(0.0, std)


class Conv2D(nn.Conv2d):
    """Stand-in for ``paddle.nn.Conv2D`` (NCHW only): parameters ``weight`` and ``bias``."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        padding_mode="zeros",
        weight_attr=None,
        bias_attr=None,
        data_format="NCHW",
    ):
        if data_format != "NCHW":
            raise NotImplementedError("only NCHW is modelled")
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
            groups=groups, bias=bias_attr is not False, padding_mode=padding_mode,
        )
        _paddle_normal_(self.weight, in_channels, self.kernel_size)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()


class DeformConv2D(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        deformable_groups=1,
        groups=1,
        weight_attr=None,
        bias_attr=None,
    ):
        super().__init__()
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups.")
        self._in_channels = in_channels
        self._out_channels = out_channels
        self._kernel_size = list(as_pair(kernel_size))
        self._stride = list(as_pair(stride))
        self._padding = list(as_pair(padding))
        self._dilation = list(as_pair(dilation))
        self._deformable_groups = deformable_groups
        self._groups = groups
        self._weight_attr = weight_attr
        self._bias_attr = bias_attr
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self._kernel_size))
        _paddle_normal_(self.weight, in_channels, self._kernel_size)
        if bias_attr is False:
            self.bias = None
        else:
            self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv(
            x, offset, self.weight, self.bias, self._stride, self._padding, self._dilation,
            self._groups, self._deformable_groups, mask=mask, rule="canonical",
        )


class DeformableConvV2(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        weight_attr=None,
        bias_attr=None,
        lr_scale=1,
        regularizer=None,
        skip_quant=False,
        dcn_bias_regularizer=None,
        dcn_bias_lr_scale=2.0,
    ):
        super().__init__()
        self.offset_channel = 2 * kernel_size**2
        self.mask_channel = kernel_size**2
        self.conv_offset = Conv2D(
            in_channels, 3 * kernel_size**2, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
        )
        with torch.no_grad():  # ParamAttr(initializer=Constant(0.)) for weight and bias
            self.conv_offset.weight.zero_()
            self.conv_offset.bias.zero_()
        if skip_quant:
            self.conv_offset.skip_quant = True
        dcn_bias_attr = "zeros" if bias_attr else False
        self.conv_dcn = DeformConv2D(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2 * dilation,
            dilation=dilation,
            groups=groups,
            weight_attr=weight_attr,
            bias_attr=dcn_bias_attr,
        )

    def forward(self, x: Tensor) -> Tensor:
        offset_mask = self.conv_offset(x)
        offset, mask = torch.split(offset_mask, [self.offset_channel, self.mask_channel], dim=1)
        return self.conv_dcn(x, offset, mask=torch.sigmoid(mask))


_BN_RENAMES = {"running_mean": "_mean", "running_var": "_variance"}


def paddle_state_dict(module: nn.Module) -> dict[str, np.ndarray]:
    """The arrays a Paddle ``state_dict`` of the same layer holds, under Paddle's names."""
    out: dict[str, np.ndarray] = {}
    for key, value in module.state_dict().items():
        head, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        leaf = _BN_RENAMES.get(leaf, leaf)
        name = f"{head}.{leaf}" if head else leaf
        out[name] = value.detach().cpu().numpy().copy()
    return out
