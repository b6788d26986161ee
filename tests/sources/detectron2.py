"""Oracle for detectron2's deformable convolutions (``detectron2/layers/deform_conv.py``) and
the ResNet ``DeformBottleneckBlock`` (``detectron2/modeling/backbone/resnet.py``).

* ``DeformConv(in, out, kernel_size, stride=1, padding=0, dilation=1, groups=1,
  deformable_groups=1, bias=False, norm=None, activation=None)``: DCNv1, ``bias=True`` is
  refused; ``weight`` kaiming-uniform(relu); ``bias`` attribute is ``None``;
  ``forward(x, offset) = activation(norm(deform_conv(x, offset)))``.
* ``ModulatedDeformConv(..., bias=True, norm=None, activation=None)``: ``bias`` zeros
  (``None`` when ``bias=False``); ``forward(x, offset, mask)``.
* ``Conv2d``: detectron2's ``nn.Conv2d`` wrapper with ``norm``/``activation`` kwargs (so a
  conv+BN has keys ``conv1.weight``, ``conv1.norm.weight``, ``conv1.norm.running_mean``...).
* ``DeformBottleneckBlock``: conv1 (1x1+norm) -> relu -> conv2_offset (3x3, 18 or 27 per
  deformable group, padding=dilation, dilation) -> conv2 (Modulated)DeformConv 3x3 with
  norm -> relu -> conv3 (1x1+norm) -> + shortcut (1x1 stride conv+norm when in != out)
  -> relu. In the modulated case the offset conv output is chunked in three, the first two
  concatenated are the offset and the sigmoid of the third the mask.
  Norms: ``"BN"`` (``nn.BatchNorm2d``), ``"FrozenBN"`` (``FrozenBatchNorm2d``), ``""``/``None``
  (no norm) or a callable ``channels -> module``.
* Canonical sampling rule (the real CPU path runs only DCNv1 with one deformable group,
  through torchvision; the oracle computes every case with the CUDA kernels' arithmetic).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ._sampling import deform_conv

__all__ = [
    "Conv2d",
    "DeformBottleneckBlock",
    "DeformConv",
    "FrozenBatchNorm2d",
    "ModulatedDeformConv",
    "get_norm",
]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all stored as buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


def get_norm(norm, out_channels: int):
    if norm is None:
        return None
    if isinstance(norm, str):
        if len(norm) == 0:
            return None
        table: dict[str, Callable[[int], nn.Module]] = {
            "BN": nn.BatchNorm2d,
            "FrozenBN": FrozenBatchNorm2d,
        }
        if norm not in table:
            raise ValueError(f"norm {norm!r} is not provided by this oracle")
        return table[norm](out_channels)
    return norm(out_channels)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with optional ``norm`` and ``activation`` applied after it."""

    def __init__(self, *args, **kwargs):
        norm = kwargs.pop("norm", None)
        activation = kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


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
        norm=None,
        activation=None,
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
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = None
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        x = deform_conv(
            x, offset, self.weight, None, self.stride, self.padding, self.dilation,
            self.groups, self.deformable_groups, mask=None, rule="canonical",
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


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
        norm=None,
        activation=None,
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
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.bias = None
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        x = deform_conv(
            x, offset, self.weight, self.bias, _pair(self.stride), _pair(self.padding), _pair(self.dilation),
            self.groups, self.deformable_groups, mask=mask, rule="canonical",
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _c2_msra_fill(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


class DeformBottleneckBlock(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        num_groups=1,
        norm="BN",
        stride_in_1x1=False,
        dilation=1,
        deform_modulated=False,
        deform_num_groups=1,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.deform_modulated = deform_modulated

        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None

        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)

        self.conv1 = Conv2d(
            in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )

        if deform_modulated:
            deform_conv_op = ModulatedDeformConv
            offset_channels = 27
        else:
            deform_conv_op = DeformConv
            offset_channels = 18

        self.conv2_offset = Conv2d(
            bottleneck_channels,
            offset_channels * deform_num_groups,
            kernel_size=3,
            stride=stride_3x3,
            padding=1 * dilation,
            dilation=dilation,
        )
        self.conv2 = deform_conv_op(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=1 * dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
        )

        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False,
            norm=get_norm(norm, out_channels),
        )

        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                _c2_msra_fill(layer)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        if self.deform_modulated:
            offset_mask = self.conv2_offset(out)
            offset_x, offset_y, mask = torch.chunk(offset_mask, 3, dim=1)
            offset = torch.cat((offset_x, offset_y), dim=1)
            out = self.conv2(out, offset, mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = F.relu(out)
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(out + shortcut)
