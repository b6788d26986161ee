"""The CenterNet recipe's ``--decode`` (``CtdetDecode``) against a pure-PyTorch rewrite of CenterNet's own
``ctdet_decode`` (per-class top K, then the top K of those), in PyTorch and exported to ONNX with dynamic
batch and map size in ONNX Runtime; and how a recipe takes its keyword options from the command line."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from typer.testing import CliRunner

from dcn_deploy import cli
from dcn_deploy.cli import app
from dcn_deploy.onnx.export import export_onnx
from dcn_deploy.onnx.recipes import load_recipe, parse_option_args, resolve_options

RECIPE = "centernet_dla34_dcn"
K = 100
SCORE_TOLERANCE = 1e-6  # float32 sigmoid of the same logits
TIE = 1e-5  # scores closer than this may come in either order


def centernet_ctdet_decode(hm: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor, k: int):
    """CenterNet's ctdet_decode (src/lib/models/decode.py: _nms, _topk, the gathers), written anew: boxes in
    output-map coordinates, scores, classes."""
    heat = hm.sigmoid()
    batch, classes, height, width = heat.shape
    heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    class_scores, class_index = heat.reshape(batch, classes, -1).topk(k)  # the top k of every class
    scores, which = class_scores.reshape(batch, -1).topk(k)  # then the top k of those
    labels = which // k
    index = class_index.reshape(batch, -1).gather(1, which)  # pixel index in the map
    ys, xs = (index // width).to(heat.dtype), (index % width).to(heat.dtype)
    offset = reg.reshape(batch, 2, -1).gather(2, index[:, None].expand(-1, 2, -1))
    size = wh.reshape(batch, 2, -1).gather(2, index[:, None].expand(-1, 2, -1))
    xs, ys = xs + offset[:, 0], ys + offset[:, 1]
    boxes = torch.stack([xs - size[:, 0] / 2, ys - size[:, 1] / 2, xs + size[:, 0] / 2, ys + size[:, 1] / 2], 2)
    return boxes, scores, labels


def heads(batch: int, height: int, width: int, seed: int):
    """Trained-like head outputs, with ties: a 2x2 plateau of equal maxima in one class (both kept as
    peaks by the 3x3 max-pool test) and one class's map constant."""
    generator = torch.Generator().manual_seed(seed)
    hm = torch.randn(batch, 80, height, width, generator=generator) * 2 - 3
    hm[:, 5, 2:4, 3:5] = 8.0
    hm[:, 7] = 0.5
    wh = torch.rand(batch, 2, height, width, generator=generator) * 20
    reg = torch.rand(batch, 2, height, width, generator=generator)
    return hm, wh, reg


def check_against_centernet(boxes, scores, classes, hm, wh, reg, down_ratio) -> int:
    """Scores close; where a score is not tied with a neighbour, class and box equal CenterNet's; a tied
    one must be one of CenterNet's tied detections. Returns how many untied detections were compared."""
    ref_boxes, ref_scores, ref_classes = (t.numpy() for t in centernet_ctdet_decode(hm, wh, reg, K))
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=SCORE_TOLERANCE)
    compared = 0
    for n in range(scores.shape[0]):
        gaps = np.abs(np.diff(ref_scores[n]))
        tied = np.zeros(K, bool)
        tied[:-1] |= gaps < TIE
        tied[1:] |= gaps < TIE
        untied = ~tied
        assert untied.sum() > K // 2, "the test heads must have mostly distinct scores"
        np.testing.assert_array_equal(classes[n][untied], ref_classes[n][untied])
        np.testing.assert_allclose(boxes[n][untied], ref_boxes[n][untied] * down_ratio, rtol=1e-5, atol=1e-4)
        for k in np.flatnonzero(tied):
            candidates = np.flatnonzero(np.abs(ref_scores[n] - scores[n, k]) < TIE)
            assert any(classes[n, k] == ref_classes[n, j] and np.allclose(boxes[n, k], ref_boxes[n, j] * down_ratio,
                                                                           atol=1e-4) for j in candidates), (n, k)
        compared += int(untied.sum())
    return compared


def test_decode_matches_centernet_in_pytorch():
    decode = load_recipe(RECIPE).CtdetDecode(K)
    hm, wh, reg = heads(2, 16, 24, seed=0)
    boxes, scores, classes = decode(hm, wh, reg)
    assert boxes.shape == (2, K, 4) and scores.shape == (2, K) and classes.dtype == torch.int64
    assert (scores[:, :4] == torch.sigmoid(torch.tensor(8.0))).all()  # the plateau: four tied peaks first
    assert check_against_centernet(boxes.numpy(), scores.numpy(), classes.numpy(), hm, wh, reg, 4) > 150


def test_decode_exports_with_dynamic_batch_and_size_and_runs_in_onnx_runtime(tmp_path):
    path = tmp_path / "decode.onnx"
    example = heads(1, 16, 16, seed=1)
    model = export_onnx(load_recipe(RECIPE).CtdetDecode(K), example, path, output_names=["boxes", "scores",
                                                                                         "classes"])
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert outputs["classes"].elem_type == onnx.TensorProto.INT64
    assert [d.dim_value for d in outputs["boxes"].shape.dim][1:] == [K, 4]
    assert not outputs["boxes"].shape.dim[0].dim_value  # batch: dynamic
    assert [n.op_type for n in model.graph.node].count("TopK") == 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, height, width, seed in ((1, 16, 16, 2), (3, 12, 20, 3), (2, 32, 8, 4)):
        hm, wh, reg = heads(batch, height, width, seed)
        boxes, scores, classes = session.run(None, {"hm": hm.numpy(), "wh": wh.numpy(), "reg": reg.numpy()})
        assert boxes.shape == (batch, K, 4) and classes.dtype == np.int64
        assert check_against_centernet(boxes, scores, classes, hm, wh, reg, 4) > 0


# ------------------------------------------------------------------ recipe options (the generic mechanism)

def test_recipe_options_are_parsed_checked_and_recorded():
    module = load_recipe(RECIPE)
    assert parse_option_args(module, []) == {"decode": False, "top_k": 100}
    assert parse_option_args(module, ["--decode", "--top-k", "20"]) == {"decode": True, "top_k": 20}
    assert parse_option_args(module, ["--top-k=7", "--no-decode"]) == {"decode": False, "top_k": 7}
    assert resolve_options(module, {"decode": "true"}) == {"decode": True, "top_k": 100}
    with pytest.raises(ValueError, match=r"no option --decod; its options: --decode, --top-k INT"):
        parse_option_args(module, ["--decod"])
    with pytest.raises(ValueError, match="option --top-k takes a value of type int, got 'many'"):
        parse_option_args(module, ["--top-k", "many"])
    with pytest.raises(ValueError, match="option --top-k needs a value"):
        parse_option_args(module, ["--top-k"])
    with pytest.raises(ValueError, match="recipe demo has no option --decode; it takes no options"):
        parse_option_args(load_recipe("demo"), ["--decode"])
    with pytest.raises(ValueError, match="unexpected argument 'stray'"):
        parse_option_args(module, ["stray"])


@pytest.mark.parametrize("args, message", [
    (["--decod"], "recipe centernet_dla34_dcn has no option --decod; its options: --decode, --top-k INT"),
    (["--top-k", "x"], "option --top-k takes a value of type int, got 'x'"),
    (["--shape", "1x3x100x100"], "takes heights and widths that are multiples of 32, got input shape 1x3x100x100"),
    (["--shape", "1x3x32x64"], "a dynamic export needs an example height and width of at least 2 x 32"),
    (["--top-k", "0"], "--top-k must be at least 1, got 0"),
])
def test_export_refuses_bad_recipe_options_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["export", "--recipe", RECIPE, "-o", str(tmp_path / "x.onnx"), *args],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "x.onnx").exists()


def test_recipes_lists_the_options(monkeypatch):
    # The CLI's console is made at import; a wide one keeps each option on one line.
    monkeypatch.setattr(cli, "console", Console(width=1000))
    result = CliRunner().invoke(app, ["recipes"])
    assert result.exit_code == 0, result.output
    assert "--decode: ctdet decoding in the graph" in result.output and "--top-k INT" in result.output
