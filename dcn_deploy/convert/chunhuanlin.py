"""ChunhuanLin/deform_conv_pytorch ``DeformConv2D`` (DCNv1).

==============  ====================================================================
classes         ``DeformConv2D(inc, outc, kernel_size=3, padding=1, bias=None)``;
                ``forward(x, offset)`` with offsets from a sibling conv
parameters      ``conv_kernel.weight`` (taps tiled, stride k: the canonical weight),
                ``conv_kernel.bias``
channel layout  interleaved (dy, dx) per tap: canonical (its comment says otherwise)
coordinates     as 4uiiurz1: 1-based in a zero-padded image, stride 1 only; a constant
                shift 1 - P (odd k) or -P (even k) is added to the offsets
boundary        floors the coordinate in the padding band: MXNet DCNv1 rule
                (``mxnet_v1``) for P >= 1, ``clamp_twice`` for P = 0
rejected        nothing
==============  ====================================================================
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    build_canonical,
    class_name,
    owners,
)
from dcn_deploy.convert.uiiurz1 import boundary_rule, coordinate_shift


class ChunhuanLinConverter(SourceConverter):
    source = "chunhuanlin"
    description = "ChunhuanLin deform_conv_pytorch DeformConv2D (DCNv1, offsets as inputs)"

    def matches(self, module: nn.Module) -> bool:
        return class_name(module) == "DeformConv2D" and isinstance(getattr(module, "conv_kernel", None), nn.Conv2d)

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        padding = int(module.padding)
        begin = (k - 1) // 2
        shift = coordinate_shift(k, padding)
        layer = build_canonical(
            path, module.conv_kernel.weight, module.conv_kernel.bias, 1, (begin, begin, k - 1 - begin, k - 1 - begin),
            1, 1, None, modulated=False, boundary=boundary_rule(padding, floor_band=True), offset_shift=shift,
        )
        return Converted(layer, f"boundary {layer.boundary}, offset shift {shift}")

    def recognize(self, keys):
        return owners(keys, "conv_kernel.weight")

    def remap_state_dict(self, state, options):
        return {".".join(p for p in key.split(".") if p != "conv_kernel"): value for key, value in state.items()}
