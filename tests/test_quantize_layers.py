"""INT8 control per layer: the module paths export records, ``--keep-float`` by node, DCN node or PyTorch
layer name (the kept layer really float, its input too), one-layer-at-a-time sensitivity with a suggestion
that holds when applied, and quantize on a model without DCN layers (plain Q/DQ, with a note)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import dcn_deploy
from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.layers import layer_table, resolve_keep_float
from dcn_deploy.onnx.model_info import get_metadata, recorded_layers
from dcn_deploy.onnx.quantize import calibrate, quantize_onnx, synthetic_calibration
from dcn_deploy.onnx.rewrite import rewrite_onnx
from dcn_deploy.parity.sensitivity import LayerError, SensitivityReport, layer_sensitivity, suggested_names
from dcn_deploy.parity.validate import compare_arrays

pytestmark = pytest.mark.custom_op
runner = CliRunner()
SHAPE = (1, 3, 16, 16)


class Block(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.dcn = dcn_deploy.DeformConv2d(channels, channels, 3, padding=1)
        torch.nn.init.normal_(self.dcn.conv_offset.weight, std=0.1)

    def forward(self, x):
        return torch.relu(self.dcn(torch.relu(self.conv1(x))))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.backbone = torch.nn.Sequential(Block(8), Block(8))
        self.head = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.backbone(torch.relu(self.stem(x))))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = Net().eval()
    path = tmp_path_factory.mktemp("layers") / "net.onnx"
    proto = dcn_deploy.export_onnx(model, (torch.randn(SHAPE),), path)
    return path, proto


def by_layer(proto) -> dict[str, str]:
    return {layer: node for node, layer in recorded_layers(proto).items()}


def test_export_records_module_paths_past_the_stripping(exported):
    _, proto = exported
    assert json.loads(get_metadata(proto)["dcn_nodes"]) == ["backbone.0.dcn", "backbone.1.dcn"]  # module paths
    assert not any(p.key.startswith("pkg.") for n in proto.graph.node for p in n.metadata_props)  # stripped
    layers = by_layer(proto)
    assert {"stem", "backbone.0.conv1", "backbone.0.dcn", "backbone.0.dcn.conv_offset", "backbone.1.conv1", "backbone.1.dcn.conv_offset",
            "backbone.1.dcn", "head"} == set(layers)
    table = layer_table(proto)  # what inspect lists: offset convs are not quantizable
    assert [(e["op_type"], e["layer"]) for e in table] == [
        ("Conv", "stem"), ("Conv", "backbone.0.conv1"), ("DCN", "backbone.0.dcn"), ("Conv", "backbone.1.conv1"),
        ("DCN", "backbone.1.dcn"), ("Conv", "head")]


def test_keep_float_names_resolve_to_nodes(exported):
    _, proto = exported
    layers = by_layer(proto)
    assert resolve_keep_float(proto, ["backbone.1.dcn"]) == ["backbone.1.dcn"]
    assert resolve_keep_float(proto, ["head"]) == [layers["head"]]
    assert resolve_keep_float(proto, [layers["stem"]]) == [layers["stem"]]  # a node name as it stands
    # a parent module: all its quantizable nodes, not the offset conv
    assert resolve_keep_float(proto, ["backbone.0"]) == [layers["backbone.0.conv1"], "backbone.0.dcn"]
    with pytest.raises(ValueError, match=r"--keep-float backbone\.0\.dnc: no such node or layer .*'backbone\.0\.dcn'"
                                         r".*dcn-deploy inspect MODEL"):
        resolve_keep_float(proto, ["backbone.0.dnc"])
    with pytest.raises(ValueError, match="computes DCN offsets/masks, which are never quantized"):
        resolve_keep_float(proto, [layers["backbone.0.dcn.conv_offset"]])
    relu = next(n.name for n in proto.graph.node if n.op_type == "Relu")
    with pytest.raises(ValueError, match=f"--keep-float {relu}: a Relu node, which quantize does not quantize"):
        resolve_keep_float(proto, [relu])


def test_a_kept_dcn_layer_is_a_float_dcn_node_with_float_input(exported):
    _, proto = exported
    samples = synthetic_calibration(proto, 2)
    result = quantize_onnx(proto, samples, keep_float=["backbone.1.dcn", "head"])
    model = result.model
    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name: i for i in model.graph.initializer}
    kept = nodes["backbone.1.dcn"]
    assert schema.is_custom_node(kept) and producer[kept.input[0]].op_type == "Relu"
    assert initializers[kept.input[1]].data_type == TensorProto.FLOAT
    assert nodes["backbone.0.dcn"].op_type == schema.INT8_OP_TYPE
    assert [d["name"] for d in result.dcn_nodes] == ["backbone.0.dcn"]
    head = nodes[by_layer(proto)["head"]]
    assert all(producer[i].op_type not in ("DequantizeLinear", "QuantizeLinear") for i in head.input if i in producer)
    assert json.loads(get_metadata(model)["keep_float"]) == sorted(["backbone.1.dcn", by_layer(proto)["head"]])
    # it runs, and keeping layers float moves the output toward the float model
    feeds = samples[0]
    float_out = ort_session(proto.SerializeToString()).run(None, feeds)[0]
    every = quantize_onnx(proto, samples).model
    rel = [compare_arrays(ort_session(m.SerializeToString()).run(None, feeds)[0], float_out)[2] for m in (every, model)]
    assert 0 < rel[1] < rel[0]


def test_sensitivity_suggestion_holds_when_applied(exported):
    _, proto = exported
    samples = synthetic_calibration(proto, 3)
    calibration = calibrate(proto, samples)
    full = layer_sensitivity(calibration, samples, target=1.0)
    assert full.suggested == [] and len(full.layers) == 6  # stem, 2 x (conv1, dcn), head
    worst = [e.worst for e in full.layers]
    assert worst == sorted(worst, reverse=True) and min(worst) > 0
    target = 0.5 * max(full.all_quantized.values())  # needs at least one layer kept float
    report = layer_sensitivity(calibration, samples, target=target)
    assert report.suggested and report.suggested == [e.node for e in report.layers[:len(report.suggested)]]
    assert max(report.suggested_rel_l2.values()) <= target
    # applied through the public path, by layer name: the same error, under the target
    model = quantize_onnx(proto, samples, keep_float=suggested_names(report)).model
    session, float_session = ort_session(model.SerializeToString()), ort_session(proto.SerializeToString())
    got = np.concatenate([session.run(None, s)[0].ravel() for s in samples])
    want = np.concatenate([float_session.run(None, s)[0].ravel() for s in samples])
    assert compare_arrays(got, want)[2] == pytest.approx(max(report.suggested_rel_l2.values()), rel=1e-6)


def test_cli_sensitivity_json_and_argument_errors(exported, tmp_path):
    path, proto = exported
    env = {"COLUMNS": "200"}
    result = runner.invoke(app, ["quantize", str(path), "--synthetic", "2", "--sensitivity", "--json",
                                 str(tmp_path / "s.json")], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert [e["layer"] for e in report["layers"]] and set(e["layer"] for e in report["layers"]) == {
        "stem", "backbone.0.conv1", "backbone.0.dcn", "backbone.1.conv1", "backbone.1.dcn", "head"}
    assert "every layer quantized" in result.output and "backbone.1.dcn" in result.output
    assert not list(tmp_path.glob("*.onnx"))  # no -o: the report only
    for args, message in (
        (["--synthetic", "2"], "give -o/--output FILE (or --sensitivity"),
        (["--synthetic", "2", "-o", str(tmp_path / "q.onnx"), "--json", str(tmp_path / "j.json")],
         "--json and --target go with --sensitivity"),
        (["--calib", str(tmp_path), "--shape", "1x3x8x8", "-o", str(tmp_path / "q.onnx")],
         "--shape goes with --synthetic"),
    ):
        result = runner.invoke(app, ["quantize", str(path), *args], env=env)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def _conv_model(path) -> None:
    """A Conv + Relu model with dynamic batch/height/width and no dcn_deploy metadata (another exporter's)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10), str(path))


def test_quantize_without_dcn_layers_is_plain_static_quantization(tmp_path):
    _conv_model(tmp_path / "conv.onnx")
    out = tmp_path / "q.onnx"
    env = {"COLUMNS": "300"}
    result = runner.invoke(app, ["quantize", str(tmp_path / "conv.onnx"), "--synthetic", "2", "-o", str(out)], env=env)
    assert result.exit_code == 2 and "give the shapes (dcn-deploy quantize --shape NxCxHxW, one per input)" in \
        " ".join(result.output.split()), result.output
    result = runner.invoke(app, ["quantize", str(tmp_path / "conv.onnx"), "--synthetic", "2", "--shape", "1x3x8x8",
                                 "-o", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "note: the model has no DCN layer: plain ONNX Runtime static quantization" in " ".join(result.output.split())
    model = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert get_metadata(model)["precision"] == "int8"
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = ort_session(str(tmp_path / "conv.onnx")).run(None, {"x": x})[0]
    got = ort_session(str(out)).run(None, {"x": x})[0]
    assert 0 < compare_arrays(got, want)[2] < 0.1  # int8 input and weights of one 27-tap conv: a few percent


def test_a_model_rewritten_to_standard_quantizes_and_keeps_its_float_dcn_standard(exported):
    """Issue 19: `rewrite --to standard` then `quantize` failed with "no range for input
    'relu_1_DequantizeLinear_Output'" (the offset convs of standard nodes were quantized, and ONNX Runtime
    routed the DCN input through their Q/DQ pair)."""
    _, proto = exported
    standard, count = rewrite_onnx(onnx.ModelProto.FromString(proto.SerializeToString()), to="standard")
    assert count == 2 and get_metadata(standard)["node_kind"] == "standard"
    samples = synthetic_calibration(standard, 2)
    model = quantize_onnx(standard, samples, keep_float=["backbone.1.dcn"]).model
    nodes = {n.name: n for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    assert nodes["backbone.1.dcn"].op_type == schema.STANDARD_OP_TYPE
    assert nodes["backbone.0.dcn"].op_type == schema.INT8_OP_TYPE
    assert producer[producer[nodes["backbone.0.dcn"].input[0]].input[0]].op_type == "Relu"  # Q of the float tensor
    offset_convs = [by_layer(proto)[f"backbone.{k}.dcn.conv_offset"] for k in (0, 1)]
    for name in offset_convs:  # sampling positions never quantized
        assert all(producer[i].op_type != "DequantizeLinear" for i in nodes[name].input if i in producer)
    float_out = ort_session(proto.SerializeToString()).run(None, samples[0])[0]
    assert compare_arrays(ort_session(model.SerializeToString()).run(None, samples[0])[0], float_out)[2] < 2e-2


def _unnamed_model() -> onnx.ModelProto:
    """Conv -> Relu -> (offset Conv) -> standard DeformConv -> Conv, no node named, the DeformConv with
    only kernel_shape-free defaults (no strides, pads, dilations, group, offset_group): what a hand-made or
    other exporter's graph may be."""
    rng = np.random.default_rng(0)

    def weight(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w_off"], ["offset"]),
        helper.make_node("DeformConv", ["r", "w_dcn", "offset"], ["d"]),
        helper.make_node("Conv", ["d", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "unnamed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight("w1", 4, 3, 3, 3), weight("w_off", 18, 4, 3, 3, scale=0.05), weight("w_dcn", 5, 4, 3, 3),
         weight("w2", 2, 5, 1, 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def test_unnamed_nodes_and_default_attributes_quantize_like_named_ones():
    model = _unnamed_model()
    samples = synthetic_calibration(model, 4)
    quantized = quantize_onnx(model, samples).model
    nodes = list(quantized.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    # Both data Convs read Q/DQ input (an empty name excluded every unnamed Conv before); the offset Conv stays float.
    quantized_convs = [n for n in convs if producer.get(n.input[0]) is not None
                       and producer[n.input[0]].op_type == "DequantizeLinear"]
    assert len(convs) == 3 and len(quantized_convs) == 2, [(n.name, n.input[0]) for n in convs]
    int8 = [n for n in nodes if n.op_type == schema.INT8_OP_TYPE]
    assert len(int8) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in int8[0].attribute}
    assert attrs["strides"] == [1, 1] and attrs["pads"] == [0, 0, 0, 0] and attrs["kernel_shape"] == [3, 3]
    x = samples[0]["x"]
    float_y = ort_session(model.SerializeToString()).run(None, {"x": x})[0]
    int8_y = ort_session(quantized.SerializeToString()).run(None, {"x": x})[0]
    assert compare_arrays(int8_y, float_y)[2] < 5e-2  # rel L2


def test_a_suggested_layer_name_keeps_only_the_measured_node():
    # "head" is also the parent of "head.extra": --keep-float head would keep both float, so the
    # suggestion names the node; "neck" means its node alone and is suggested by its layer name.
    layers = [LayerError("conv_head", "Conv", "head", {"y": 0.3}), LayerError("conv_extra", "Conv", "head.extra", {"y": 0.1}),
              LayerError("dcn_neck", "DCN", "neck", {"y": 0.2}), LayerError("conv_x", "Conv", "", {"y": 0.05})]
    report = SensitivityReport("max", 4, 1e-3, {"y": 0.5}, layers, suggested=["conv_head", "dcn_neck", "conv_x"])
    assert suggested_names(report) == ["conv_head", "neck", "conv_x"]
    report.suggested = ["conv_extra"]
    assert suggested_names(report) == ["head.extra"]
