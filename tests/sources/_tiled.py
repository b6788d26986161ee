"""The sampling machinery shared by the pure-PyTorch DCN ports (ChunhuanLin/deform_conv_pytorch
and its descendant 4uiiurz1/pytorch-deform-conv-v2), re-expressed here for the oracles.

Those ports do not write an im2col kernel. They build absolute sampling positions ``p`` in
the coordinates of the zero-padded input, take the four integer neighbours of ``p``
(clamped into the padded map), clamp ``p`` itself into the padded map, weight the corners
with ``(1 +- (q - p))`` products, gather, and lay the ``k*k`` samples of each output pixel
out as a ``k x k`` tile of a ``(h*k, w*k)`` map that an ordinary ``k x k`` convolution with
stride ``k`` then reduces.

The older versions additionally replace a coordinate that falls in the padding band
(``p < P`` or ``p > size-1-P`` of the padded map) by its floor before clamping
(``floor_in_band=True``), which makes samples near the border snap instead of interpolate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kernel_grid_offsets", "tiled_deform_samples"]


def kernel_grid_offsets(kernel_size: int) -> list[int]:
    """``arange(-(k-1)//2, (k-1)//2 + 1)`` with Python's floor division, as the ports write it."""
    low = (-(kernel_size - 1)) // 2
    high = (kernel_size - 1) // 2 + 1
    return list(range(low, high))


def _gather(x_flat: Tensor, rows: Tensor, cols: Tensor, width: int) -> Tensor:
    """x_flat (b, c, Hp*Wp); rows/cols (b, h, w, N) integer-valued -> (b, c, h, w, N)."""
    b, c, _ = x_flat.shape
    index = (rows.long() * width + cols.long()).reshape(b, 1, -1).expand(b, c, -1)
    return torch.gather(x_flat, 2, index).reshape(b, c, *rows.shape[1:])


def tiled_deform_samples(
    x: Tensor,
    rows: Tensor,
    cols: Tensor,
    padding: int,
    kernel_size: int,
    floor_in_band: bool,
    modulation: Tensor | None = None,
) -> Tensor:
    """Samples of ``x`` at ``(rows, cols)`` laid out as the ``(b, c, h*k, w*k)`` tiled map.

    Args:
        x: unpadded input ``(b, c, H, W)``; it is zero-padded by ``padding`` on every side.
        rows, cols: ``(b, N, h, w)`` sampling positions in padded coordinates, ``N = k*k``
            taps in row-major order.
        modulation: optional ``(b, N, h, w)`` factor per tap (DCNv2 mask).
    """
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    b, c, hp, wp = x.shape
    k = kernel_size
    rows = rows.permute(0, 2, 3, 1)  # (b, h, w, N)
    cols = cols.permute(0, 2, 3, 1)
    h, w = rows.shape[1:3]

    row_floor = torch.floor(rows.detach())
    col_floor = torch.floor(cols.detach())
    lt_r = row_floor.clamp(0, hp - 1)
    lt_c = col_floor.clamp(0, wp - 1)
    rb_r = (row_floor + 1).clamp(0, hp - 1)
    rb_c = (col_floor + 1).clamp(0, wp - 1)

    if floor_in_band:
        band_r = ((rows < padding) | (rows > hp - 1 - padding)).to(rows.dtype)
        band_c = ((cols < padding) | (cols > wp - 1 - padding)).to(cols.dtype)
        rows = rows * (1 - band_r) + (rows - (rows - torch.floor(rows))) * band_r
        cols = cols * (1 - band_c) + (cols - (cols - torch.floor(cols))) * band_c

    rows = rows.clamp(0, hp - 1)
    cols = cols.clamp(0, wp - 1)

    up_r = 1 + (lt_r - rows)  # factor of the corners on row lt
    down_r = 1 - (rb_r - rows)  # factor of the corners on row rb
    left_c = 1 + (lt_c - cols)
    right_c = 1 - (rb_c - cols)

    flat = x.reshape(b, c, hp * wp)
    samples = (
        (up_r * left_c).unsqueeze(1) * _gather(flat, lt_r, lt_c, wp)
        + (down_r * right_c).unsqueeze(1) * _gather(flat, rb_r, rb_c, wp)
        + (up_r * right_c).unsqueeze(1) * _gather(flat, lt_r, rb_c, wp)
        + (down_r * left_c).unsqueeze(1) * _gather(flat, rb_r, lt_c, wp)
    )  # (b, c, h, w, N)
    if modulation is not None:
        samples = samples * modulation.permute(0, 2, 3, 1).unsqueeze(1)
    return samples.reshape(b, c, h, w, k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h * k, w * k)
