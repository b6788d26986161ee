"""detectron2 ``DeformConv`` / ``ModulatedDeformConv`` (and ``DeformBottleneckBlock``).

==============  ====================================================================
classes         ``DeformConv`` (v1), ``ModulatedDeformConv`` (v2); offsets are inputs
parameters      ``weight``, ``bias`` (ModulatedDeformConv only), ``norm.*``
extras          ``norm`` (a module) and ``activation`` applied after the conv
offset conv     a sibling in the block: ``conv2_offset`` (kernel 3, the block's
                stride, padding = dilation), zero-initialised; the block splits its
                output with ``chunk(3)`` + ``cat`` and ``sigmoid``: canonical layout
boundary        ``h_im > -1 && h_im < H``, per-corner checks: canonical
conversion      the conv becomes the canonical layer with offsets as inputs (the
                block's own code still computes them), followed by the same norm and
                activation, so the block runs unchanged
rejected        nothing
==============  ====================================================================
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    build_canonical,
    class_name,
    owners,
)


class DeformConvNormAct(nn.Module):
    """The canonical layer followed by detectron2's norm and activation."""

    def __init__(self, conv: nn.Module, norm: nn.Module | None, activation) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.conv(x, offset, mask)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class Detectron2Converter(SourceConverter):
    source = "detectron2"
    description = "detectron2 DeformConv / ModulatedDeformConv (norm and activation kept)"

    def matches(self, module: nn.Module) -> bool:
        return (
            class_name(module) in ("DeformConv", "ModulatedDeformConv")
            and hasattr(module, "norm")
            and hasattr(module, "deformable_groups")
        )

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        layer = build_canonical(
            path, module.weight, getattr(module, "bias", None), module.stride, module.padding, module.dilation,
            module.groups, module.deformable_groups, modulated=class_name(module) == "ModulatedDeformConv",
        )
        if module.norm is None and module.activation is None:
            return Converted(layer, "offsets stay inputs")
        return Converted(DeformConvNormAct(layer, module.norm, module.activation), "offsets stay inputs; norm kept")

    def recognize(self, keys):
        # the block's conv2 carries its norm (mmdet's old sibling ``conv2_offset`` keys have none: mmcv's)
        return [f"{owner}.conv2" if owner != "(root)" else "conv2"
                for owner in owners(keys, "conv2_offset.weight", "conv2.weight", "conv2.norm.weight")]

    def remap_state_dict(self, state, options):
        """A block's sibling ``conv2_offset.*`` becomes the canonical ``conv2.conv_offset.*``
        (for a canonical model whose DCN owns its offset conv) and ``conv2.norm`` stays."""
        out = {}
        for key, value in state.items():
            for leaf in ("weight", "bias"):
                if key.endswith(f".conv2_offset.{leaf}"):
                    key = key[: -len(f"_offset.{leaf}")] + f".conv_offset.{leaf}"
            out[key] = value
        return out
