"""``DeformConv2d``: the canonical trainable DCN layer, owning its offset/mask convolution."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from dcn_deploy.op.boundary import BOUNDARY_RULES, remap_for_boundary
from dcn_deploy.op.functional import deform_conv2d
from dcn_deploy.op.geometry import as_pair, normalize_pads


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

    Options that let converted third-party layers keep their exact behaviour:

    ======================  ================================================================
    ``own_offsets=False``   no ``conv_offset``; ``forward(x, offset, mask=None)`` takes them
                            (torchvision / detectron2 style); ``offset_groups=None`` infers
    ``offset_kernel_size``, the offset conv's own geometry when it differs from the layer's
    ``offset_padding``,     (CharlesShang and Paddle: undilated; 4uiiurz1: always 3x3, pad 1)
    ``offset_dilation``,
    ``offset_conv_groups``
    ``mask_scale``          mask = ``mask_scale * sigmoid(logits)`` (MXNet's DCNv2 uses 2)
    ``boundary``            ``zeros`` (canonical), ``mxnet_v1`` or ``clamp_twice``: see
                            :mod:`dcn_deploy.op.boundary`
    ``offset_shift``        a constant added to every offset before sampling
    ======================  ================================================================
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
        offset_groups: int | None = 1,
        bias: bool = True,
        modulated: bool = True,
        own_offsets: bool = True,
        offset_kernel_size: int | Sequence[int] | None = None,
        offset_padding: int | Sequence[int] | None = None,
        offset_dilation: int | Sequence[int] | None = None,
        offset_conv_groups: int = 1,
        mask_scale: float = 1.0,
        boundary: str = "zeros",
        offset_shift: float = 0.0,
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
        if offset_groups is None and own_offsets:
            raise ValueError("DeformConv2d: offset_groups=None (inferred from the offsets) needs own_offsets=False")
        if offset_groups is not None and (offset_groups <= 0 or in_channels % offset_groups):
            raise ValueError(
                f"DeformConv2d: in_channels={in_channels} must be divisible by offset_groups={offset_groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.padding = normalize_pads(padding)
        self.dilation = as_pair(dilation, "dilation")
        self.groups = groups
        self.offset_groups = offset_groups
        self.modulated = modulated
        if boundary not in BOUNDARY_RULES:
            raise ValueError(f"DeformConv2d: boundary must be one of {BOUNDARY_RULES}, got '{boundary}'")
        self.boundary = boundary
        self.mask_scale = float(mask_scale)
        self.offset_shift = float(offset_shift)
        if min(self.stride) <= 0 or min(self.dilation) <= 0 or min(self.padding) < 0:
            raise ValueError(
                f"DeformConv2d: stride {self.stride} and dilation {self.dilation} must be positive, "
                f"padding {self.padding} non-negative"
            )

        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None

        self.offset_pad = None
        self.conv_offset = None
        if own_offsets:
            top, left, bottom, right = normalize_pads(self.padding if offset_padding is None else offset_padding)
            symmetric = top == bottom and left == right
            # nn.Conv2d pads symmetrically only; an asymmetric layer pads explicitly first.
            if not symmetric:
                self.offset_pad = nn.ZeroPad2d((left, right, top, bottom))
            per_group = (3 if modulated else 2) * kh * kw
            self.conv_offset = nn.Conv2d(
                in_channels,
                offset_groups * per_group,
                self.kernel_size if offset_kernel_size is None else as_pair(offset_kernel_size, "offset_kernel_size"),
                stride=self.stride,
                padding=(top, left) if symmetric else 0,
                dilation=self.dilation if offset_dilation is None else as_pair(offset_dilation, "offset_dilation"),
                groups=offset_conv_groups,
                bias=True,
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.conv_offset is not None:
            nn.init.zeros_(self.conv_offset.weight)
            nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """What ``conv_offset`` predicts for ``x``: offsets and the sigmoid mask (or None)."""
        out = self.conv_offset(x if self.offset_pad is None else self.offset_pad(x))
        n_offset = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        mask = torch.sigmoid(out[:, n_offset:])
        return out[:, :n_offset], mask if self.mask_scale == 1.0 else mask * self.mask_scale

    def forward(self, x: Tensor, offset: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        if self.conv_offset is not None:
            if offset is not None or mask is not None:
                raise TypeError("DeformConv2d: this layer predicts its own offsets; call it with the input only")
            offset, mask = self.offsets_and_mask(x)
        elif offset is None:
            raise TypeError("DeformConv2d(own_offsets=False) needs the offsets: layer(x, offset, mask=None)")
        if self.offset_shift:
            offset = offset + self.offset_shift
        offset_groups = self.offset_groups or offset.shape[1] // (2 * self.kernel_size[0] * self.kernel_size[1])
        if self.boundary != "zeros":
            offset, mask = remap_for_boundary(
                offset, mask, tuple(x.shape[2:]), self.kernel_size, self.stride, self.padding, self.dilation,
                offset_groups, self.boundary,
            )
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
            offset_groups=offset_groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"offset_groups={self.offset_groups}, bias={self.bias is not None}, modulated={self.modulated}"
            + ("" if self.conv_offset is not None else ", own_offsets=False")
            + ("" if self.boundary == "zeros" else f", boundary={self.boundary}")
            + ("" if self.mask_scale == 1.0 else f", mask_scale={self.mask_scale}")
            + ("" if not self.offset_shift else f", offset_shift={self.offset_shift}")
        )
