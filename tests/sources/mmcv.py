"""Oracle for mmcv's deformable convolutions (``mmcv.ops``).

Facts reproduced (mmcv 1.x / 2.x ``deform_conv.py`` and ``modulated_deform_conv.py``):

* ``ModulatedDeformConv2d``: ``weight`` ``(out, in/groups, kh, kw)`` initialised
  uniform(+-1/sqrt(in*kh*kw)), optional ``bias`` (zeros); ``forward(x, offset, mask)``.
* ``ModulatedDeformConv2dPack``: adds ``conv_offset = nn.Conv2d(in, dg*3*kh*kw, kernel,
  stride, padding, dilation, bias=True)`` (zero-initialised). ``forward``: the offset conv
  output is chunked in three along channels, the first two thirds concatenated are the
  offset, the last third through a sigmoid is the mask.
* ``DeformConv2d`` (DCNv1): no bias (``bias=True`` is refused), ``weight`` kaiming-uniform;
  ``forward(x, offset)`` zero-pads an input smaller than the kernel on the bottom/right
  (and the offset likewise) and crops the output back.
* ``DeformConv2dPack``: ``conv_offset`` with ``dg*2*kh*kw`` channels; plain forward.
* Sampling is the "canonical" rule (``h > -1 && h < H`` etc.).
* The ``deformable_groups`` keyword is accepted as a deprecated alias of ``deform_groups``.
* The Pack classes carry ``_version = 2``. Their legacy-checkpoint hook (renaming a sibling
  ``<name>_offset.*`` key to ``<name>.conv_offset.*``) is not modelled: current PyTorch hands
  a child module only the keys under its own prefix, so the hook never sees such keys.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _single, _pair

from ._sampling import deform_conv

__all__ = ["DeformConv2d", "DeformConv2dPack", "ModulatedDeformConv2d", "ModulatedDeformConv2dPack"]


def _accept_deformable_groups(init):
    """mmcv's ``deprecated_api_warning({'deformable_groups': 'deform_groups'})``."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "deformable_groups" in kwargs:
            if "deform_groups" in kwargs:
                raise AssertionError("both deformable_groups and deform_groups were given")
            kwargs["deform_groups"] = kwargs.pop("deformable_groups")
        return init(self, *args, **kwargs)

    return wrapper


def _check_im2col_step(batch: int, im2col_step: int) -> None:
    step = min(im2col_step, batch)
    assert batch % step == 0, "batch size must be divisible by im2col_step"


class ModulatedDeformConv2d(nn.Module):
    @_accept_deformable_groups
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        deform_groups: int = 1,
        bias=True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.init_weights()

    def init_weights(self) -> None:
        fan = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.zero_()

    def _dcn(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return deform_conv(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation,
            self.groups, self.deform_groups, mask=mask, rule="canonical",
        )

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return self._dcn(x, offset, mask)


class ModulatedDeformConv2dPack(ModulatedDeformConv2d):
    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = nn.Conv2d(
            self.in_channels,
            self.deform_groups * 3 * self.kernel_size[0] * self.kernel_size[1],
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        if hasattr(self, "conv_offset"):
            with torch.no_grad():
                self.conv_offset.weight.zero_()
                self.conv_offset.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        raw = self.conv_offset(x)
        first, second, logits = torch.chunk(raw, 3, dim=1)
        offset = torch.cat((first, second), dim=1)
        return self._dcn(x, offset, torch.sigmoid(logits))



class DeformConv2d(nn.Module):
    @_accept_deformable_groups
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = False,
        im2col_step: int = 32,
    ):
        super().__init__()
        assert not bias, f"bias={bias} is not supported in DeformConv2d."
        assert in_channels % groups == 0, f"in_channels {in_channels} cannot be divisible by groups {groups}"
        assert out_channels % groups == 0, f"out_channels {out_channels} cannot be divisible by groups {groups}"
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.im2col_step = im2col_step
        self.transposed = False
        self.output_padding = _single(0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def _dcn(self, x: Tensor, offset: Tensor) -> Tensor:
        _check_im2col_step(x.shape[0], self.im2col_step)
        return deform_conv(
            x, offset, self.weight, None, self.stride, self.padding, self.dilation,
            self.groups, self.deform_groups, mask=None, rule="canonical",
        )

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        # An input smaller than the kernel is zero-padded bottom/right, then cropped back.
        pad_h = max(self.kernel_size[0] - x.shape[2], 0)
        pad_w = max(self.kernel_size[1] - x.shape[3], 0)
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
            offset = nn.functional.pad(offset, (0, pad_w, 0, pad_h))
        out = self._dcn(x, offset)
        if pad_h or pad_w:
            out = out[:, :, : out.shape[2] - pad_h, : out.shape[3] - pad_w]
        return out


class DeformConv2dPack(DeformConv2d):
    _version = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv_offset = nn.Conv2d(
            self.in_channels,
            self.deform_groups * 2 * self.kernel_size[0] * self.kernel_size[1],
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

