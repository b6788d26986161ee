"""Oracle for mmdetection 1.x ``mmdet/ops/dcn/deform_conv.py`` (before the move to mmcv).

Same arithmetic as mmcv (canonical rule; Pack classes chunk/cat/sigmoid), with the 1.x
names: the keyword is ``deformable_groups`` and the attribute ``self.deformable_groups``.
``ModulatedDeformConv`` keeps ``stride``/``padding``/``dilation`` as given (the 1.x CUDA
wrapper takes scalars); ``DeformConv`` stores pairs and refuses ``bias=True``.
Weights initialise uniform(+-1/sqrt(in*kh*kw)); biases and offset convs start at zero.
Submodule ``conv_offset`` (``_version = 2``; the legacy sibling-key hook is not modelled,
see ``mmcv.py``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _single, _pair

from ._sampling import deform_conv

__all__ = ["DeformConv", "DeformConvPack", "ModulatedDeformConv", "ModulatedDeformConvPack"]

_IM2COL_STEP = 64


def _uniform_init(weight: Tensor, in_channels: int, kernel_size) -> None:
    bound = 1.0 / math.sqrt(in_channels * kernel_size[0] * kernel_size[1])
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class DeformConv(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        bias=False,
    ):
        super().__init__()
        assert not bias
        assert in_channels % groups == 0, f"in_channels {in_channels} cannot be divisible by groups {groups}"
        assert out_channels % groups == 0, f"out_channels {out_channels} cannot be divisible by groups {groups}"
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_init(self.weight, self.in_channels, self.kernel_size)

    def _dcn(self, x: Tensor, offset: Tensor) -> Tensor:
        step = min(_IM2COL_STEP, x.shape[0])
        assert x.shape[0] % step == 0, "im2col step must divide batchsize"
        return deform_conv(
            x, offset, self.weight, None, self.stride, self.padding, self.dilation,
            self.groups, self.deformable_groups, mask=None, rule="canonical",
        )

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        pad_h = max(self.kernel_size[0] - x.shape[2], 0)
        pad_w = max(self.kernel_size[1] - x.shape[3], 0)
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
            offset = nn.functional.pad(offset, (0, pad_w, 0, pad_h))
        out = self._dcn(x, offset)
        if pad_h or pad_w:
            out = out[:, :, : out.shape[2] - pad_h, : out.shape[3] - pad_w]
        return out


class DeformConvPack(DeformConv):
    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = nn.Conv2d(
            self.in_channels,
            self.deformable_groups * 2 * self.kernel_size[0] * self.kernel_size[1],
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.init_offset()

    def init_offset(self) -> None:
        with torch.no_grad():
            self.conv_offset.weight.zero_()
            self.conv_offset.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self._dcn(x, self.conv_offset(x))



class ModulatedDeformConv(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        deformable_groups=1,
        bias=True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.with_bias = bias
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_init(self.weight, self.in_channels, self.kernel_size)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def _dcn(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return deform_conv(
            x, offset, self.weight, self.bias, _pair(self.stride), _pair(self.padding), _pair(self.dilation),
            self.groups, self.deformable_groups, mask=mask, rule="canonical",
        )

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return self._dcn(x, offset, mask)


class ModulatedDeformConvPack(ModulatedDeformConv):
    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = nn.Conv2d(
            self.in_channels,
            self.deformable_groups * 3 * self.kernel_size[0] * self.kernel_size[1],
            kernel_size=self.kernel_size,
            stride=_pair(self.stride),
            padding=_pair(self.padding),
            dilation=self.dilation,
            bias=True,
        )
        self.init_offset()

    def init_offset(self) -> None:
        with torch.no_grad():
            self.conv_offset.weight.zero_()
            self.conv_offset.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        raw = self.conv_offset(x)
        first, second, logits = torch.chunk(raw, 3, dim=1)
        offset = torch.cat((first, second), dim=1)
        return self._dcn(x, offset, torch.sigmoid(logits))

