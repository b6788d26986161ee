"""Oracle for ChunhuanLin/deform_conv_pytorch (``deform_conv.py``, HEAD), a DCNv1 port.

``DeformConv2D(inc, outc, kernel_size=3, padding=1, bias=None)``: a single parameterised
submodule ``conv_kernel = nn.Conv2d(inc, outc, kernel_size=k, stride=k, bias=bias)``
(plus the parameterless ``zero_padding``). ``forward(x, offset)`` takes the offsets from
outside, INTERLEAVED like MXNet (channel ``2t`` = row offset of tap ``t``, ``2t+1`` = column),
stride 1. Positions in the padded map: ``row = 1 + i + (a + lo) + dy``,
``col = 1 + j + (b + lo) + dx``, ``lo = -(k-1)//2``; the output size is the offset map's.
Coordinates in the padding band are floored before the clamp (the port's attempt to
reproduce MXNet DCNv1's border): for ``k = 3, padding = 1`` this is the ``"mxnet_v1"``
rule with pads 1.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._tiled import kernel_grid_offsets, tiled_deform_samples

__all__ = ["DeformConv2D"]


class DeformConv2D(nn.Module):
    def __init__(self, inc, outc, kernel_size=3, padding=1, bias=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.padding = padding
        self.zero_padding = nn.ZeroPad2d(padding)
        self.conv_kernel = nn.Conv2d(inc, outc, kernel_size=kernel_size, stride=kernel_size, bias=bias)

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        k = self.kernel_size
        taps = k * k
        if offset.shape[1] != 2 * taps:
            raise ValueError(f"offset must have {2 * taps} channels, got {offset.shape[1]}")
        h, w = offset.shape[2:]
        dtype, device = offset.dtype, offset.device
        grid = torch.tensor(kernel_grid_offsets(k), dtype=dtype, device=device)
        tap_row = grid.repeat_interleave(k).view(1, taps, 1, 1)
        tap_col = grid.repeat(k).view(1, taps, 1, 1)
        base_row = (1 + torch.arange(h, device=device)).to(dtype).view(1, 1, h, 1)
        base_col = (1 + torch.arange(w, device=device)).to(dtype).view(1, 1, 1, w)
        rows = (base_row + tap_row) + offset[:, 0::2]
        cols = (base_col + tap_col) + offset[:, 1::2]
        tiled = tiled_deform_samples(x, rows, cols, self.padding, k, floor_in_band=True)
        return self.conv_kernel(tiled)
