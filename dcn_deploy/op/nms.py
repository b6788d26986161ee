"""ONNX ``NonMaxSuppression`` as one PyTorch custom op, ``torch.ops.dcn_deploy.non_max_suppression``.

A detector calls :func:`non_max_suppression` in its forward: eagerly it runs the ONNX operator's exact
selection rule (below) in PyTorch, in any float dtype (the float64 parity reference included); while
``torch.onnx.export`` traces, it is one node that ``dcn_deploy.onnx.export`` translates into one standard
``NonMaxSuppression`` node (ONNX Runtime runs it natively, TensorRT's ONNX parser imports it as its NMS layer).

=======================  ======================================================================
inputs                   ``boxes`` ``[B, N, 4]`` as two opposite corners (``center_point_box=0``:
                         the corner order does not matter, each box is normalised to min/max),
                         ``scores`` ``[B, C, N]``
selection, per (b, c)    candidates with ``score > score_threshold`` (strict), in descending
                         score order, ties by lower box index; a candidate is kept unless its IoU
                         with an already kept box of the same (b, c) is ``> iou_threshold``
                         (strict); at most ``max_output_boxes_per_class`` kept
IoU                      no +1 pixel; a pair with zero intersection or a box of zero area never
                         suppresses (ONNX Runtime's ``SuppressByIOU``)
output                   ``[S, 3]`` int64 ``(batch, class, box)`` rows, batch-major, then class,
                         then selection order (TensorRT may order rows differently: sort by score
                         downstream, as :mod:`export.retinanet_r50_fpn_dconv` does)
=======================  ======================================================================
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _corners(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_min, y_min, x_max, y_max and area of each box (any corner order)."""
    x_min, x_max = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y_min, y_max = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    return x_min, y_min, x_max, y_max, (x_max - x_min) * (y_max - y_min)


def _suppressed_by(corners, i: int, iou_threshold: float) -> np.ndarray:
    """``[n]`` bool: which boxes box ``i`` suppresses, by ONNX Runtime's rule (one row at a time: memory
    grows with the candidates, not with their square)."""
    x_min, y_min, x_max, y_max, area = corners
    width = np.maximum(0, np.minimum(x_max[i], x_max) - np.maximum(x_min[i], x_min))
    height = np.maximum(0, np.minimum(y_max[i], y_max) - np.maximum(y_min[i], y_min))
    intersection = width * height
    union = area[i] + area - intersection
    valid = (intersection > 0) & (area[i] > 0) & (area > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return valid & (intersection / np.where(valid, union, 1) > iou_threshold)


@torch.library.custom_op("dcn_deploy::non_max_suppression", mutates_args=())
def non_max_suppression(boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int, iou_threshold: float,
                        score_threshold: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` (``center_point_box=0``); see the module docstring for the exact rule."""
    if boxes.dim() != 3 or boxes.shape[2] != 4 or scores.dim() != 3 or scores.shape[0] != boxes.shape[0] \
            or scores.shape[2] != boxes.shape[1]:
        raise ValueError(f"non_max_suppression: boxes must be [B, N, 4] and scores [B, C, N], got "
                         f"{list(boxes.shape)} and {list(scores.shape)}")
    boxes_np = boxes.detach().cpu().numpy()
    scores_np = scores.detach().cpu().numpy()
    selected: list[tuple[int, int, int]] = []
    for b in range(scores_np.shape[0]):
        for c in range(scores_np.shape[1]):
            candidates = np.flatnonzero(scores_np[b, c] > score_threshold)
            if max_output_boxes_per_class <= 0 or candidates.size == 0:
                continue
            # descending score, ties by lower index: a stable sort of the negated scores
            order = candidates[np.argsort(-scores_np[b, c, candidates], kind="stable")]
            corners = _corners(boxes_np[b, order])
            suppressed = np.zeros(order.size, dtype=bool)
            kept = 0
            for i in range(order.size):
                if suppressed[i]:
                    continue
                selected.append((b, c, int(order[i])))
                kept += 1
                if kept == max_output_boxes_per_class:
                    break
                suppressed |= _suppressed_by(corners, i, iou_threshold)
    return torch.tensor(selected, dtype=torch.int64, device=boxes.device).reshape(-1, 3)


@non_max_suppression.register_fake
def _(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.int64)
