"""PaddleDetection ``DeformableConvV2`` and Paddle ``vision.ops.DeformConv2D``.

==============  ====================================================================
classes         ``DeformConv2D`` (offsets and mask as inputs); PaddleDetection
                ``DeformableConvV2`` (``conv_offset`` + ``conv_dcn``) and ResNet's
                ``ConvNormLayer`` (sibling ``conv_offset`` + ``conv``)
parameters      ``weight`` [out, in/groups, kh, kw], ``bias`` (unless bias_attr=False)
offset conv     ``Conv2D(in, 3*k*k, k, stride, padding=(k-1)//2)``: never dilated;
                the DCN itself has padding ``(k-1)//2 * dilation``; no offset groups
channel layout  ``split([2K, K])``: offsets first, interleaved (dy, dx): canonical
mask            ``sigmoid``
boundary        ``h_im > -1 && h_im < H``: canonical
weights         Paddle checkpoints as numpy arrays (``.npz``; no paddle import); BN's
                ``_mean``/``_variance`` become ``running_mean``/``running_var``
rejected        nothing (dilation is fine: the offset conv's size always matches)
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
    first_attr,
)

PADDLE_RENAMES = {"._mean": ".running_mean", "._variance": ".running_var"}


class PaddleConverter(SourceConverter):
    source = "paddle"
    description = "PaddleDetection DeformableConvV2, paddle.vision.ops.DeformConv2D"

    def matches(self, module: nn.Module) -> bool:
        name = class_name(module)
        if name == "DeformableConvV2":
            return hasattr(module, "conv_offset") and hasattr(module, "conv_dcn")
        return name == "DeformConv2D" and hasattr(module, "weight")

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        if class_name(module) == "DeformConv2D":
            dcn = module
            offset_conv = None
        else:
            dcn, offset_conv = module.conv_dcn, module.conv_offset
        # Paddle layers keep their configuration in underscored attributes.
        def config(name, default=None):
            return first_attr(dcn, (name, f"_{name}"), default)

        layer = build_canonical(
            path, dcn.weight, getattr(dcn, "bias", None), config("stride"), config("padding"), config("dilation"),
            config("groups", 1), config("deformable_groups", 1), modulated=True, offset_conv=offset_conv,
        )
        return Converted(layer, "conv_dcn -> weight, conv_offset kept (undilated)" if offset_conv else "offsets stay inputs")

    def recognize(self, keys):
        return sorted(set(owners(keys, "conv_dcn.weight", "conv_offset.weight"))
                      | set(owners(keys, "conv_offset.weight", "conv.weight", absent=("weight",))))

    def remap_state_dict(self, state, options):
        out = {}
        for key, value in state.items():
            for old, new in PADDLE_RENAMES.items():
                if key.endswith(old):
                    key = key[: -len(old)] + new
            key = ".".join(part for part in key.split(".") if part != "conv_dcn")
            out[key] = value
        # ConvNormLayer keeps the offset conv beside the DCN (`conv`): move it inside.
        for key in list(out):
            for leaf in ("weight", "bias"):
                suffix = f".conv_offset.{leaf}"
                owner = key[: -len(suffix)]
                if key.endswith(suffix) and f"{owner}.conv.weight" in out and f"{owner}.weight" not in out:
                    out[f"{owner}.conv.conv_offset.{leaf}"] = out.pop(key)
        return out
