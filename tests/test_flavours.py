"""Every DCN node flavour other exporters write, rewritten to the custom and to the standard node,
run in ONNX Runtime and compared with the float64 reference (dcn_deploy/onnx/flavours.py)."""
from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from dcn_deploy import deform_conv2d
from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.flavours import FLAVOUR_NAMES, find_dcn_nodes
from dcn_deploy.onnx.inspect import inspect_onnx
from dcn_deploy.onnx.rewrite import RewriteError, rewrite_onnx

pytestmark = pytest.mark.custom_op

N, C, H, W_IN, M = 2, 4, 9, 11, 6
TOLERANCE = 1e-5


def _arrays(kernel, out_hw, offset_groups, groups, seed, bias=True):
    rng = np.random.default_rng(seed)
    taps = kernel[0] * kernel[1]
    return {
        "X": rng.standard_normal((N, C, H, W_IN)).astype(np.float32),
        "W": rng.standard_normal((M, C // groups, *kernel)).astype(np.float32),
        "B": rng.standard_normal(M).astype(np.float32) if bias else None,
        "offset": (rng.standard_normal((N, 2 * offset_groups * taps, *out_hw)) * 1.5).astype(np.float32),
        "mask": rng.uniform(0, 1, (N, offset_groups * taps, *out_hw)).astype(np.float32),
    }


def _reference(arrays, stride, pads, dilation, groups, mask=True):
    def t(name):
        value = arrays.get(name)
        return None if value is None else torch.from_numpy(value.astype(np.float64))

    out = deform_conv2d(t("X"), t("offset"), t("W"), t("B"), stride=stride, padding=pads, dilation=dilation,
                        mask=t("mask") if mask else None, groups=groups)
    return out.numpy()


def _model(node, graph_inputs: dict, initializers: dict, domains=()) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(a.shape))
              for name, a in graph_inputs.items()]
    inits = [numpy_helper.from_array(a, name) for name, a in initializers.items() if a is not None]
    output = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, ["N", "M", "Ho", "Wo"])
    graph = helper.make_graph([node], "flavour", inputs, [output], initializer=inits)
    opsets = [helper.make_opsetid("", schema.STANDARD_OPSET)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _run_both(model: onnx.ModelProto, feeds: dict, expected: np.ndarray, flavour: str) -> dict[str, float]:
    """Rewrite to custom (our op) and to standard (ONNX Runtime's own DeformConv); the max abs
    difference of each from the float64 reference."""
    assert [f.name if f else None for _, _, f in find_dcn_nodes(model)] == [flavour]
    differences = {}
    custom, count = rewrite_onnx(copy.deepcopy(model), to="custom")
    assert count == 1
    assert not any(e.domain in (schema.MMDEPLOY_DOMAIN, schema.MMCV_DOMAIN) for e in custom.opset_import)
    dcn = [n for n in custom.graph.node if n.op_type == schema.CUSTOM_OP_TYPE]
    assert len(dcn) == 1 and dcn[0].domain == schema.CUSTOM_DOMAIN
    got = ort_session(custom.SerializeToString()).run(None, feeds)[0]
    differences["custom"] = float(np.abs(got - expected).max())
    standard, count = rewrite_onnx(copy.deepcopy(model), to="standard")
    assert count == 1
    assert [n.op_type for n in standard.graph.node][-1] == schema.STANDARD_OP_TYPE
    session = ort.InferenceSession(standard.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)[0]
    differences["standard"] = float(np.abs(got - expected).max())
    assert max(differences.values()) < TOLERANCE, differences
    return differences


@pytest.mark.parametrize("domain, with_bias", [(schema.MMDEPLOY_DOMAIN, True), (schema.MMCV_DOMAIN, False)])
def test_mmcv_modulated(domain, with_bias):
    """mmdeploy/mmcv symbolic: X, offset, mask, W, [B]; (h, w) attributes; mask already sigmoided."""
    stride, pads, dilation, groups, dg = (1, 2), (1, 2), (2, 1), 2, 2
    out_hw = ((H + 2 * 1 - 5) // 1 + 1, (W_IN + 2 * 2 - 3) // 2 + 1)
    arrays = _arrays((3, 3), out_hw, dg, groups, seed=1, bias=with_bias)
    inputs = ["X", "offset", "mask", "W"] + (["B"] if with_bias else [])
    node = helper.make_node(schema.MMCV_MODULATED_OP_TYPE, inputs, ["Y"], name="dcn", domain=domain,
                            stride=list(stride), padding=list(pads), dilation=list(dilation), groups=groups,
                            deform_groups=dg)
    feeds = {k: arrays[k] for k in ("X", "offset", "mask")}
    model = _model(node, feeds, {"W": arrays["W"], "B": arrays["B"]}, [domain])
    _run_both(model, feeds, _reference(arrays, stride, pads, dilation, groups), "mmcv_v2")


@pytest.mark.parametrize("domain", [schema.MMDEPLOY_DOMAIN, schema.MMCV_DOMAIN])
def test_mmcv_deform_v1(domain):
    """DCNv1: X, offset, W; mmdeploy writes padding (ph, ph, pw, pw), mmcv (ph, pw) plus bias=0, im2col_step."""
    stride, pads, dilation, groups, dg = (2, 1), (2, 1), (1, 2), 1, 2
    out_hw = ((H + 4 - 3) // 2 + 1, (W_IN + 2 - 5) // 1 + 1)
    arrays = _arrays((3, 3), out_hw, dg, groups, seed=2, bias=False)
    extra = ({"padding": [2, 2, 1, 1]} if domain == schema.MMDEPLOY_DOMAIN
             else {"padding": [2, 1], "bias": 0, "im2col_step": 32})
    node = helper.make_node(schema.MMCV_DEFORM_OP_TYPE, ["X", "offset", "W"], ["Y"], name="dcn_v1", domain=domain,
                            stride=list(stride), dilation=list(dilation), groups=groups, deform_groups=dg, **extra)
    feeds = {k: arrays[k] for k in ("X", "offset")}
    model = _model(node, feeds, {"W": arrays["W"]}, [domain])
    _run_both(model, feeds, _reference(arrays, stride, pads, dilation, groups, mask=False), "mmcv_v1")


@pytest.mark.parametrize("with_bias", [True, False])
def test_tensorrt_plugin_reads_attributes_as_w_h(with_bias):
    """TensorRT's ModulatedDeformConv2d plugin passes stride/padding/dilation d[0] to the kernel's
    W argument: a node written with (w, h) values computes the (h, w) convolution."""
    stride, pads, dilation, groups, dg = (1, 2), (2, 1), (1, 2), 1, 1
    out_hw = ((H + 4 - 3) // 1 + 1, (W_IN + 2 - 5) // 2 + 1)
    arrays = _arrays((3, 3), out_hw, dg, groups, seed=3, bias=with_bias)
    inputs = ["x", "offset", "mask", "weight"] + (["bias"] if with_bias else [])
    node = helper.make_node(schema.TENSORRT_PLUGIN_OP_TYPE, inputs, ["Y"], name="trt_dcn",
                            stride=stride[::-1], padding=pads[::-1], dilation=dilation[::-1], group=groups,
                            deformable_group=dg)
    feeds = {"x": arrays["X"], "offset": arrays["offset"], "mask": arrays["mask"]}
    model = _model(node, feeds, {"weight": arrays["W"], "bias": arrays["B"]})
    _run_both(model, feeds, _reference(arrays, stride, pads, dilation, groups), "tensorrt")


@pytest.mark.parametrize("op_type, attrs", [
    ("DCNv2", {"stride": 1, "padding": 1, "dilation": 1, "groups": 1, "deformable_group": 1}),  # CaoWGG, ints
    ("DCNv2Plugin", {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1,
                     "deformable_group": 1, "out_channel": M}),  # graphsurgeon-renamed, trt-fairmot
])
def test_centernet_dcnv2_plugins(op_type, attrs):
    out_hw = (H, W_IN)
    arrays = _arrays((3, 3), out_hw, 1, 1, seed=4)
    node = helper.make_node(op_type, ["input", "offset", "mask", "weight", "bias"], ["Y"], name="dcn_centernet",
                            **attrs)
    feeds = {"input": arrays["X"], "offset": arrays["offset"], "mask": arrays["mask"]}
    model = _model(node, feeds, {"weight": arrays["W"], "bias": arrays["B"]})
    _run_both(model, feeds, _reference(arrays, 1, 1, 1, 1), "dcnv2")


def _plugin_node(inputs, node_name, plugin_name, **attrs) -> onnx.NodeProto:
    """A generic ``Plugin`` node; its ``name`` attribute clashes with make_node's node name."""
    node = helper.make_node(schema.GENERIC_PLUGIN_OP_TYPE, inputs, ["Y"], name=node_name, **attrs)
    node.attribute.append(helper.make_attribute("name", plugin_name))
    return node


def test_generic_plugin_dcnv2_takes_the_raw_offset_mask_conv_output():
    """tensorRTIntegrate/tensorRT_Pro: Plugin(name=DCNv2)(input, offset_and_mask, weight, bias); the plugin
    slices the offsets and applies the sigmoid to the mask itself: two Slices and a Sigmoid are inserted."""
    arrays = _arrays((3, 3), (H, W_IN), 1, 1, seed=5)
    logits = np.random.default_rng(6).standard_normal((N, 9, H, W_IN)).astype(np.float32) * 2
    offset_and_mask = np.concatenate([arrays["offset"], logits], axis=1)
    arrays["mask"] = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    node = _plugin_node(["input", "om", "weight", "bias"], "dcn_pro", schema.GENERIC_PLUGIN_DCN_NAME, info="")
    feeds = {"input": arrays["X"], "om": offset_and_mask}
    model = _model(node, feeds, {"weight": arrays["W"], "bias": arrays["B"]})
    expected = _reference(dict(arrays, mask=(1 / (1 + np.exp(-logits.astype(np.float64))))), 1, 1, 1, 1)
    _run_both(model, feeds, expected, "plugin_dcnv2")
    custom, _ = rewrite_onnx(copy.deepcopy(model), to="custom")
    assert [n.op_type for n in custom.graph.node] == ["Constant"] * 4 + ["Slice", "Slice", "Sigmoid",
                                                                         schema.CUSTOM_OP_TYPE]


def _openvino_reference(arrays, stride, pads, dilation, groups, offset_groups, mask=True) -> np.ndarray:
    """OpenVINO's DeformableConvolution-8 with bilinear_interpolation_pad false (its reference
    deformable_convolution.hpp), written anew in float64: a sample counts only where 0 <= y < H and
    0 <= x < W; the far corners are clamped to the last row and column; times the mask; no bias."""
    x = arrays["X"].astype(np.float64)
    weight = arrays["W"].astype(np.float64)
    offset = arrays["offset"].astype(np.float64)
    n, c, h, w = x.shape
    m, _, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    taps = kh * kw
    modulation = arrays["mask"].astype(np.float64) if mask else np.ones((n, offset_groups * taps, ho, wo))
    oy = np.arange(ho)[:, None] * stride[0] - pads[0]
    ox = np.arange(wo)[None, :] * stride[1] - pads[1]
    columns = np.zeros((n, c, taps, ho, wo))
    batch = np.arange(n)[:, None, None, None]
    channel = np.arange(c)[None, :, None, None]
    for t in range(taps):
        i, j = divmod(t, kw)
        group = np.arange(c) // (c // offset_groups)  # the offset group of each input channel
        dy = offset[:, group * 2 * taps + 2 * t]  # (n, c, ho, wo)
        dx = offset[:, group * 2 * taps + 2 * t + 1]
        y = oy + i * dilation[0] + dy
        xx = ox + j * dilation[1] + dx
        inside = (y >= 0) & (y < h) & (xx >= 0) & (xx < w)
        y1, x1 = np.floor(np.where(inside, y, 0)).astype(int), np.floor(np.where(inside, xx, 0)).astype(int)
        y2, x2 = np.minimum(np.ceil(np.where(inside, y, 0)).astype(int), h - 1), \
            np.minimum(np.ceil(np.where(inside, xx, 0)).astype(int), w - 1)
        fy, fx = np.where(inside, y, 0) - y1, np.where(inside, xx, 0) - x1
        value = ((1 - fx) * (1 - fy) * x[batch, channel, y1, x1] + (1 - fx) * fy * x[batch, channel, y2, x1]
                 + fx * (1 - fy) * x[batch, channel, y1, x2] + fx * fy * x[batch, channel, y2, x2])
        columns[:, :, t] = np.where(inside, value, 0) * modulation[:, group * taps + t]
    out = np.zeros((n, m, ho, wo))
    per_group_in, per_group_out = c // groups, m // groups
    for g in range(groups):
        block = columns[:, g * per_group_in:(g + 1) * per_group_in].reshape(n, -1, ho, wo)
        kernel = weight[g * per_group_out:(g + 1) * per_group_out].reshape(per_group_out, -1)
        out[:, g * per_group_out:(g + 1) * per_group_out] = np.einsum("ok,nkhw->nohw", kernel, block)
    return out


def _boundary_offsets(shape, seed) -> np.ndarray:
    """Offsets that put many samples in the bands where OpenVINO and canonical sampling differ (within a
    pixel of the border, inside and out) and on integer positions (exact rows, the -1 and L-1 edges)."""
    rng = np.random.default_rng(seed)
    offset = rng.standard_normal(shape) * 3
    integer = rng.uniform(size=shape) < 0.3
    return np.where(integer, np.round(offset), offset).astype(np.float32)


@pytest.mark.parametrize("with_mask", [True, False])
def test_openvino_deformable_conv_2d_reads_its_pads_and_emulates_its_boundary_rule(with_mask):
    """org.openvinotoolkit::DeformableConv2D: X, offset, W, [mask]; ONNX-style attributes. Without a mask as
    mmdeploy's OpenVINO backend writes it (DCNv1; its kernel_shape and groups=1; pads (ph, ph, pw, pw));
    with one as OpenVINO's own models do (asymmetric pads, groups, offset groups). OpenVINO's sampling at
    the border differs from canonical: the inserted offset transform must reproduce it exactly."""
    if with_mask:
        stride, pads, dilation, groups, dg = (2, 1), (1, 2, 0, 1), (1, 2), 2, 2
        attrs = {"strides": list(stride), "pads": list(pads), "dilations": list(dilation), "group": groups,
                 "deformable_groups": dg}
    else:
        stride, pads, dilation, groups, dg = (1, 1), (1, 1, 1, 1), (1, 1), 1, 1
        attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "groups": 1,
                 "deformable_groups": 1, "kernel_shape": [3, 3]}
    out_hw = ((H + pads[0] + pads[2] - dilation[0] * 2 - 1) // stride[0] + 1,
              (W_IN + pads[1] + pads[3] - dilation[1] * 2 - 1) // stride[1] + 1)
    arrays = _arrays((3, 3), out_hw, dg, groups, seed=11, bias=False)
    arrays["offset"] = _boundary_offsets(arrays["offset"].shape, seed=12)
    inputs = ["X", "offset", "W"] + (["mask"] if with_mask else [])
    node = helper.make_node(schema.OPENVINO_OP_TYPE, inputs, ["Y"], name="ov_dcn", domain=schema.OPENVINO_DOMAIN,
                            **attrs)
    feeds = {k: arrays[k] for k in ("X", "offset", "mask")[:3 if with_mask else 2]}
    model = _model(node, feeds, {"W": arrays["W"]}, [schema.OPENVINO_DOMAIN])
    expected = _openvino_reference(arrays, stride, pads, dilation, groups, dg, mask=with_mask)
    canonical = _reference(arrays, stride, pads, dilation, groups, mask=with_mask)
    assert np.abs(canonical - expected).max() > 0.1  # the offsets do reach the bands where the rules differ
    _run_both(model, feeds, expected, "openvino")
    report = inspect_onnx(model)
    (entry,) = report["dcn_nodes"]
    assert (entry["flavour"], entry["modulated"], entry["bias"], entry["error"]) == ("openvino", with_mask, False, None)
    assert entry["attributes"]["pads"] == list(pads) and entry["weight_shape"] == list(arrays["W"].shape)
    assert {v["runtime"]: v["status"] for v in report["runtimes"]}["onnxruntime + dcn_deploy library"] == \
        "after rewrite"
    custom, _ = rewrite_onnx(copy.deepcopy(model), to="custom")
    assert not any(e.domain == schema.OPENVINO_DOMAIN for e in custom.opset_import)
    dcn = custom.graph.node[-1]
    assert dcn.op_type == schema.CUSTOM_OP_TYPE and dcn.input[2] == "ov_dcn.openvino_offset"
    geometry = {a.name: helper.get_attribute_value(a) for a in dcn.attribute}
    assert (geometry["pads"], geometry["strides"], geometry["group"], geometry["offset_group"]) == (
        list(pads), list(stride), groups, dg)


@pytest.mark.parametrize("output", ["no shape", "no type"])
def test_rewrite_and_inspect_take_any_model_onnx_runtime_runs(tmp_path, output):
    """Graph outputs that carry no shape, or no type at all (the strict ONNX checker refuses the latter, ONNX
    Runtime runs both): the command line rewrites and inspects such a model of another exporter."""
    arrays = _arrays((3, 3), (H, W_IN), 1, 1, seed=14, bias=False)
    node = helper.make_node(schema.OPENVINO_OP_TYPE, ["X", "offset", "W", "mask"], ["Y"], name="ov_dcn",
                            domain=schema.OPENVINO_DOMAIN, pads=[1, 1])
    feeds = {k: arrays[k] for k in ("X", "offset", "mask")}
    model = _model(node, feeds, {"W": arrays["W"]}, [schema.OPENVINO_DOMAIN])
    if output == "no shape":
        model.graph.output[0].type.tensor_type.ClearField("shape")
    else:
        model.graph.output[0].ClearField("type")
    path, rewritten = tmp_path / "ov.onnx", tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    runner = CliRunner()
    result = runner.invoke(app, ["rewrite", str(path), "-o", str(rewritten)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "1 nodes rewritten to custom (DCN nodes read: 1 openvino)" in result.output
    got = ort_session(str(rewritten)).run(None, feeds)[0]
    expected = _openvino_reference(arrays, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1)
    assert np.abs(got - expected).max() < TOLERANCE
    result = runner.invoke(app, ["inspect", str(path), "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["dcn_flavours"] == {"openvino": 1}


def test_openvino_flavour_refuses_what_it_cannot_read():
    arrays = _arrays((3, 3), (H, W_IN), 1, 1, seed=13)
    feeds = {"X": arrays["X"], "offset": arrays["offset"]}
    for attrs, message in (({"auto_pad": "SAME_UPPER"}, "auto_pad=SAME_UPPER derives the pads"),
                           ({"group": 1, "groups": 2}, "groups=2 .mmdeploy's name. but OpenVINO reads group=1"),
                           ({"kernel_shape": [5, 5]}, r"kernel_shape \[5, 5\] but the weight's kernel is \[3, 3\]"),
                           ({"bilinear_interpolation_pad": 1}, "bilinear_interpolation_pad")):
        node = helper.make_node(schema.OPENVINO_OP_TYPE, ["X", "offset", "W"], ["Y"], name="ov_bad",
                                domain=schema.OPENVINO_DOMAIN, pads=[1, 1, 1, 1], **attrs)
        model = _model(node, feeds, {"W": arrays["W"]}, [schema.OPENVINO_DOMAIN])
        with pytest.raises(RewriteError, match=f"ov_bad.*{message}"):
            rewrite_onnx(model, to="custom")


def test_a_plugin_node_of_another_name_is_left_alone():
    node = _plugin_node(["x"], "hswish", "HSwish")
    model = _model(node, {"x": np.zeros((1, 1, 2, 2), np.float32)}, {})
    assert find_dcn_nodes(model) == []


def test_unknown_deformable_node_is_an_error_naming_it_and_the_flavours():
    node = helper.make_node("DeformableConvolution3D", ["X", "offset", "W"], ["Y"], name="other_dcn",
                            domain="com.example")
    arrays = _arrays((3, 3), (H, W_IN), 1, 1, seed=7)
    model = _model(node, {"X": arrays["X"], "offset": arrays["offset"]}, {"W": arrays["W"]}, ["com.example"])
    with pytest.raises(RewriteError, match="com.example::DeformableConvolution3D node 'other_dcn'") as error:
        rewrite_onnx(model, to="custom")
    for name in FLAVOUR_NAMES:
        assert name in str(error.value)


def test_deformable_roi_pooling_is_no_convolution():
    node = helper.make_node("MMCVDeformRoIPool", ["X", "rois"], ["Y"], name="roi", domain=schema.MMDEPLOY_DOMAIN)
    model = _model(node, {"X": np.zeros((1, 1, 2, 2), np.float32), "rois": np.zeros((1, 5), np.float32)}, {},
                   [schema.MMDEPLOY_DOMAIN])
    assert find_dcn_nodes(model) == []


def test_flavour_errors_name_the_node():
    arrays = _arrays((3, 3), (H, W_IN), 1, 1, seed=8)
    node = helper.make_node(schema.MMCV_MODULATED_OP_TYPE, ["X", "offset", "mask", "W"], ["Y"], name="bad_attr",
                            domain=schema.MMDEPLOY_DOMAIN, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1,
                            deform_groups=1, offset_scale=2.0)
    feeds = {k: arrays[k] for k in ("X", "offset", "mask")}
    model = _model(node, feeds, {"W": arrays["W"]}, [schema.MMDEPLOY_DOMAIN])
    with pytest.raises(RewriteError, match="bad_attr.*offset_scale"):
        rewrite_onnx(model, to="custom")
    node = helper.make_node(schema.MMCV_DEFORM_OP_TYPE, ["X", "offset", "W"], ["Y"], name="odd_pads",
                            domain=schema.MMDEPLOY_DOMAIN, padding=[1, 2, 1, 2])
    model = _model(node, {"X": arrays["X"], "offset": arrays["offset"]}, {"W": arrays["W"]}, [schema.MMDEPLOY_DOMAIN])
    with pytest.raises(RewriteError, match="odd_pads.*\\(ph, ph, pw, pw\\)"):
        rewrite_onnx(model, to="custom")
