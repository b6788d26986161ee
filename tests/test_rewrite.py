"""rewrite_onnx / dcn-deploy rewrite: custom <-> standard on exported and hand-built graphs."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cases import Case
from graphs import run_model, single_node_model
from onnx import helper

from dcn_deploy import CUSTOM_DOMAIN, CUSTOM_OP_TYPE
from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.onnx.recipes import export_recipe
from dcn_deploy.onnx.rewrite import RewriteError, rewrite_onnx

pytestmark = pytest.mark.custom_op


def test_rewrite_both_ways_keeps_outputs(tmp_path):
    custom_path = tmp_path / "custom.onnx"
    export_recipe("demo", custom_path, seed=1, input_shape=(1, 3, 32, 48))
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 24)).astype(np.float32)
    custom_out = ort_session(custom_path).run(None, {"x": x})[0]

    standard, count = rewrite_onnx(custom_path, to="standard", output=tmp_path / "standard.onnx")
    assert count == 3
    assert not any(n.domain == CUSTOM_DOMAIN for n in standard.graph.node)
    assert not any(e.domain == CUSTOM_DOMAIN for e in standard.opset_import)
    assert not any(a.name.startswith("plugin_") for n in standard.graph.node for a in n.attribute)
    native = ort.InferenceSession(str(tmp_path / "standard.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(native.run(None, {"x": x})[0], custom_out, rtol=0, atol=1e-5)

    back, count = rewrite_onnx(tmp_path / "standard.onnx", to="custom", output=tmp_path / "back.onnx")
    assert count == 3
    original = onnx.load(str(custom_path))
    assert [onnx.helper.printable_node(n) for n in back.graph.node] == [
        onnx.helper.printable_node(n) for n in original.graph.node
    ]
    np.testing.assert_array_equal(ort_session(tmp_path / "back.onnx").run(None, {"x": x})[0], custom_out)


def test_standard_node_with_defaults_omitted_gets_every_attribute(tmp_path):
    """As third-party exporters write it: no kernel_shape, no defaults; W an initializer."""
    case = Case("defaults", pads=(0, 0, 0, 0), seed=5)
    arrays = case.make()
    model = single_node_model(case, "standard", attributes={})
    weight = model.graph.input.pop(1)
    model.graph.initializer.append(onnx.numpy_helper.from_array(arrays["W"], weight.name))
    expected = run_model(model, dict(arrays, W=None), custom_op=False)

    rewritten, count = rewrite_onnx(model, to="custom")
    assert count == 1
    node = rewritten.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert (node.op_type, node.domain) == (CUSTOM_OP_TYPE, CUSTOM_DOMAIN)
    assert attrs["kernel_shape"] == [3, 3] and attrs["pads"] == [0, 0, 0, 0] and attrs["group"] == 1
    got = run_model(rewritten, dict(arrays, W=None), custom_op=True)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_rewrite_errors_name_the_node(tmp_path):
    case = Case("errors")
    model = single_node_model(case, "standard", attributes={}, node_name="paddle_dcn_7")
    model.graph.input[1].type.tensor_type.shape.dim[2].dim_param = "k"  # weight shape unknown
    with pytest.raises(RewriteError, match="paddle_dcn_7.*kernel_shape"):
        rewrite_onnx(model, to="custom")

    old = single_node_model(case, "custom")
    old.opset_import[0].version = 17
    with pytest.raises(RewriteError, match="opset 17"):
        rewrite_onnx(old, to="standard")
    with pytest.raises(ValueError, match="'to' must be"):
        rewrite_onnx(single_node_model(case, "custom"), to="tensorrt")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        rewrite_onnx(tmp_path / "missing.onnx")


def _with_weight_initializer(model: onnx.ModelProto, weight: np.ndarray) -> onnx.ModelProto:
    """The case's W as an initializer (as exported models have it) instead of a graph input."""
    kept = [i for i in model.graph.input if i.name != "W"]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.append(onnx.numpy_helper.from_array(weight, "W"))
    return model


def test_mask_without_bias_gets_a_zero_bias_for_tensorrt():
    """TensorRT's parser gives a plugin a null tensor for an empty optional input, so a custom
    node with a mask but no bias gets an all-zero B initializer (same outputs)."""
    case = Case("mask_no_bias", bias=False, mask=True, seed=41)
    arrays = case.make()
    standard = _with_weight_initializer(single_node_model(case, kind="standard", arrays=arrays), arrays["W"])
    assert list(standard.graph.node[0].input)[3] == ""
    custom, _ = rewrite_onnx(copy.deepcopy(standard), to="custom")
    node = custom.graph.node[0]
    bias = next(i for i in custom.graph.initializer if i.name == node.input[3])
    assert node.input[3] == "dcn_under_test.zero_bias"
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(bias), np.zeros(case.m, np.float32))
    inputs = {k: v for k, v in arrays.items() if k != "W"}
    expected = run_model(standard, inputs, custom_op=False)
    np.testing.assert_allclose(run_model(custom, inputs, custom_op=True), expected, rtol=0, atol=1e-5)


def test_standard_rewrite_of_a_float16_graph_casts_float32_offsets():
    """Standard DeformConv has one type for all inputs; the fp16 exporter keeps offsets float32."""
    case = Case("fp16_mixed", seed=42)
    arrays = case.make()
    arrays = {k: (v.astype(np.float16) if k in ("X", "W", "B") and v is not None else v) for k, v in arrays.items()}
    model = single_node_model(case, kind="custom", arrays=arrays)
    for graph_input in model.graph.input:
        if graph_input.name in ("offset", "mask"):
            graph_input.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    standard, count = rewrite_onnx(model, to="standard")
    assert count == 1
    assert [n.op_type for n in standard.graph.node] == ["Cast", "Cast", "DeformConv"]
    assert [n.input[0] for n in standard.graph.node[:2]] == ["offset", "mask"]
    onnx.checker.check_model(standard, full_check=True)


def test_a_model_onnx_runtime_runs_is_accepted_though_the_checker_refuses_it():
    """A graph output without a type: the ONNX checker refuses it, ONNX Runtime runs it, and so must
    rewrite_onnx (it checks such outputs with their inferred type). A broken model is still refused."""
    case = Case("untyped output", seed=6)
    arrays = case.make()
    model = single_node_model(case, "standard", arrays=arrays)
    model.graph.output[0].ClearField("type")
    with pytest.raises(onnx.checker.ValidationError, match="'type'"):
        onnx.checker.check_model(model)
    expected = run_model(model, arrays, custom_op=False)

    custom, count = rewrite_onnx(copy.deepcopy(model), to="custom")
    assert count == 1 and custom.graph.node[0].domain == CUSTOM_DOMAIN
    np.testing.assert_allclose(run_model(custom, arrays, custom_op=True), expected, rtol=0, atol=1e-5)
    standard, count = rewrite_onnx(custom, to="standard")
    assert count == 1 and not any(e.domain == CUSTOM_DOMAIN for e in standard.opset_import)
    np.testing.assert_allclose(run_model(standard, arrays, custom_op=False), expected, rtol=0, atol=1e-5)

    broken = copy.deepcopy(model)
    broken.graph.output[0].name = "nowhere"  # no node makes it: ONNX Runtime refuses it too
    with pytest.raises(ValueError, match="not a valid ONNX model.*nowhere"):
        rewrite_onnx(broken, to="custom")
