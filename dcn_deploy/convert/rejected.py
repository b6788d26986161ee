"""Layers that look deformable but are not DCNv1/v2, rejected with the reason.

================================  ==================================================
class                             why it is not converted
================================  ==================================================
Keras per-pixel ``ConvOffset2D``  one (dy, dx) per input channel per pixel, edge-
(kastnerkyle deform-conv)         clamped, then an ordinary conv: a resampling of the
                                  feature map, not a per-tap deformable convolution
``DCNv3``, ``DCNv3_pytorch``      softmax-normalised aggregation weights over the taps,
(InternImage)                     channels-last, depthwise + input/output projections,
                                  no per-tap weight matrix: a different operator
``DCNv4``                         like DCNv3 with unnormalised weights and a fused
                                  ``offset_mask`` projection: a different operator
================================  ==================================================
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    UnsupportedLayerError,
    class_name,
)

REASONS = {
    "ConvOffset2D": "the Keras-style per-pixel deformable layer (one offset per input channel and pixel, "
    "edge-clamped, followed by an ordinary conv) is not a DCNv1/v2 layer; export it as GridSample + Conv instead",
    "DCNv3": "DCNv3 (InternImage) is a different operator (softmax-normalised aggregation weights, channels-last, "
    "no per-tap weight matrix) and cannot be expressed as DCNv2",
    "DCNv3_pytorch": "DCNv3 (InternImage) is a different operator (softmax-normalised aggregation weights, "
    "channels-last, no per-tap weight matrix) and cannot be expressed as DCNv2",
    "DCNv4": "DCNv4 is a different operator (unnormalised aggregation weights, fused offset_mask projection, "
    "channels-last) and cannot be expressed as DCNv2",
}


class RejectedConverter(SourceConverter):
    source = "rejected"
    description = "Keras per-pixel deform-conv, DCNv3, DCNv4: rejected with the reason"

    def matches(self, module: nn.Module) -> bool:
        return class_name(module) in REASONS

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        raise UnsupportedLayerError(path, REASONS[class_name(module)])
