"""Torch stand-in for the Keras per-pixel "deform-conv" layer (felixlaumon/deform-conv,
kastnerkyle's ports): ``ConvOffset2D(filters, init_normal_stddev=0.01)``.

This is NOT a deformable convolution in the DCN sense: a 3x3 conv (``conv``, ``filters ->
2*filters``, 'same' padding, no bias, Normal(0, stddev) init) predicts one displacement
per input channel per pixel, the input is resampled at those displaced positions with
edge-clamped bilinear interpolation, and an ordinary convolution follows elsewhere.
Converters are expected to reject it.

Forward, following the original (NCHW here where Keras is NHWC):

* the offset conv output, channels-first ``(b, 2c, h, w)``, is reinterpreted by a raw
  reshape as ``(b*c, h, w, 2)`` -- the original's ``_to_bc_h_w_2`` transposes to channels-first
  and reshapes without separating the pair from the spatial axes;
* position = ``(i, j) + (d[..., 0], d[..., 1])``, clipped into the image (the original clips
  both axes to ``size-1`` of a square input; here rows to ``h-1`` and columns to ``w-1``);
* corners ``floor``/``ceil``; ``top = lt + (rt - lt) * fr``, ``bottom = lb + (rb - lb) * fr``,
  ``out = top + (bottom - top) * fc`` where ``rt = (ceil row, floor col)`` and
  ``lb = (floor row, ceil col)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvOffset2D"]


class ConvOffset2D(nn.Module):
    def __init__(self, filters, init_normal_stddev=0.01):
        super().__init__()
        self.filters = filters
        self.conv = nn.Conv2d(filters, filters * 2, 3, padding=1, bias=False)
        nn.init.normal_(self.conv.weight, 0.0, init_normal_stddev)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        disp = self.conv(x).contiguous().reshape(b * c, h, w, 2)
        planes = x.reshape(b * c, h * w)
        dtype, device = x.dtype, x.device
        rows = (torch.arange(h, device=device, dtype=dtype).view(1, h, 1) + disp[..., 0]).clamp(0, h - 1)
        cols = (torch.arange(w, device=device, dtype=dtype).view(1, 1, w) + disp[..., 1]).clamp(0, w - 1)
        r0, r1 = torch.floor(rows), torch.ceil(rows)
        c0, c1 = torch.floor(cols), torch.ceil(cols)

        def at(row: Tensor, col: Tensor) -> Tensor:
            index = (row.long() * w + col.long()).reshape(b * c, h * w)
            return torch.gather(planes, 1, index).reshape(b * c, h, w)

        fr = rows - r0
        fc = cols - c0
        v_lt, v_rb = at(r0, c0), at(r1, c1)
        v_lb, v_rt = at(r0, c1), at(r1, c0)
        top = v_lt + (v_rt - v_lt) * fr
        bottom = v_lb + (v_rb - v_lb) * fr
        return (top + (bottom - top) * fc).reshape(b, c, h, w)
