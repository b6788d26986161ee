"""torchvision ``ops.DeformConv2d``.

==============  =============================================================
classes         ``torchvision.ops.DeformConv2d`` (offsets and mask as inputs)
parameters      ``weight``, ``bias`` (optional)
attributes      ``stride``, ``padding``, ``dilation``, ``groups`` (pairs)
offset groups   inferred from the offset's channel count at run time
semantics       canonical in every respect (it is one of the definitions)
==============  =============================================================
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    build_canonical,
    class_name,
)
from dcn_deploy.op.layer import DeformConv2d as CanonicalDeformConv2d


class TorchvisionConverter(SourceConverter):
    source = "torchvision"
    description = "torchvision.ops.DeformConv2d"

    def matches(self, module: nn.Module) -> bool:
        # mmcv's and 4uiiurz1's classes share the name; they carry deform_groups / p_conv.
        return (
            class_name(module) == "DeformConv2d"
            and not isinstance(module, CanonicalDeformConv2d)
            and hasattr(module, "weight")
            and not any(hasattr(module, a) for a in ("deform_groups", "p_conv", "conv_offset"))
        )

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        layer = build_canonical(path, module.weight, module.bias, module.stride, module.padding, module.dilation,
                                module.groups, None, modulated=True)
        return Converted(layer, "offsets (and mask) stay inputs")
