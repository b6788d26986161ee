"""Export both node kinds, then run them: custom node in our library, standard node natively."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import dcn_deploy
from dcn_deploy import (
    CUSTOM_DOMAIN,
    CUSTOM_OP_TYPE,
    DeformConv2d,
    export_onnx,
    get_metadata,
    rewrite_onnx,
)
from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.recipes import load_recipe

pytestmark = pytest.mark.custom_op


@pytest.fixture(scope="module")
def demo():
    recipe = load_recipe("demo")
    return recipe.build(seed=3), recipe.example_inputs(2, 24, 40)


def dcn_modules(model):
    return [name for name, module in model.named_modules() if isinstance(module, DeformConv2d)]


@pytest.mark.parametrize("kind", ["custom", "standard"])
def test_export_one_node_per_layer_and_run(tmp_path, demo, kind):
    model, inputs = demo
    path = tmp_path / f"demo_{kind}.onnx"
    proto = export_onnx(model, inputs, path, standard_op=kind == "standard")
    if kind == "custom":
        nodes = [n for n in proto.graph.node if n.op_type == CUSTOM_OP_TYPE]
        assert all(n.domain == CUSTOM_DOMAIN for n in nodes)
        for node in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert set(schema.ATTRIBUTES) <= set(attrs)
            assert attrs["plugin_namespace"] == b"dcn_deploy" and attrs["plugin_version"] == b"1"
        session = ort_session(path)
    else:
        nodes = [n for n in proto.graph.node if n.op_type == "DeformConv"]
        assert all(n.domain == "" for n in nodes)
        assert not any(n.domain == CUSTOM_DOMAIN for n in proto.graph.node)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert not any(n.op_type in ("GatherElements", "GridSample") for n in proto.graph.node)
    # One node per layer, named by its module path.
    assert [n.name for n in nodes] == dcn_modules(model)
    assert json.loads(get_metadata(proto)["dcn_nodes"]) == dcn_modules(model)

    # Dynamic batch, height and width: shapes other than the export's run too.
    for shape in [(2, 3, 24, 40), (1, 3, 33, 17), (3, 3, 8, 8)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_static_export_fixes_shapes(tmp_path, demo):
    model, inputs = demo
    proto = export_onnx(model, inputs, tmp_path / "static.onnx", dynamic=False)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(inputs[0].shape)


def test_layer_variants_export_exactly(tmp_path):
    """Every layer option through the custom node: v1/v2, bias, asymmetric pads, groups."""
    torch.manual_seed(0)
    layers = [
        DeformConv2d(4, 6, (3, 2), padding=(1, 0, 2, 1), stride=(2, 1), dilation=(2, 1), groups=2, offset_groups=2),
        DeformConv2d(4, 4, 1, bias=False, modulated=False),
        DeformConv2d(4, 8, 5, padding=2, offset_groups=4),
    ]
    for index, layer in enumerate(layers):
        torch.nn.init.normal_(layer.conv_offset.weight, std=0.5)
        x = torch.randn(2, 4, 11, 9)
        path = tmp_path / f"layer{index}.onnx"
        export_onnx(layer, (x,), path)
        session = ort_session(path)
        with torch.no_grad():
            expected = layer(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max()), layer


def test_layer_rejects_bad_configuration():
    with pytest.raises(ValueError, match="offset_groups=3"):
        DeformConv2d(4, 4, 3, offset_groups=3)
    with pytest.raises(ValueError, match="groups=3"):
        DeformConv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="stride"):
        DeformConv2d(4, 4, 3, stride=0)
    with pytest.raises(ValueError, match="padding"):
        DeformConv2d(4, 4, 3, padding=(1, 2, 3))


def test_zero_initialised_layer_is_a_plain_convolution_times_half():
    torch.manual_seed(1)
    layer = DeformConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 7)
    expected = torch.nn.functional.conv2d(x, layer.weight * 0.5, padding=1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    layer_v1 = DeformConv2d(3, 5, 3, padding=1, modulated=False)
    expected_v1 = torch.nn.functional.conv2d(x, layer_v1.weight, layer_v1.bias, padding=1)
    torch.testing.assert_close(layer_v1(x), expected_v1, rtol=1e-5, atol=1e-5)


def _debug_keys(model: onnx.ModelProto) -> set[str]:
    holders = [model.graph, *model.graph.node, *model.graph.input, *model.graph.output, *model.graph.value_info,
               *model.graph.initializer]
    return {p.key for holder in holders for p in holder.metadata_props}


def test_exported_files_carry_no_debugging_metadata_or_local_paths(tmp_path, demo):
    """The exporter's stack traces name this machine's files; they stay out unless asked for."""
    model, inputs = demo
    package = str(Path(dcn_deploy.__file__).parent).encode()  # the traces name the layer's source file
    clean = export_onnx(model, inputs, tmp_path / "clean.onnx")
    assert not any(key.startswith("pkg.") or key == "namespace" for key in _debug_keys(clean))
    data = (tmp_path / "clean.onnx").read_bytes()
    assert package not in data and b"stack_trace" not in data
    assert get_metadata(clean)["node_kind"] == "custom"  # our own metadata stays
    kept = export_onnx(model, inputs, tmp_path / "kept.onnx", keep_debug_info=True)
    assert "pkg.torch.onnx.stack_trace" in _debug_keys(kept) and package in (tmp_path / "kept.onnx").read_bytes()


def test_rewrite_keeps_the_recorded_node_kind_true(tmp_path, demo):
    model, inputs = demo
    export_onnx(model, inputs, tmp_path / "demo.onnx")
    standard, count = rewrite_onnx(str(tmp_path / "demo.onnx"), to="standard")
    assert count == len(dcn_modules(model)) and get_metadata(standard)["node_kind"] == "standard"
    custom, _ = rewrite_onnx(standard, to="custom")
    assert get_metadata(custom)["node_kind"] == "custom"
