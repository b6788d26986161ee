"""``DeformConv2d``: the canonical trainable DCN layer, owning its offset/mask convolution."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .ops import _pair, deform_conv2d, normalize_pads

__all__ = ["DeformConv2d"]


class DeformConv2d(nn.Module):
    """Deformable convolution that predicts its own offsets (and mask), like mmcv's
    ``ModulatedDeformConv2dPack`` / ``DeformConv2dPack``.

    Parameters ``weight`` ``(M, C/groups, kh, kw)``, ``bias`` ``(M,)`` (optional) and
    ``conv_offset`` (an ``nn.Conv2d`` with the layer's stride, padding and dilation, zero
    initialised so training starts as a plain convolution). Its output channels are
    ``[offsets (2*offset_groups*kh*kw, (dy, dx) interleaved) | mask logits
    (offset_groups*kh*kw)]`` and ``mask = sigmoid(logits)``, which is mmcv's
    ``chunk(3)`` + ``cat`` layout channel for channel. With ``modulated=False`` (DCNv1)
    there are no mask channels.

    ``padding`` may be an int, ``(ph, pw)`` or asymmetric ``(top, left, bottom, right)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        modulated: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value <= 0:
                raise ValueError(f"DeformConv2d: {name} must be positive, got {value}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"DeformConv2d: in_channels={in_channels} and out_channels={out_channels} "
                f"must both be divisible by groups={groups}"
            )
        if offset_groups <= 0 or in_channels % offset_groups:
            raise ValueError(
                f"DeformConv2d: in_channels={in_channels} must be divisible by offset_groups={offset_groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = normalize_pads(padding)
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.offset_groups = offset_groups
        self.modulated = modulated
        if min(self.stride) <= 0 or min(self.dilation) <= 0 or min(self.padding) < 0:
            raise ValueError(
                f"DeformConv2d: stride {self.stride} and dilation {self.dilation} must be positive, "
                f"padding {self.padding} non-negative"
            )

        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None

        top, left, bottom, right = self.padding
        symmetric = top == bottom and left == right
        # nn.Conv2d pads symmetrically only; an asymmetric layer pads explicitly first.
        self.offset_pad = None if symmetric else nn.ZeroPad2d((left, right, top, bottom))
        per_group = (3 if modulated else 2) * kh * kw
        self.conv_offset = nn.Conv2d(
            in_channels,
            offset_groups * per_group,
            self.kernel_size,
            stride=self.stride,
            padding=(top, left) if symmetric else 0,
            dilation=self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """What ``conv_offset`` predicts for ``x``: offsets and the sigmoid mask (or None)."""
        out = self.conv_offset(x if self.offset_pad is None else self.offset_pad(x))
        n_offset = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        return out[:, :n_offset], torch.sigmoid(out[:, n_offset:])

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
            groups=self.groups,
            offset_groups=self.offset_groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"offset_groups={self.offset_groups}, bias={self.bias is not None}, modulated={self.modulated}"
        )
