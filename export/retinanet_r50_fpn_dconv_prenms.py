"""``retinanet_r50_fpn_dconv`` up to NMS: the same model, weights and checkpoint loading, with the
NonMaxSuppression node's inputs as outputs (``boxes`` ``[N, K, 4]``, ``scores`` ``[N, 80, K]``; K = the
pre-NMS (anchor, class) pairs of all levels, a pair's score in its class row). For runtimes without an NMS:
TensorRT-RTX 1.7 refuses the full detector ("node_non_max_suppression has no runners"); run NMS (IoU 0.5,
score > 0.05, 100 per image) on these outside.
"""
from __future__ import annotations

from torch import nn

from dcn_deploy.onnx.recipes import load_recipe

_DETECTOR = load_recipe("retinanet_r50_fpn_dconv")

DESCRIPTION = "retinanet_r50_fpn_dconv up to NMS (for runtimes without one, e.g. TensorRT-RTX); outputs boxes, scores"
INPUT_SHAPE = _DETECTOR.INPUT_SHAPE
SIZE_MULTIPLE = _DETECTOR.SIZE_MULTIPLE
OUTPUT_NAMES = ("boxes", "scores")
prepare_weights = _DETECTOR.prepare_weights
example_inputs = _DETECTOR.example_inputs


def build(seed: int = 0, random_offsets: bool = True) -> nn.Module:
    return _DETECTOR.build(seed, random_offsets, model_class=_DETECTOR.RetinaNetCandidates)
