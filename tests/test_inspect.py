"""dcn-deploy inspect / inspect_onnx: DCN nodes by flavour, custom ops, I/O, runtimes; clear errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from dcn_deploy.cli import app
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.inspect import RUNTIMES, inspect_onnx
from dcn_deploy.onnx.recipes import export_recipe

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "demo.onnx"
    export_recipe("demo", path, input_shape=(1, 3, 32, 40))
    return path


def _status(report) -> dict[str, str]:
    return {verdict["runtime"]: verdict["status"] for verdict in report["runtimes"]}


def test_demo_model(demo_onnx):
    report = inspect_onnx(demo_onnx)
    assert report["dcn_flavours"] == {"dcn_deploy": 3}
    assert [n["name"] for n in report["dcn_nodes"]] == ["dcn1", "dcn2", "dcn3"]
    dcn2 = report["dcn_nodes"][1]
    assert dcn2["attributes"]["pads"] == [0, 1, 1, 1] and dcn2["attributes"]["group"] == 2
    assert dcn2["weight_shape"] == [32, 16, 3, 3] and dcn2["input_shape"][1] == 32 and dcn2["output_shape"][1] == 32
    assert [n["modulated"] for n in report["dcn_nodes"]] == [True, True, False]
    assert report["other_custom_ops"] == {} and report["precision"] == "fp32"
    assert report["opsets"] == {"ai.onnx": 19, "dcn_deploy": 1}
    assert report["inputs"][0]["name"] == "x" and report["outputs"][0]["name"] == "logits"
    assert _status(report) == {
        "onnxruntime + dcn_deploy library": "yes", "onnxruntime native": "after rewrite",
        "tensorrt + dcn_deploy plugin": "yes", "tensorrt built-in": "after rewrite",
        "tensorrt-rtx + dcn_deploy plugin": "yes",
    }


def test_standard_model_runs_natively_but_not_in_tensorrt_rtx(demo_onnx, tmp_path):
    from dcn_deploy.onnx.rewrite import rewrite_onnx

    standard, _ = rewrite_onnx(demo_onnx, to="standard", output=tmp_path / "std.onnx")
    status = _status(inspect_onnx(tmp_path / "std.onnx"))
    assert status["onnxruntime native"] == "yes" and status["tensorrt built-in"] == "yes"
    assert status["tensorrt-rtx + dcn_deploy plugin"] == "after rewrite"


def _foreign_model(node, extra_nodes=(), domains=()) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "W")
    inputs = [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT16, [1, 4, 16, 16]),
              helper.make_tensor_value_info("offset", onnx.TensorProto.FLOAT16, [1, 18, 16, 16]),
              helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT16, [1, 9, 16, 16])]
    output = helper.make_tensor_value_info("Z", onnx.TensorProto.FLOAT16, None)
    graph = helper.make_graph([node, *extra_nodes], "g", inputs, [output], initializer=[weight])
    opsets = [helper.make_opsetid("", 11)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def test_mmdeploy_model_with_another_custom_op(tmp_path):
    dcn = helper.make_node(schema.MMCV_MODULATED_OP_TYPE, ["X", "offset", "mask", "W"], ["Y"], name="backbone.dcn",
                           domain=schema.MMDEPLOY_DOMAIN, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1,
                           deform_groups=1)
    nms = helper.make_node("TRTBatchedNMS", ["Y"], ["Z"], name="nms", domain=schema.MMDEPLOY_DOMAIN)
    path = tmp_path / "mmdeploy.onnx"
    onnx.save(_foreign_model(dcn, [nms], [schema.MMDEPLOY_DOMAIN]), str(path))
    report = inspect_onnx(path)
    node = report["dcn_nodes"][0]
    assert (node["flavour"], node["domain"], node["dtype"], node["bias"]) == ("mmcv_v2", "mmdeploy", "float16", False)
    assert node["attributes"]["kernel_shape"] == [3, 3] and node["output_shape"] is None
    assert report["other_custom_ops"] == {"mmdeploy::TRTBatchedNMS": 1}
    assert report["precision"] == "fp16"
    verdicts = {v["runtime"]: v for v in report["runtimes"]}
    assert verdicts["onnxruntime + dcn_deploy library"]["status"] == "after rewrite"
    assert "rewrite --to custom" in verdicts["onnxruntime + dcn_deploy library"]["why"]
    assert "opset >= 19 (model has 11)" in verdicts["onnxruntime native"]["why"]
    assert all("mmdeploy::TRTBatchedNMS" in v["why"] for v in verdicts.values())

    result = invoke("inspect", path)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "backbone.dcn mmcv_v2 MMCVModulatedDeformConv2d" in text
    assert "mmdeploy::TRTBatchedNMS" in text and "float16" in text
    for runtime in RUNTIMES:
        assert runtime in text


def test_unknown_deformable_node_is_reported_and_runs_nowhere(tmp_path):
    node = helper.make_node("DeformableConvolution3D", ["X", "offset", "W"], ["Z"], name="other_dcn",
                            domain="com.example")
    path = tmp_path / "other.onnx"
    onnx.save(_foreign_model(node, domains=["com.example"]), str(path))
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dcn_flavours"] == {"unknown": 1}
    assert "looks like a deformable convolution" in report["dcn_nodes"][0]["error"]
    assert set(_status(report).values()) == {"no"}


@pytest.mark.parametrize("content, message", [
    (None, "no ONNX file at"),
    (b"\x08\x07garbage that is no protobuf \xff\xff", "is not a readable ONNX model"),
    (b"", "holds no ONNX graph"),
])
def test_missing_and_corrupt_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    result = invoke("inspect", path)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_rewrite_command_names_the_flavours_it_read(tmp_path):
    dcn = helper.make_node(schema.TENSORRT_PLUGIN_OP_TYPE, ["X", "offset", "mask", "W"], ["Z"], name="trt",
                           stride=[1, 1], padding=[1, 1], dilation=[1, 1], group=1, deformable_group=1)
    model = _foreign_model(dcn)
    model.graph.output[0].type.tensor_type.shape.dim.add().dim_param = "N"  # the checker wants a shape
    path = tmp_path / "trt.onnx"
    onnx.save(model, str(path))
    result = invoke("rewrite", path, "-o", tmp_path / "ours.onnx")
    assert result.exit_code == 0, result.output
    assert "1 nodes rewritten to custom (DCN nodes read: 1 tensorrt)" in " ".join(result.output.split())
    assert inspect_onnx(tmp_path / "ours.onnx")["dcn_flavours"] == {"dcn_deploy": 1}
