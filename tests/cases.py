"""Seeded random DeformConv configurations shared by the reference, oracle and custom-op tests."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    name: str
    n: int = 2
    c: int = 4
    h: int = 7
    w: int = 9
    m: int = 6
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (1, 1, 1, 1)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    group: int = 1
    offset_group: int = 1
    mask: bool = True
    bias: bool = True
    offset_scale: float = 1.5
    integer_offsets: bool = False
    seed: int = 0
    arrays: dict = field(default_factory=dict, repr=False)

    @property
    def out_hw(self) -> tuple[int, int]:
        kh, kw = self.kernel
        ho = (self.h + self.pads[0] + self.pads[2] - (self.dilation[0] * (kh - 1) + 1)) // self.stride[0] + 1
        wo = (self.w + self.pads[1] + self.pads[3] - (self.dilation[1] * (kw - 1) + 1)) // self.stride[1] + 1
        return ho, wo

    def make(self, dtype=np.float32) -> dict[str, np.ndarray | None]:
        """Inputs X, W, offset, B, mask (None where absent), seeded by the case."""
        rng = np.random.default_rng(self.seed)
        kh, kw = self.kernel
        ho, wo = self.out_hw
        taps = kh * kw
        offset = rng.standard_normal((self.n, 2 * self.offset_group * taps, ho, wo)) * self.offset_scale
        if self.integer_offsets:
            offset = np.round(offset)
        return {
            "X": rng.standard_normal((self.n, self.c, self.h, self.w)).astype(dtype),
            "W": rng.standard_normal((self.m, self.c // self.group, kh, kw)).astype(dtype),
            "offset": offset.astype(dtype),
            "B": rng.standard_normal(self.m).astype(dtype) if self.bias else None,
            "mask": rng.uniform(0, 1, (self.n, self.offset_group * taps, ho, wo)).astype(dtype) if self.mask else None,
        }

    @property
    def attributes(self) -> dict:
        return {
            "dilations": list(self.dilation),
            "group": self.group,
            "kernel_shape": list(self.kernel),
            "offset_group": self.offset_group,
            "pads": list(self.pads),
            "strides": list(self.stride),
        }


CASES = [
    Case("3x3", seed=1),
    Case("1x1", kernel=(1, 1), pads=(0, 0, 0, 0), seed=2),
    Case("3x2", kernel=(3, 2), pads=(1, 0, 1, 1), seed=3),
    Case("5x5", kernel=(5, 5), pads=(2, 2, 2, 2), h=11, w=8, seed=4),
    Case("stride_2_1", stride=(2, 1), seed=5),
    Case("dilation_2", dilation=(2, 2), pads=(2, 2, 2, 2), seed=6),
    Case("asymmetric_pads", pads=(0, 2, 1, 0), seed=7),
    Case("group_2", group=2, c=4, m=6, seed=8),
    Case("offset_group_2", offset_group=2, seed=9),
    Case("offset_group_3", offset_group=3, c=6, seed=10),
    Case("no_mask", mask=False, seed=11),
    Case("no_bias", bias=False, seed=12),
    Case("mask_without_bias", bias=False, mask=True, seed=13),
    Case("v1_no_mask_no_bias", mask=False, bias=False, seed=14),
    Case("batch_3_non_square", n=3, h=5, w=13, seed=15),
    Case("samples_leave_image", offset_scale=6.0, seed=16),
    Case("integer_offsets_on_borders", integer_offsets=True, offset_scale=3.0, seed=17),
    Case("h_w_1", h=1, w=1, pads=(1, 1, 1, 1), seed=18),
    Case("h_w_1_1x1", h=1, w=1, kernel=(1, 1), pads=(0, 0, 0, 0), seed=19),
    Case("everything", n=3, c=6, h=10, w=7, m=4, kernel=(3, 2), stride=(2, 1), pads=(1, 0, 2, 1),
         dilation=(2, 1), group=2, offset_group=3, offset_scale=3.0, seed=20),
]
