"""Structural stand-ins for InternImage's DCNv3 (``ops_dcnv3/modules/dcnv3.py``) and OpenGVLab's
DCNv4 (``DCNv4_op/DCNv4/modules/dcnv4.py``).

Both are channels-last, multi-group, softmax/linear-mask "deformable attention"-style
operators with linear projections, not a DCNv2 layer; converters are expected to reject
them. Only the constructor, submodules and parameter names are modelled; ``forward``
raises ``NotImplementedError``.

``DCNv3_pytorch(channels=64, kernel_size=3, dw_kernel_size=None, stride=1, pad=1,
dilation=1, group=4, offset_scale=1.0, act_layer='GELU', norm_layer='LN',
center_feature_scale=False, remove_center=False)``:
``dw_conv = Sequential(Conv2d(C, C, dw_k, padding=(dw_k-1)//2, groups=C),
Sequential(to_channels_last(), LayerNorm(C, eps=1e-6)), GELU())``,
``offset = Linear(C, group*(k*k - remove_center)*2)``, ``mask = Linear(C, group*(k*k -
remove_center))``, ``input_proj = Linear(C, C)``, ``output_proj = Linear(C, C)`` (and
``center_feature_scale_proj_weight/bias`` when asked).

``DCNv4(channels=64, kernel_size=3, stride=1, pad=1, dilation=1, group=4,
offset_scale=1.0, dw_kernel_size=None, center_feature_scale=False, remove_center=False,
output_bias=True, without_pointwise=False, **kwargs)``: ``offset_mask_dw`` (depthwise conv,
only with ``dw_kernel_size``), ``offset_mask = Linear(C, ceil(3*K/8)*8)`` with ``K =
group*(k*k - remove_center)``, ``value_proj``/``output_proj = Linear(C, C)`` unless
``without_pointwise``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DCNv3", "DCNv3_pytorch", "DCNv4", "to_channels_first", "to_channels_last"]


class to_channels_first(nn.Module):  # noqa: N801 - the original's name
    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)


class to_channels_last(nn.Module):  # noqa: N801 - the original's name
    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


def _build_norm_layer(dim: int, norm_layer: str, in_format: str, out_format: str, eps: float = 1e-6) -> nn.Module:
    layers: list[nn.Module] = []
    if norm_layer == "BN":
        if in_format == "channels_last":
            layers.append(to_channels_first())
        layers.append(nn.BatchNorm2d(dim))
        if out_format == "channels_last":
            layers.append(to_channels_last())
    elif norm_layer == "LN":
        if in_format == "channels_first":
            layers.append(to_channels_last())
        layers.append(nn.LayerNorm(dim, eps=eps))
        if out_format == "channels_first":
            layers.append(to_channels_first())
    else:
        raise NotImplementedError(f"build_norm_layer does not support {norm_layer}")
    return nn.Sequential(*layers)


def _build_act_layer(act_layer: str) -> nn.Module:
    table = {"ReLU": nn.ReLU, "SiLU": nn.SiLU, "GELU": nn.GELU}
    if act_layer not in table:
        raise NotImplementedError(f"build_act_layer does not support {act_layer}")
    return table[act_layer]()


class DCNv3_pytorch(nn.Module):  # noqa: N801 - the original's name
    def __init__(
        self,
        channels=64,
        kernel_size=3,
        dw_kernel_size=None,
        stride=1,
        pad=1,
        dilation=1,
        group=4,
        offset_scale=1.0,
        act_layer="GELU",
        norm_layer="LN",
        center_feature_scale=False,
        remove_center=False,
    ):
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels must be divisible by group, but got {channels} and {group}")
        dw_kernel_size = dw_kernel_size if dw_kernel_size is not None else kernel_size
        self.offset_scale = offset_scale
        self.channels = channels
        self.kernel_size = kernel_size
        self.dw_kernel_size = dw_kernel_size
        self.stride = stride
        self.dilation = dilation
        self.pad = pad
        self.group = group
        self.group_channels = channels // group
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        points = kernel_size * kernel_size - self.remove_center

        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=dw_kernel_size, stride=1,
                      padding=(dw_kernel_size - 1) // 2, groups=channels),
            _build_norm_layer(channels, norm_layer, "channels_first", "channels_last"),
            _build_act_layer(act_layer),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        self._reset_parameters()
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros((group, channels)))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))

    def _reset_parameters(self) -> None:
        for layer in (self.offset, self.mask):
            nn.init.constant_(layer.weight, 0.0)
            nn.init.constant_(layer.bias, 0.0)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, input: Tensor) -> Tensor:
        raise NotImplementedError("DCNv3 is modelled structurally only (converters must reject it)")


class DCNv3(DCNv3_pytorch):
    """The CUDA-backed ``DCNv3`` module: same parameters as ``DCNv3_pytorch``."""


class DCNv4(nn.Module):
    def __init__(
        self,
        channels=64,
        kernel_size=3,
        stride=1,
        pad=1,
        dilation=1,
        group=4,
        offset_scale=1.0,
        dw_kernel_size=None,
        center_feature_scale=False,
        remove_center=False,
        output_bias=True,
        without_pointwise=False,
        **kwargs,
    ):
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels must be divisible by group, but got {channels} and {group}")
        self.offset_scale = offset_scale
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.pad = pad
        self.group = group
        self.group_channels = channels // group
        self.dw_kernel_size = dw_kernel_size
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        self.without_pointwise = without_pointwise
        self.K = group * (kernel_size * kernel_size - self.remove_center)
        if dw_kernel_size is not None:
            self.offset_mask_dw = nn.Conv2d(channels, channels, dw_kernel_size, stride=1,
                                            padding=(dw_kernel_size - 1) // 2, groups=channels)
        self.offset_mask = nn.Linear(channels, int(math.ceil((self.K * 3) / 8) * 8))
        if not without_pointwise:
            self.value_proj = nn.Linear(channels, channels)
            self.output_proj = nn.Linear(channels, channels, bias=output_bias)
        self._reset_parameters()
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros((group, channels)))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.offset_mask.weight, 0.0)
        nn.init.constant_(self.offset_mask.bias, 0.0)
        if not self.without_pointwise:
            nn.init.xavier_uniform_(self.value_proj.weight)
            nn.init.constant_(self.value_proj.bias, 0.0)
            nn.init.xavier_uniform_(self.output_proj.weight)
            if self.output_proj.bias is not None:
                nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, input: Tensor, shape=None) -> Tensor:
        raise NotImplementedError("DCNv4 is modelled structurally only (converters must reject it)")
