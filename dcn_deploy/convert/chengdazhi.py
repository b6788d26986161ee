"""chengdazhi/Deformable-Convolution-V2-PyTorch.

==============  ====================================================================
classes         ``ModulatedDeformConvPack`` (own offsets) with ``conv_offset_mask``
parameters      ``weight``, ``bias``, ``conv_offset_mask.weight/bias``
bias            ALWAYS a parameter and ALWAYS added: with ``bias=False`` it is a
                frozen, randomly initialised tensor (pytorch_1.0.0 branch), so it is
                carried whatever the flag says
groups attr     ``groups``, ``deformable_groups``
offset conv     the layer's kernel, stride and padding, no dilation
channel layout  ``chunk(3)`` + ``cat``: canonical; mask ``sigmoid``
boundary        canonical
rejected        dilation > 1 where the offset map does not line up (as CharlesShang)
==============  ====================================================================
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from dcn_deploy.convert.base import Converted, SourceConverter, class_name, owners
from dcn_deploy.convert.charlesshang import (
    convert_offset_mask_layer,
    rename_offset_mask,
)


class ChengdazhiConverter(SourceConverter):
    source = "chengdazhi"
    description = "chengdazhi Deformable-Convolution-V2-PyTorch ModulatedDeformConvPack"

    def matches(self, module: nn.Module) -> bool:
        return class_name(module) in ("ModulatedDeformConvPack", "ModulatedDeformConv2dPack") and isinstance(
            getattr(module, "conv_offset_mask", None), nn.Conv2d
        )

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        converted = convert_offset_mask_layer(module, path, groups=getattr(module, "groups", 1))
        converted.detail = "conv_offset_mask -> conv_offset; bias carried (it is added even when bias=False)"
        return converted

    def recognize(self, keys):
        return owners(keys, "conv_offset_mask.weight", "weight")

    def remap_state_dict(self, state, options):
        return rename_offset_mask(state)
