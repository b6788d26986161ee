"""export/retinanet_r50_fpn_dconv.py: mmdetection's key set loads strictly from a checkpoint as mmdetection
saves it (``meta`` with numpy values + ``state_dict``), the whole detector (anchors, decoding, NMS) exports
with dynamic batch and size, and ONNX Runtime matches PyTorch before NMS and after it; ONNX
``NonMaxSuppression``'s rule as ``dcn_deploy.op.nms`` implements it is the one ONNX Runtime runs.

The detector is exported once per module at 1x3x192x192 (no level of size 1, so nothing is specialised to it)
and run at smaller sizes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from key_lists import read_key_shapes

from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.convert.checkpoints import load_weights
from dcn_deploy.onnx.recipes import export_recipe, load_recipe, reference_for
from dcn_deploy.op.nms import non_max_suppression

pytestmark = pytest.mark.custom_op

KEYS = Path(__file__).parent / "data" / "retinanet_r50_fpn_dconv_keys.txt"
RECIPE = "retinanet_r50_fpn_dconv"
CLASSES = tuple(f"class{i}" for i in range(80))


def mmdet_reference_keys() -> dict[str, tuple[int, ...]]:
    """The keys and shapes mmdetection saves for this model (tests/data, from mmdet's naming rules)."""
    return read_key_shapes(KEYS)


def mmdet_checkpoint(seed: int = 3) -> dict:
    """A checkpoint as mmdetection 3.x's runner (after publish_model) writes it: ``meta`` with numpy scalars
    and arrays beside strings, and ``state_dict``; the weights are the recipe's for another seed, so a load
    that does not happen shows."""
    state = {key: value.clone() for key, value in load_recipe(RECIPE).build(seed=seed).state_dict().items()}
    meta = {"epoch": np.int64(12), "iter": np.int64(87960), "mmdet_version": "3.3.0", "seed": np.int64(seed),
            "dataset_meta": {"classes": CLASSES, "palette": np.zeros((80, 3), dtype=np.uint8)},
            "experiment_name": "retinanet_r50_fpn_dconv_c3-c5_1x_coco"}
    return {"meta": meta, "state_dict": state}


def test_recipe_has_exactly_mmdetections_keys_and_shapes():
    reference = mmdet_reference_keys()
    assert len(reference) == 380 and sum(".conv2.conv_offset." in k for k in reference) == 26
    for recipe in (RECIPE, f"{RECIPE}_prenms"):  # the detector, and the same model up to NMS
        model = load_recipe(recipe).build(seed=0)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference, recipe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("retinanet") / "retinanet_r50_fpn_dconv_c3-c5_1x_coco.pth"
    torch.save(mmdet_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("retinanet_onnx") / "retinanet.onnx"
    export_recipe(RECIPE, path, weights=str(checkpoint), input_shape=(1, 3, 192, 192), dynamic=True)
    return path


def _with_nms_inputs(path: Path, out: Path) -> Path:
    """The model with the NonMaxSuppression node's boxes and scores as extra outputs."""
    model = onnx.load(str(path))
    (nms,) = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    for name in nms.input[:2]:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    onnx.save(model, str(out))
    return out


def _rows(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes, scores[:, None], labels[:, None].astype(np.float32)], axis=1)


def _assert_same_rows(got: np.ndarray, expected: np.ndarray, window: int = 3) -> None:
    """Rows ``(x1, y1, x2, y2, score, label)`` equal at float32 precision (boxes 1e-3 px, scores 1e-5, labels
    exactly), position by position, except that rows whose scores are tied within float32 rounding (1e-6) may
    trade places: a top-k of the same scores computed in two runtimes may order such a pair either way."""
    assert got.shape == expected.shape

    def same(a, b):
        return np.abs(a[:4] - b[:4]).max() < 1e-3 and abs(a[4] - b[4]) < 1e-5 and a[5] == b[5]

    moved = [i for i in range(len(got)) if not same(got[i], expected[i])]
    assert len(moved) <= max(2, len(got) // 100), f"{len(moved)} rows differ, first {moved[:10]}"
    for i in moved:
        near = [j for j in range(max(0, i - window), min(len(got), i + window + 1)) if same(got[i], expected[j])]
        assert near and all(abs(expected[j][4] - expected[i][4]) < 1e-6 for j in near), (i, got[i], expected[i])


def test_checkpoint_loads_strictly_and_onnx_runtime_matches_pytorch_before_and_after_nms(
        checkpoint, exported, tmp_path):
    proto = onnx.load(str(exported))
    assert [n.op_type for n in proto.graph.node].count("NonMaxSuppression") == 1
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str), dims
    model, _ = reference_for(proto)
    released = load_weights(checkpoint)  # the loader export used: meta's numpy values allowed, nothing run
    loaded = model.state_dict()
    for key in ("backbone.layer3.2.conv2.conv_offset.weight", "bbox_head.retina_cls.weight",
                "neck.fpn_convs.3.conv.bias"):
        assert torch.equal(loaded[key], released[key]), key
    session = ort_session(_with_nms_inputs(exported, tmp_path / "with_nms_inputs.onnx"))
    generator = torch.Generator().manual_seed(0)
    for shape in ((1, 3, 128, 128), (2, 3, 128, 96)):
        x = torch.randn(*shape, generator=generator)
        dets, labels, boxes, class_scores = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            expected_boxes, expected_scores = (t.numpy() for t in model.candidates(x))
            expected_dets, expected_labels = (t.numpy() for t in model(x))
        # before NMS: the same (anchor, class) pairs, boxes and scores at float32 precision
        assert boxes.shape == expected_boxes.shape and class_scores.shape == expected_scores.shape
        for b in range(shape[0]):
            _assert_same_rows(_rows(boxes[b], class_scores[b].max(0), class_scores[b].argmax(0)),
                              _rows(expected_boxes[b], expected_scores[b].max(0), expected_scores[b].argmax(0)))
        # after NMS: every image has detections, the same ones
        assert dets.shape == (shape[0], 100, 5) and labels.shape == (shape[0], 100)
        assert (expected_labels >= 0).sum(1).min() > 10
        for b in range(shape[0]):
            _assert_same_rows(_rows(dets[b, :, :4], dets[b, :, 4], labels[b]),
                              _rows(expected_dets[b, :, :4], expected_dets[b, :, 4], expected_labels[b]))
        padding = labels < 0
        assert (dets[padding] == 0).all() and (dets[~padding][:, 4] > 0.05).all()
        assert (np.diff(dets[..., 4], axis=1) <= 0).all()  # by descending score
    # each image of a batch is detected on its own
    single = session.run(None, {"x": x[:1].numpy()})
    _assert_same_rows(_rows(single[0][0, :, :4], single[0][0, :, 4], single[1][0]),
                      _rows(dets[0, :, :4], dets[0, :, 4], labels[0]))


def test_validate_float64_parity(exported):
    result = CliRunner().invoke(app, ["validate", str(exported), "-n", "1", "--shape", "1x3x128x128"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.strip("│ ").startswith(("dets", "labels"))]
    assert len(rows) == 2 and all("pass" in row for row in rows), result.output


def test_a_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    data = mmdet_checkpoint()
    state = data["state_dict"]
    del state["bbox_head.retina_reg.bias"]
    state["bbox_head.fc.weight"] = torch.zeros(1)
    state["bbox_head.retina_cls.weight"] = torch.zeros(729, 256, 3, 3)  # 81 classes
    path = tmp_path / "bad.pth"
    torch.save(data, path)
    result = CliRunner().invoke(app, ["export", "--recipe", RECIPE, "--weights", str(path), "-o",
                                      str(tmp_path / "x.onnx")], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "does not fit recipe retinanet_r50_fpn_dconv" in text
    assert "1 missing: ['bbox_head.retina_reg.bias']" in text and "1 unexpected: ['bbox_head.fc.weight']" in text
    assert "bbox_head.retina_cls.weight (729, 256, 3, 3) (model: (720, 256, 3, 3))" in text


def _onnx_nms(boxes: np.ndarray, scores: np.ndarray, max_out: int, iou: float, score: float) -> np.ndarray:
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "score"], ["selected"])],
        "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, list(boxes.shape)),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, list(scores.shape))],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)],
        [helper.make_tensor("max", TensorProto.INT64, [1], [max_out]),
         helper.make_tensor("iou", TensorProto.FLOAT, [1], [iou]),
         helper.make_tensor("score", TensorProto.FLOAT, [1], [score])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"boxes": boxes, "scores": scores})[0]


@pytest.mark.parametrize("max_out, iou, score, least", [(1000, 0.5, 0.05, 40), (3, 0.3, 0.0, 18), (0, 0.5, 0.05, 0)])
def test_nms_op_selects_what_onnx_runtime_selects(max_out, iou, score, least):
    rng = np.random.default_rng(7)
    corners = rng.uniform(0, 60, (2, 200, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(0, 30, (2, 200, 2)).astype(np.float32)], axis=2)
    boxes[:, ::7] = boxes[:, ::7][..., [2, 3, 0, 1]]  # corners given the other way round
    boxes[:, 5::11, 2] = boxes[:, 5::11, 0]  # zero-area boxes
    scores = rng.uniform(0, 1, (2, 3, 200)).astype(np.float32)
    scores[:, :, 10:20] = scores[:, :, 10:11]  # ties, broken by the lower box index
    expected = _onnx_nms(boxes, scores, max_out, iou, score)
    got = non_max_suppression(torch.from_numpy(boxes), torch.from_numpy(scores), max_out, iou, score).numpy()
    assert len(expected) >= least and (max_out > 0 or len(expected) == 0)
    np.testing.assert_array_equal(got, expected)
