"""Oracle for chengdazhi/Deformable-Convolution-V2-PyTorch (``modules/modulated_deform_conv.py``).

* ``ModulatedDeformConv(in, out, kernel_size, stride, padding, dilation=1, groups=1,
  deformable_groups=1, im2col_step=64, bias=True)``: ``weight`` ``(out, in/groups, kh, kw)``
  kaiming-uniform(a=sqrt(5)); ``bias`` is ALWAYS an ``nn.Parameter`` initialised
  uniform(+-1/sqrt(fan_in)). With ``bias=False`` it is only frozen
  (``requires_grad=False``) -- it is still added in forward.
* ``ModulatedDeformConvPack(..., lr_mult=0.1)``: adds ``conv_offset_mask =
  nn.Conv2d(in, dg*3*kh*kw, kernel_size, stride, padding, bias=True)`` (no dilation),
  zero-initialised, with ``conv_offset_mask.lr_mult = lr_mult``. Forward: chunk in three,
  cat the first two as offset, sigmoid of the third as mask; canonical rule.
* The CUDA wrapper requires the batch to be divisible by ``min(batch, im2col_step)``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import init
from torch.nn.modules.utils import _pair

from ._sampling import deform_conv

__all__ = ["ModulatedDeformConv", "ModulatedDeformConvPack"]


class ModulatedDeformConv(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation=1,
        groups=1,
        deformable_groups=1,
        im2col_step=64,
        bias=True,
    ):
        super().__init__()
        if in_channels % groups != 0:
            raise ValueError(f"in_channels {in_channels} must be divisible by groups {groups}")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels {out_channels} must be divisible by groups {groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.im2col_step = im2col_step
        self.use_bias = bias
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()
        if not self.use_bias:
            self.bias.requires_grad = False

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        init.uniform_(self.bias, -bound, bound)

    def _dcn(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        step = min(x.shape[0], self.im2col_step)
        assert x.shape[0] % step == 0, f"batch({x.shape[0]}) must divide im2col_step({step})"
        return deform_conv(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation,
            self.groups, self.deformable_groups, mask=mask, rule="canonical",
        )

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        taps = self.kernel_size[0] * self.kernel_size[1]
        assert 2 * self.deformable_groups * taps == offset.shape[1]
        assert self.deformable_groups * taps == mask.shape[1]
        return self._dcn(input, offset, mask)


class ModulatedDeformConvPack(ModulatedDeformConv):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation=1,
        groups=1,
        deformable_groups=1,
        im2col_step=64,
        bias=True,
        lr_mult=0.1,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            deformable_groups, im2col_step, bias,
        )
        channels = self.deformable_groups * 3 * self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset_mask = nn.Conv2d(
            self.in_channels, channels, kernel_size=self.kernel_size, stride=self.stride,
            padding=self.padding, bias=True,
        )
        self.conv_offset_mask.lr_mult = lr_mult
        self.init_offset()

    def init_offset(self) -> None:
        with torch.no_grad():
            self.conv_offset_mask.weight.zero_()
            self.conv_offset_mask.bias.zero_()

    def forward(self, input: Tensor) -> Tensor:  # type: ignore[override]
        raw = self.conv_offset_mask(input)
        first, second, logits = torch.chunk(raw, 3, dim=1)
        offset = torch.cat((first, second), dim=1)
        return self._dcn(input, offset, torch.sigmoid(logits))
