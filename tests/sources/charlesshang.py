"""Oracle for CharlesShang/DCNv2 (``dcn_v2.py``; also vendored by CenterNet, FairMOT, ...).

* ``DCNv2(in, out, kernel_size, stride, padding, dilation=1, deformable_groups=1)``:
  ``weight`` ``(out, in, kh, kw)`` (no weight groups), ``bias`` ``(out,)`` always present;
  weight uniform(+-1/sqrt(in*kh*kw)), bias zeros. ``forward(input, offset, mask)``.
* ``DCN``: adds ``conv_offset_mask = nn.Conv2d(in, dg*3*kh*kw, kernel_size, stride=stride,
  padding=padding, bias=True)`` -- no ``dilation`` is passed, so the offset conv is
  undilated even when the DCN is dilated. Zero-initialised. ``forward``: chunk in three,
  cat the first two as offset, sigmoid of the third as mask; canonical rule with the DCN's
  own dilation.
* CenterNet's ``DeformConv(chi, cho)``: ``actf = Sequential(BatchNorm2d(cho), ReLU)`` and
  ``conv = DCN(chi, cho, (3, 3), stride=1, padding=1, dilation=1, deformable_groups=1)``;
  ``forward = actf(conv(x))``.

When the DCN is dilated, the undilated offset conv produces a larger map than the DCN's
output, and the CUDA/CPU kernels (which never check the offset's spatial size) read the
offset/mask memory as if it had the DCN's output size. ``offset_size_mismatch`` picks what
the oracle does then: ``"cuda"`` (default; the batched CUDA im2col reads the whole batch's
contiguous buffer from its start), ``"cpu"`` (the CPU path reads each sample's buffer from
that sample's start) or ``"raise"``. Shapes that agree take none of these paths.
The real library computes in float32 only; the oracle accepts float64 too.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ._sampling import conv_out_size, deform_conv

__all__ = ["DCNv2", "DCN", "DeformConv"]

BN_MOMENTUM = 0.1


def _as_read_by_kernel(t: Tensor, channels: int, ho: int, wo: int, mode: str) -> Tensor:
    """View ``t`` the way the DCNv2 kernels address it: ``(N, channels, ho, wo)`` contiguous."""
    n = t.shape[0]
    if tuple(t.shape[1:]) == (channels, ho, wo):
        return t
    if t.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got {t.shape[1]}")
    if mode == "raise":
        raise ValueError(
            f"offset/mask spatial size {tuple(t.shape[2:])} differs from the DCN output size {(ho, wo)}"
        )
    need = channels * ho * wo
    if mode == "cuda":
        flat = t.contiguous().reshape(-1)
        if flat.numel() < n * need:
            raise ValueError("offset/mask buffer is smaller than the kernel reads (out of bounds)")
        return flat[: n * need].reshape(n, channels, ho, wo)
    if mode == "cpu":
        per_sample = t.contiguous().reshape(n, -1)
        if per_sample.shape[1] < need:
            raise ValueError("offset/mask buffer is smaller than the kernel reads (out of bounds)")
        return per_sample[:, :need].reshape(n, channels, ho, wo)
    raise ValueError(f"unknown offset_size_mismatch mode {mode!r}")


class DCNv2(nn.Module):
    offset_size_mismatch = "cuda"

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, deformable_groups=1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.zero_()

    def _dcn_v2_conv(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        taps = kh * kw
        ho = conv_out_size(x.shape[2], kh, self.stride[0], self.padding[0], self.dilation[0])
        wo = conv_out_size(x.shape[3], kw, self.stride[1], self.padding[1], self.dilation[1])
        g = self.deformable_groups
        offset = _as_read_by_kernel(offset, 2 * g * taps, ho, wo, self.offset_size_mismatch)
        mask = _as_read_by_kernel(mask, g * taps, ho, wo, self.offset_size_mismatch)
        return deform_conv(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation,
            1, g, mask=mask, rule="canonical",
        )

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        taps = self.kernel_size[0] * self.kernel_size[1]
        assert 2 * self.deformable_groups * taps == offset.shape[1]
        assert self.deformable_groups * taps == mask.shape[1]
        return self._dcn_v2_conv(input, offset, mask)


class DCN(DCNv2):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation=1, deformable_groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, deformable_groups)
        channels = self.deformable_groups * 3 * self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset_mask = nn.Conv2d(
            self.in_channels,
            channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=True,
        )
        self.init_offset()

    def init_offset(self) -> None:
        with torch.no_grad():
            self.conv_offset_mask.weight.zero_()
            self.conv_offset_mask.bias.zero_()

    def forward(self, input: Tensor) -> Tensor:  # type: ignore[override]
        raw = self.conv_offset_mask(input)
        first, second, logits = torch.chunk(raw, 3, dim=1)
        offset = torch.cat((first, second), dim=1)
        return self._dcn_v2_conv(input, offset, torch.sigmoid(logits))


class DeformConv(nn.Module):
    """CenterNet ``pose_dla_dcn.DeformConv``: DCN 3x3 followed by BN + ReLU."""

    def __init__(self, chi, cho):
        super().__init__()
        self.actf = nn.Sequential(nn.BatchNorm2d(cho, momentum=BN_MOMENTUM), nn.ReLU(inplace=True))
        self.conv = DCN(chi, cho, kernel_size=(3, 3), stride=1, padding=1, dilation=1, deformable_groups=1)
        for module in self.actf.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.actf(self.conv(x))
