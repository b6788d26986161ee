"""CenterNet DLA-34-DCN from a checkpoint with CenterNet's released key set to a served engine, through the
command line as the README's block runs it, at a small input (1x3x64x64; the full 512x512 model is slow on a
2-core CPU): export with --decode (dynamic batch and size), validate against float64 PyTorch, quantize to
INT8 and validate, build with TensorRT-RTX ahead of time (skipped without the rtx extra), serve over HTTP
and bench the server.

Not marked custom_op (so not rerun under ASan+UBSan): the whole-model run would double this test's minute;
the op itself is sanitized by the custom_op tests."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tritonclient.http as httpclient
from serving import ServeProcess
from test_centernet_recipe import centernet_checkpoint
from typer.testing import CliRunner

from dcn_deploy import DeformConv2d
from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.onnx.model_info import get_metadata
from dcn_deploy.onnx.recipes import reference_for

REPO = Path(__file__).resolve().parents[1]
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None
K = 100


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == 0, f"dcn-deploy {' '.join(args)}: exit {result.exit_code}\n{result.output}"
    return " ".join("".join(c if c.isascii() else " " for c in result.output).split())  # tables' lines out


def rtx_build(onnx_path: Path, engine: Path, *args: str) -> dict:
    """``dcn-deploy build --target rtx`` in its own interpreter (an abort inside TensorRT-RTX stays there)."""
    env = {**os.environ, "COLUMNS": "400", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "dcn_deploy.cli", "build", str(onnx_path), "-o", str(engine),
                             "--target", "rtx", *args], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(Path(f"{engine}.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("centernet_deploy")
    torch.save(centernet_checkpoint(), folder / "ctdet_coco_dla_2x.pth")
    cli("export", "--recipe", "centernet_dla34_dcn", "--weights", str(folder / "ctdet_coco_dla_2x.pth"), "--decode",
        "--shape", "1x3x64x64", "-o", str(folder / "centernet_det.onnx"))
    return folder


def test_decoded_export_is_dynamic_and_matches_pytorch_in_onnx_runtime(work):
    model = onnx.load(str(work / "centernet_det.onnx"))
    assert json.loads(get_metadata(model)["recipe_options"]) == {"decode": True, "top_k": K}
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    x_dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert x_dims[1] == 3 and all(isinstance(d, str) for d in (x_dims[0], *x_dims[2:]))
    assert "32*" in x_dims[2] and "32*" in x_dims[3]  # heights and widths: multiples of 32
    assert dims == {"boxes": [x_dims[0], K, 4], "scores": [x_dims[0], K], "classes": [x_dims[0], K]}
    reference, _ = reference_for(model)  # rebuilt with the recorded --decode and the checkpoint
    # one node per DCN layer, named by its module path (as in CenterNet's checkpoint keys)
    assert sorted(n.name for n in model.graph.node if n.op_type == "DcnDeformConv") == sorted(
        name for name, module in reference.named_modules() if isinstance(module, DeformConv2d))
    assert "dla_up.ida_2.proj_1.conv" in json.loads(get_metadata(model)["dcn_nodes"])
    session = ort_session(work / "centernet_det.onnx")
    for shape in ((2, 3, 32, 96),):  # validate (below) checks 1x3x64x64 and 2x3x96x96
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[2]))
        boxes, scores, classes = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            ref_boxes, ref_scores, ref_classes = (t.numpy() for t in reference.double()(x.double()))
        assert boxes.shape == (shape[0], K, 4) and classes.dtype == np.int64
        assert np.all(np.diff(scores, axis=1) <= 0) and scores.min() > 0
        np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(classes, ref_classes)  # the model's peaks are distinct: no ties
        np.testing.assert_allclose(boxes, ref_boxes, rtol=0, atol=1e-3 * np.abs(ref_boxes).max())
        assert np.abs(boxes).max() > shape[3] / 8  # real boxes, in input pixels


@pytest.fixture(scope="module")
def int8_heads(work) -> tuple[Path, str]:
    """The heads export (hm, wh, reg) quantized: its path and what ``quantize`` printed."""
    heads = work / "centernet_heads.onnx"
    cli("export", "--recipe", "centernet_dla34_dcn", "--weights", str(work / "ctdet_coco_dla_2x.pth"),
        "--static", "--shape", "1x3x64x64", "-o", str(heads))
    text = cli("quantize", str(heads), "--synthetic", "2", "-o", str(work / "centernet_heads.int8.onnx"))
    return work / "centernet_heads.int8.onnx", text


def test_validate_quantize_and_validate_int8(work, int8_heads):
    text = cli("validate", str(work / "centernet_det.onnx"), "-n", "1")
    for name, shape in (("boxes", "1x100x4"), ("scores", "1x100"), ("classes", "1x100")):
        assert f"{name} {shape} " in text
    assert "FAIL" not in text and text.count("pass (") == 3
    assert "[[1, 3, 64, 64]] and [[2, 3, 96, 96]]" in text  # the export's shape and a second one (dynamic)

    int8_model, text = int8_heads
    assert "wrote" in text and "16 DcnDeformConvInt8 nodes" in text
    text = cli("validate", str(int8_model), "-n", "1")
    assert "FAIL" not in text and "(onnxruntime-custom-op, int8)" in text and text.count("pass (") == 3
    for name in ("hm 1x80x16x16", "wh 1x2x16x16", "reg 1x2x16x16"):
        assert name in text


@pytest.mark.skipif(not HAVE_RTX, reason="TensorRT-RTX (tensorrt_rtx_bindings) is not installed: ./scripts/setup.sh "
                    "installs it where pip can reach it")
def test_tensorrt_rtx_builds_the_decoded_and_the_int8_model(work, int8_heads):
    info = rtx_build(work / "centernet_det.onnx", work / "centernet_det.plan", "--shapes",
                     "x:1x3x64x64/2x3x96x96/4x3x128x128", "--compute-capability", "SM86")
    assert info["target"] == "rtx" and info["precision"] == "fp32" and len(info["plugin_layers"]) == 16
    assert info["profiles"][0]["max"] == [4, 3, 128, 128]
    info = rtx_build(int8_heads[0], work / "centernet_heads.int8.plan",
                     "--compute-capability", "SM86")
    assert len(info["plugin_layers"]) == 16


def test_serve_and_bench(work):
    model = work / "centernet_det.onnx"
    server = ServeProcess(model, "--model-name", "centernet")
    try:
        client = httpclient.InferenceServerClient(server.address)
        metadata = client.get_model_metadata("centernet")
        assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"boxes": "FP32", "scores": "FP32",
                                                                           "classes": "INT64"}
        x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
        request = httpclient.InferInput("x", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        answer = client.infer("centernet", [request])
        direct = ort_session(model).run(None, {"x": x})
        for name, expected in zip(("boxes", "scores", "classes"), direct):
            np.testing.assert_array_equal(answer.as_numpy(name), expected)
        text = cli("bench", "--serve", server.url, "--input-shape", "1x3x64x64", "--requests", "20",
                   "--concurrency", "1", "--concurrency", "2", "--warmup", "1")
        assert "centernet" in text and text.count(" 20 0 ") == 2  # 20 requests, 0 errors, per level
    finally:
        assert server.stop()
