"""Oracle for 4uiiurz1/pytorch-deform-conv-v2 (``deform_conv_v2.py``).

``DeformConv2d(inc, outc, kernel_size=3, padding=1, stride=1, bias=None, modulation=False)``
(HEAD, 2019-04):

* ``zero_padding = nn.ZeroPad2d(padding)`` (no parameters),
  ``conv = nn.Conv2d(inc, outc, kernel_size=k, stride=k, bias=bias)``,
  ``p_conv = nn.Conv2d(inc, 2*k*k, kernel_size=3, padding=1, stride=stride)`` -- ALWAYS 3x3 /
  pad 1 whatever ``k`` and ``padding`` are -- with weight 0 (default random bias), and with
  ``modulation`` ``m_conv`` likewise with ``k*k`` outputs (weight 0); mask =
  ``sigmoid(m_conv(x))``.
* Offsets are PLANAR: channels ``[0, N)`` move the row of taps ``0..N-1``, channels
  ``[N, 2N)`` the column (``N = k*k``, taps row-major).
* Position in the padded map of tap ``(a, b)`` of output ``(i, j)``:
  ``row = 1 + i*stride + (a + lo) + offset_row``, ``col = 1 + j*stride + (b + lo) + offset_col``
  with ``lo = -(k-1)//2`` (Python floor division). The output size is the offset map's.
* Corners and positions are clamped into the padded map and weighted with the
  ``(1 +- (q - p))`` products (see ``_tiled``); the k*k samples are tiled and reduced by
  ``conv``.

For ``k = 3, padding = 1`` this equals canonical DCN with pads 1 (any stride), offsets
converted from planar to interleaved.

``DeformConv2dOld``: the same module before 2019-01-05 (commit "remove unnecessary
lines"): coordinates lying in the padding band are floored before the clamp (an
MXNet-DCNv1-like border), and ``m_conv.weight`` starts at 0.5 instead of 0.

The (ineffective) ``_set_lr`` backward hooks of the original are not registered.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._tiled import kernel_grid_offsets, tiled_deform_samples

__all__ = ["DeformConv2d", "DeformConv2dOld"]


class DeformConv2d(nn.Module):
    _floor_in_band = False
    _m_conv_weight_init = 0.0

    def __init__(self, inc, outc, kernel_size=3, padding=1, stride=1, bias=None, modulation=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.padding = padding
        self.stride = stride
        self.zero_padding = nn.ZeroPad2d(padding)
        self.conv = nn.Conv2d(inc, outc, kernel_size=kernel_size, stride=kernel_size, bias=bias)

        self.p_conv = nn.Conv2d(inc, 2 * kernel_size * kernel_size, kernel_size=3, padding=1, stride=stride)
        nn.init.constant_(self.p_conv.weight, 0)

        self.modulation = modulation
        if modulation:
            self.m_conv = nn.Conv2d(inc, kernel_size * kernel_size, kernel_size=3, padding=1, stride=stride)
            nn.init.constant_(self.m_conv.weight, self._m_conv_weight_init)

    @staticmethod
    def _set_lr(module, grad_input, grad_output):  # kept for parity; has no effect
        return None

    def _positions(self, offset: Tensor) -> tuple[Tensor, Tensor]:
        """Absolute (row, col) positions in the padded map, each ``(b, N, h, w)``."""
        k = self.kernel_size
        taps = k * k
        h, w = offset.shape[2:]
        dtype, device = offset.dtype, offset.device
        grid = torch.tensor(kernel_grid_offsets(k), dtype=dtype, device=device)
        tap_row = grid.repeat_interleave(k).view(1, taps, 1, 1)
        tap_col = grid.repeat(k).view(1, taps, 1, 1)
        base_row = (1 + torch.arange(h, device=device) * self.stride).to(dtype).view(1, 1, h, 1)
        base_col = (1 + torch.arange(w, device=device) * self.stride).to(dtype).view(1, 1, 1, w)
        rows = (base_row + tap_row) + offset[:, :taps]
        cols = (base_col + tap_col) + offset[:, taps:]
        return rows, cols

    def forward(self, x: Tensor) -> Tensor:
        offset = self.p_conv(x)
        modulation = torch.sigmoid(self.m_conv(x)) if self.modulation else None
        rows, cols = self._positions(offset)
        tiled = tiled_deform_samples(
            x, rows, cols, self.padding, self.kernel_size, self._floor_in_band, modulation
        )
        return self.conv(tiled)


class DeformConv2dOld(DeformConv2d):
    """``DeformConv2d`` as of 2018-12-15 .. 2019-01-05 (floor-in-padding-band border)."""

    _floor_in_band = True
    _m_conv_weight_init = 0.5
