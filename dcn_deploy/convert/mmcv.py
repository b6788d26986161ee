"""mmcv / mmdetection.

=====================  ===================================================================
classes                mmcv ``ModulatedDeformConv2dPack``, ``DeformConv2dPack`` (own offsets),
                       ``ModulatedDeformConv2d``, ``DeformConv2d`` (offsets as inputs);
                       mmdetection 1.x ``mmdet/ops/dcn``: the same without ``2d``
parameters             ``weight``, ``bias`` (optional), ``conv_offset.weight/bias``
groups attribute       ``deform_groups`` (mmcv), ``deformable_groups`` (mmdet 1.x)
offset conv            the layer's own kernel, stride, padding and dilation
channel layout         ``chunk(out, 3)``, ``offset = cat(o1, o2)``: the first 2*G*K channels
                       unchanged, interleaved (dy, dx) per tap: canonical
mask                   ``sigmoid`` of the last G*K channels
boundary               ``h_im > -1 && h_im < H`` with per-corner checks: canonical
old checkpoints        the offset conv as a sibling ``<name>_offset.*``: renamed on load
rejected               nothing
=====================  ===================================================================
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    build_canonical,
    class_name,
    first_attr,
    owners,
)

PACKS = {"ModulatedDeformConv2dPack", "DeformConv2dPack", "ModulatedDeformConvPack", "DeformConvPack"}
PLAIN = {"ModulatedDeformConv2d", "DeformConv2d", "ModulatedDeformConv", "DeformConv"}
GROUP_ATTRS = ("deform_groups", "deformable_groups")


class MMCVConverter(SourceConverter):
    source = "mmcv"
    description = "mmcv / mmdetection (Modulated)DeformConv2d(Pack), mmdet 1.x (Modulated)DeformConv(Pack)"

    def matches(self, module: nn.Module) -> bool:
        name = class_name(module)
        if not hasattr(module, "weight") or not any(hasattr(module, a) for a in GROUP_ATTRS):
            return False
        if name in PACKS:
            return isinstance(getattr(module, "conv_offset", None), nn.Conv2d)
        # detectron2's classes of the same names carry a `norm` slot.
        return name in PLAIN and not hasattr(module, "norm")

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        packed = class_name(module) in PACKS
        layer = build_canonical(
            path,
            module.weight,
            getattr(module, "bias", None),
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            first_attr(module, GROUP_ATTRS),
            modulated=class_name(module).startswith("Modulated"),
            offset_conv=module.conv_offset if packed else None,
        )
        return Converted(layer, "offset conv and weights copied" if packed else "offsets stay inputs")

    def recognize(self, keys):
        return sorted(set(owners(keys, "conv_offset.weight", "weight")) | set(owners(keys, "_offset.weight", ".weight")))

    def remap_state_dict(self, state, options):
        """Old checkpoints keep ``<name>_offset.*`` beside ``<name>.weight``: mmcv's own rename."""
        out = dict(state)
        for key in list(state):
            for leaf in ("weight", "bias"):
                suffix = f"_offset.{leaf}"
                if key.endswith(suffix):
                    owner = key[: -len(suffix)]
                    if f"{owner}.weight" in state and f"{owner}.conv_offset.{leaf}" not in state:
                        out[f"{owner}.conv_offset.{leaf}"] = out.pop(key)
        return out
