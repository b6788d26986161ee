"""CharlesShang/DCNv2 and its copy in CenterNet (``DCN``).

==============  ====================================================================
classes         ``DCN`` (own offsets), ``DCNv2`` (offsets and mask as inputs);
                CenterNet wraps ``DCN`` as ``DeformConv.conv``
parameters      ``weight`` (no weight groups), ``bias`` (always present),
                ``conv_offset_mask.weight/bias``
groups attr     ``deformable_groups``
offset conv     the layer's kernel, stride and padding but NO dilation
channel layout  ``chunk(out, 3)`` + ``cat(o1, o2)``: canonical, interleaved (dy, dx)
mask            ``sigmoid`` (added on 2018-12-05; the very first commits had none)
boundary        ``h_im > -1 && h_im < H``, per-corner checks: canonical
rejected        dilation > 1 (with padding p the undilated offset conv's output is
                larger than the dilated conv's, so its offsets never lined up)
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
    rename_segment,
)


def convert_offset_mask_layer(module: nn.Module, path: str, groups: int) -> Converted:
    layer = build_canonical(
        path, module.weight, module.bias, module.stride, module.padding, module.dilation, groups,
        module.deformable_groups, modulated=True, offset_conv=module.conv_offset_mask,
    )
    return Converted(layer, "conv_offset_mask -> conv_offset, bias carried")


def rename_offset_mask(state: dict) -> dict:
    return {rename_segment(key, "conv_offset_mask", "conv_offset"): value for key, value in state.items()}


class CharlesShangConverter(SourceConverter):
    source = "charlesshang"
    description = "CharlesShang/DCNv2 and CenterNet DCN"

    def matches(self, module: nn.Module) -> bool:
        if class_name(module) == "DCN":
            return isinstance(getattr(module, "conv_offset_mask", None), nn.Conv2d)
        return class_name(module) == "DCNv2" and hasattr(module, "weight") and hasattr(module, "deformable_groups")

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        if class_name(module) == "DCN":
            return convert_offset_mask_layer(module, path, groups=1)
        layer = build_canonical(path, module.weight, module.bias, module.stride, module.padding, module.dilation, 1,
                                module.deformable_groups, modulated=True)
        return Converted(layer, "offsets and mask stay inputs")

    def recognize(self, keys):
        return owners(keys, "conv_offset_mask.weight", "weight")

    def remap_state_dict(self, state, options):
        return rename_offset_mask(state)
