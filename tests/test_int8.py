"""INT8 DeformConv: the reference against its fake-quant form and the issue's formulation, the ONNX
Runtime ops (DcnDeformConvInt8 / ...Requantized) bitwise against the reference, bad scales and
types, and calibration + Q/DQ export (``dcn-deploy quantize``) with both parity checks."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from cases import CASES, Case
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.quantize import (
    CalibrationError,
    load_calibration_folder,
    quantize_onnx,
    synthetic_calibration,
)
from dcn_deploy.op import int8
from dcn_deploy.op.reference import sample_columns

runner = CliRunner()
INT8_CASES = [c for c in CASES if c.h * c.w > 1] + [c for c in CASES if c.h * c.w == 1][:1]


def quantized_case(case, y_scale=None, tie_offsets=False):
    """The case's tensors with X and W quantized (X's scale from its max, W per channel)."""
    arrays = case.make()
    x = torch.from_numpy(arrays["X"])
    if tie_offsets:  # Half-pixel offsets: many samples are exact averages, i.e. exact .5 ties.
        arrays["offset"] = np.full_like(arrays["offset"], 0.5)
        if arrays["mask"] is not None:
            arrays["mask"] = np.ones_like(arrays["mask"])
    x_scale = float(np.float32(x.abs().max() / 127))
    xq = int8.quantize_symmetric(x, x_scale)
    wq, w_scale = int8.quantize_weight_per_channel(torch.from_numpy(arrays["W"]))
    return dict(X=xq, W=wq, offset=torch.from_numpy(arrays["offset"]),
                B=None if arrays["B"] is None else torch.from_numpy(arrays["B"]),
                mask=None if arrays["mask"] is None else torch.from_numpy(arrays["mask"]),
                x_scale=x_scale, w_scale=w_scale, y_scale=y_scale)


def reference(case, q, y_scale=None):
    return int8.deform_conv2d_int8(
        q["X"], q["offset"], q["W"], q["x_scale"], q["w_scale"], q["B"], stride=case.stride, padding=case.pads,
        dilation=case.dilation, mask=q["mask"], groups=case.group, offset_groups=case.offset_group,
        y_scale=y_scale)


def int8_model(case, q, y_scale=None, attributes=None, weight_as_input=False):
    op_type = schema.INT8_REQUANTIZED_OP_TYPE if y_scale else schema.INT8_OP_TYPE
    attrs = dict(case.attributes, x_scale=q["x_scale"], w_scale=list(q["w_scale"]))
    if y_scale:
        attrs["y_scale"] = y_scale
    attrs.update(attributes or {})
    empty = [name for name, value in attrs.items() if isinstance(value, list) and not value]
    attrs = {k: v for k, v in attrs.items() if k not in empty}
    inputs = ["X", "W", "offset", "B" if q["B"] is not None else "", "mask" if q["mask"] is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node(op_type, inputs, ["Y"], name="int8_under_test", domain=schema.CUSTOM_DOMAIN, **attrs)
    node.attribute.extend(helper.make_attribute(name, [], attr_type=onnx.AttributeProto.FLOATS) for name in empty)
    graph_inputs = [helper.make_tensor_value_info("X", onnx.TensorProto.INT8, list(q["X"].shape)),
                    helper.make_tensor_value_info("offset", onnx.TensorProto.FLOAT, list(q["offset"].shape))]
    if q["mask"] is not None:
        graph_inputs.append(helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, list(q["mask"].shape)))
    initializers = [] if weight_as_input else [numpy_helper.from_array(q["W"].numpy(), "W")]
    if weight_as_input:
        graph_inputs.append(helper.make_tensor_value_info("W", onnx.TensorProto.INT8, list(q["W"].shape)))
    if q["B"] is not None:
        initializers.append(numpy_helper.from_array(q["B"].numpy(), "B"))
    out_type = onnx.TensorProto.INT8 if y_scale else onnx.TensorProto.FLOAT
    graph = helper.make_graph([node], "int8_case", graph_inputs, [helper.make_tensor_value_info("Y", out_type, None)],
                              initializers)
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", schema.STANDARD_OPSET), helper.make_opsetid(schema.CUSTOM_DOMAIN, 1)])


def run_int8_model(model, q, weight_as_input=False):
    feeds = {"X": q["X"].numpy(), "offset": q["offset"].numpy()}
    if q["mask"] is not None:
        feeds["mask"] = q["mask"].numpy()
    if weight_as_input:
        feeds["W"] = q["W"].numpy()
    return ort_session(model.SerializeToString()).run(None, feeds)[0]


# --- the reference --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", INT8_CASES, ids=lambda c: c.name)
def test_reference_agrees_with_fake_quant(case):
    q = quantized_case(case)
    exact = reference(case, q)
    fake = int8.deform_conv2d_fake_quant(
        q["X"], q["offset"], q["W"], q["x_scale"], q["w_scale"], q["B"], stride=case.stride, padding=case.pads,
        dilation=case.dilation, mask=q["mask"], groups=case.group, offset_groups=case.offset_group)
    steps = int8.Int8Scales.make(q["x_scale"], q["w_scale"], out_channels=case.m).output_scale()
    agreement = int8.compare_int8(exact, fake.to(torch.float32), steps)
    # The two forms round samples at different places (float32 on Xq vs float64 on x_scale * Xq):
    # they may part only where a sample lies within rounding of a tie.
    assert agreement.within(int8.FLIPPED_TIE_STEPS, max_fraction=0.02), agreement


def test_reference_matches_the_issue_formulation_in_float64():
    """bilinear(x_scale * Xq) / x_scale (the issue's wording) and the sample of Xq are the same real
    number: in float64 every requantized sample agrees with the float32 definition except ties."""
    case = next(c for c in CASES if c.name == "everything")
    q = quantized_case(case)
    geo = int8.DeformConvGeometry.check(q["X"], q["offset"], q["W"], q["B"], q["mask"], case.stride, case.pads,
                                        case.dilation, case.group, case.offset_group)
    ours = int8.requantized_samples(q["X"], q["offset"], q["mask"], geo).to(torch.float64)
    issue = torch.round(sample_columns(q["X"].double() * q["x_scale"], q["offset"].double(),
                                             q["mask"].double(), geo) / q["x_scale"]).clamp(-128, 127)
    differing = (ours != issue).sum().item()
    assert (ours - issue).abs().max() <= 1
    assert differing <= 0.001 * ours.numel() + 1


def test_int8_output_saturates_and_rounds_half_to_even():
    case = next(c for c in CASES if c.name == "3x3")
    q = quantized_case(case)
    y = reference(case, q)
    y_scale = float(np.float32(y.abs().max() / 300))  # Many outputs beyond +-127: saturated.
    yq = reference(case, q, y_scale=y_scale)
    expected = np.clip(np.round(y.numpy() / np.float32(y_scale)), -128, 127).astype(np.int8)
    assert np.array_equal(yq.numpy(), expected)
    assert (yq == 127).any() and (yq == -128).any()


def test_quantize_symmetric_is_onnx_quantize_linear():
    values = torch.tensor([-3.0, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 2.5, 200.0, -200.0])
    ours = int8.quantize_symmetric(values, 0.5)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [10])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.INT8, [10])],
                              [numpy_helper.from_array(np.array(0.5, np.float32), "s"),
                               numpy_helper.from_array(np.array(0, np.int8), "z")])
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 19)])
    theirs = ort_session(model.SerializeToString()).run(None, {"x": values.numpy()})[0]
    assert np.array_equal(ours.numpy(), theirs)


def test_weight_quantization_is_per_channel_and_symmetric():
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    weight[2] = 0
    wq, scales = int8.quantize_weight_per_channel(weight)
    assert wq.dtype == torch.int8 and wq.abs().max() == 127 and (wq[2] == 0).all()
    assert scales[2] == 1.0
    for o in (0, 1, 3, 4):
        assert scales[o] == pytest.approx(weight[o].abs().max().item() / 127, rel=1e-6)
        assert (wq[o].double() * scales[o] - weight[o]).abs().max() <= scales[o] / 2 * (1 + 1e-5)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), "x", 1e-46])
def test_reference_rejects_bad_scales(bad):
    case = next(c for c in CASES if c.name == "3x3")
    q = quantized_case(case)
    with pytest.raises(ValueError, match="x_scale"):
        int8.deform_conv2d_int8(q["X"], q["offset"], q["W"], bad, q["w_scale"], padding=1)
    with pytest.raises(ValueError, match="w_scale"):
        int8.deform_conv2d_int8(q["X"], q["offset"], q["W"], q["x_scale"], [bad] * case.m, padding=1)


def test_reference_rejects_wrong_types_and_lengths():
    case = next(c for c in CASES if c.name == "3x3")
    q = quantized_case(case)
    with pytest.raises(ValueError, match="one per output channel"):
        int8.deform_conv2d_int8(q["X"], q["offset"], q["W"], q["x_scale"], q["w_scale"][:2], padding=1)
    with pytest.raises(TypeError, match="input must be int8"):
        int8.deform_conv2d_int8(q["X"].float(), q["offset"], q["W"], q["x_scale"], q["w_scale"], padding=1)
    with pytest.raises(TypeError, match="weight must be int8"):
        int8.deform_conv2d_int8(q["X"], q["offset"], q["W"].float(), q["x_scale"], q["w_scale"], padding=1)


# --- the ONNX Runtime ops ---------------------------------------------------------------------------

@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
@pytest.mark.parametrize("case", INT8_CASES, ids=lambda c: c.name)
def test_ort_int8_op_is_bitwise_the_reference(case):
    q = quantized_case(case)
    out = run_int8_model(int8_model(case, q), q)
    assert out.dtype == np.float32
    assert np.array_equal(out, reference(case, q).numpy())


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
@pytest.mark.parametrize("case", [c for c in INT8_CASES if c.name in ("3x3", "everything", "group_2", "no_mask")],
                         ids=lambda c: c.name)
def test_ort_requantized_op_with_ties_is_bitwise_the_reference(case):
    q = quantized_case(case, tie_offsets=True)
    y_scale = float(np.float32(reference(case, q).abs().max() / 100))
    out = run_int8_model(int8_model(case, q, y_scale=y_scale), q)
    assert out.dtype == np.int8
    assert np.array_equal(out, reference(case, q, y_scale=y_scale).numpy())


# Channel counts that take the channels-last path of the CPU op (C/group and C/offset_group
# multiples of 8): panels of 16 output channels with a partial last one, several channel
# blocks (128 channels), several tiles, offset groups inside a weight group, borders.
CHANNELS_LAST_CASES = [
    Case("cl_3x3", c=16, m=20, seed=31),
    Case("cl_groups_offset_groups", c=32, m=24, group=2, offset_group=4, seed=32),
    Case("cl_everything", n=2, c=48, h=10, w=7, m=40, kernel=(3, 2), stride=(2, 1), pads=(1, 0, 2, 1),
         dilation=(2, 1), group=2, offset_group=3, offset_scale=3.0, seed=33),
    Case("cl_channel_blocks_tiles", n=1, c=128, h=12, w=11, m=17, seed=34),
    Case("cl_leave_image", c=8, m=8, offset_scale=6.0, seed=35),
    Case("cl_integer_offsets_on_borders", c=8, m=16, integer_offsets=True, offset_scale=3.0, mask=False, seed=36),
    Case("cl_2x2_plane", c=8, m=5, h=2, w=2, seed=37),
]


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
@pytest.mark.parametrize("kernels", ["default", "portable"])
@pytest.mark.parametrize("case", CHANNELS_LAST_CASES, ids=lambda c: c.name)
def test_ort_int8_channels_last_path_is_bitwise_the_reference(case, kernels, monkeypatch):
    if kernels == "portable":
        monkeypatch.setenv("DCN_DEPLOY_CPU_KERNELS", "portable")
    q = quantized_case(case)
    expected = reference(case, q).numpy()
    assert np.array_equal(run_int8_model(int8_model(case, q), q), expected)  # W packed once, cached
    computed = run_int8_model(int8_model(case, q, weight_as_input=True), q, weight_as_input=True)
    assert np.array_equal(computed, expected)  # W packed on every call
    q = quantized_case(case, tie_offsets=True)
    y_scale = float(np.float32(reference(case, q).abs().max() / 100))
    out = run_int8_model(int8_model(case, q, y_scale=y_scale), q)
    assert np.array_equal(out, reference(case, q, y_scale=y_scale).numpy())


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
@pytest.mark.parametrize("kernels", ["default", "portable"])
def test_ort_int8_special_masks_are_bitwise_the_reference(kernels, monkeypatch):
    # Negative, zero, huge and non-finite mask values on both CPU paths (8 channels: channels-last;
    # 4: planar): a weight-0 corner of the channels-last path must behave like an outside corner.
    if kernels == "portable":
        monkeypatch.setenv("DCN_DEPLOY_CPU_KERNELS", "portable")
    for case in (Case("cl_masks", c=8, m=8, offset_scale=3.0, seed=38), Case("planar_masks", offset_scale=3.0, seed=39)):
        q = quantized_case(case)
        mask = q["mask"].numpy().copy().reshape(-1)
        specials = np.array([-1.5, 0.0, 3e38, np.inf, -np.inf, np.nan], dtype=np.float32)
        mask[::7] = specials[np.arange(mask[::7].size) % specials.size]
        q["mask"] = torch.from_numpy(mask.reshape(q["mask"].shape))
        assert np.array_equal(run_int8_model(int8_model(case, q), q), reference(case, q).numpy(), equal_nan=True)


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
@pytest.mark.parametrize("kernels", ["default", "portable"])
def test_ort_int8_accumulator_bound_is_exact_at_its_worst_case(kernels, monkeypatch):
    # -128 everywhere: every product is 128 * 128; the largest accepted depth (1x1 kernel, C a
    # multiple of 8 below int8.MAX_PRODUCTS_PER_OUTPUT: the channels-last path) still fits in
    # int32 and equals the int64 reference; one more product per output is refused by name.
    if kernels == "portable":
        monkeypatch.setenv("DCN_DEPLOY_CPU_KERNELS", "portable")
    channels = int8.MAX_PRODUCTS_PER_OUTPUT // 8 * 8
    case = Case("worst_case", n=1, c=channels, m=1, h=2, w=2, kernel=(1, 1), pads=(0, 0, 0, 0), bias=False,
                mask=False)
    q = dict(X=torch.full((1, channels, 2, 2), -128, dtype=torch.int8),
             W=torch.full((1, channels, 1, 1), -128, dtype=torch.int8),
             offset=torch.zeros(1, 2, 2, 2), B=None, mask=None, x_scale=1.0, w_scale=[1.0], y_scale=None)
    out = run_int8_model(int8_model(case, q), q)
    assert np.array_equal(out, reference(case, q).numpy())
    assert out.flat[0] == np.float32(channels * 128 * 128)
    case = Case("too_deep", n=1, c=int8.MAX_PRODUCTS_PER_OUTPUT + 1, m=1, h=2, w=2, kernel=(1, 1),
                pads=(0, 0, 0, 0), bias=False, mask=False)
    q = dict(q, X=torch.zeros((1, case.c, 2, 2), dtype=torch.int8), W=torch.zeros((1, case.c, 1, 1), dtype=torch.int8))
    with pytest.raises(Exception, match="could overflow the int32 accumulator"):
        run_int8_model(int8_model(case, q), q)


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
def test_ort_int8_op_takes_a_computed_weight():
    case = next(c for c in CASES if c.name == "everything")
    q = quantized_case(case)
    out = run_int8_model(int8_model(case, q, weight_as_input=True), q, weight_as_input=True)
    assert np.array_equal(out, reference(case, q).numpy())


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
@pytest.mark.parametrize("attributes, message", [
    ({"x_scale": 0.0}, "attribute 'x_scale' must be a finite positive scale, got 0"),
    ({"x_scale": float("nan")}, "attribute 'x_scale' must be a finite positive scale, got nan"),
    ({"w_scale": [0.1, -0.2]}, "'w_scale[1]' must be a finite positive scale, got -0.2"),
    ({"w_scale": [0.1, 0.2]}, "'w_scale' has 2 values, expected one per output channel (M = 6) or 1"),
    ({"w_scale": []}, "attribute 'w_scale'"),
    ({"y_scale": 0.5}, "attribute 'y_scale' belongs to DcnDeformConvInt8Requantized"),
])
def test_ort_int8_op_names_bad_scales(attributes, message):
    case = next(c for c in CASES if c.name == "3x3")
    q = quantized_case(case)
    with pytest.raises(Exception) as error:
        run_int8_model(int8_model(case, q, attributes=attributes), q)
    assert message in str(error.value) and "int8_under_test" in str(error.value)


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
def test_ort_requantized_op_needs_a_positive_y_scale():
    case = next(c for c in CASES if c.name == "3x3")
    q = quantized_case(case)
    with pytest.raises(Exception, match="'y_scale' must be a finite positive scale, got -1"):
        run_int8_model(int8_model(case, q, y_scale=-1.0), q)


@pytest.mark.custom_op  # also under ASan+UBSan (scripts/sanitize_tests.sh)
def test_ort_int8_op_rejects_float_input_and_float_op_rejects_int8():
    case = next(c for c in CASES if c.name == "3x3")
    q = quantized_case(case)
    model = int8_model(case, q)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    with pytest.raises(Exception, match="int8_under_test|X"):
        ort_session(model.SerializeToString())
    float_model = int8_model(case, q)
    node = float_model.graph.node[0]
    node.op_type = schema.CUSTOM_OP_TYPE
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in case.attributes.items())
    with pytest.raises(Exception, match="int8_under_test|tensor\\(int8\\)"):
        ort_session(float_model.SerializeToString())


# --- calibration and Q/DQ export ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    result = runner.invoke(app, ["export", "--recipe", "demo", "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_quantize_demo_end_to_end_with_both_parity_checks(demo_onnx, tmp_path):
    out = tmp_path / "demo.int8.onnx"
    result = runner.invoke(app, ["quantize", str(demo_onnx), "--synthetic", "4", "-o", str(out)],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert schema.INT8_OP_TYPE in ops and schema.CUSTOM_OP_TYPE not in ops
    for node in model.graph.node:
        if node.op_type == schema.INT8_OP_TYPE:
            producer = next(n for n in model.graph.node if node.input[0] in n.output)
            assert producer.op_type == "QuantizeLinear"
    result = runner.invoke(app, ["validate", str(out), "-n", "2", "--json", str(tmp_path / "r.json")],
                           env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision"] == "int8" and report["passed"]
    assert report["int8_nodes"] and all(n["passed"] for n in report["int8_nodes"])
    assert all(o["rel_l2"] < 2e-2 for o in report["outputs"])


def test_resnet_dcn_int8_passes_both_parity_checks(tmp_path):
    """The issue's acceptance: the ResNet-DCN recipe calibrated on its own synthetic set."""
    from dcn_deploy.onnx.recipes import export_recipe, reference_for
    from dcn_deploy.parity.validate import validate_onnx

    float_path = tmp_path / "resnet50_dcn.onnx"
    export_recipe("resnet50_dcn", float_path)
    model = onnx.load(str(float_path))
    result = quantize_onnx(model, synthetic_calibration(model, 8), method="max")
    assert len(result.dcn_nodes) == 13 and result.qdq_nodes > 0
    int8_path = tmp_path / "resnet50_dcn.int8.onnx"
    onnx.save(result.model, str(int8_path))
    reference_model, shapes = reference_for(model)
    report = validate_onnx(int8_path, reference_model, shapes, num_inputs=1, precision="int8")
    assert len(report.int8_nodes) == 13
    assert all(n.passed for n in report.int8_nodes), report.int8_nodes
    assert all(o.rel_l2 < 2e-2 for o in report.outputs), report.outputs
    assert report.passed


def test_calibration_folder_errors(demo_onnx, tmp_path):
    model = onnx.load(str(demo_onnx))
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration_folder(tmp_path / "missing", model)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no data")
    with pytest.raises(CalibrationError, match="holds no .npy"):
        load_calibration_folder(empty, model)
    sample = synthetic_calibration(model, 1)[0]
    name, array = next(iter(sample.items()))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    np.save(wrong / "a.npy", array)
    np.save(wrong / "b.npy", array[:, :2])
    with pytest.raises(CalibrationError, match=r"b.npy: input '.*' has shape"):
        load_calibration_folder(wrong, model)
    ints = tmp_path / "ints"
    ints.mkdir()
    np.save(ints / "a.npy", array.astype(np.int32))
    with pytest.raises(CalibrationError, match="dtype int32, expected floating point"):
        load_calibration_folder(ints, model)
    good = tmp_path / "good"
    good.mkdir()
    np.save(good / "a.npy", array)
    np.savez(good / "b.npz", **{name: array * 2})
    loaded = load_calibration_folder(good, model)
    assert len(loaded) == 2 and np.array_equal(loaded[1][name], array * 2)


def test_quantize_command_errors(demo_onnx, tmp_path):
    env = {"COLUMNS": "160"}
    both = runner.invoke(app, ["quantize", str(demo_onnx), "-o", str(tmp_path / "x.onnx")], env=env)
    assert both.exit_code == 2 and "exactly one of --calib" in both.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["quantize", str(demo_onnx), "--calib", str(empty), "-o", str(tmp_path / "x.onnx")],
                           env=env)
    assert result.exit_code == 2 and "holds no .npy" in result.output
    result = runner.invoke(app, ["quantize", str(demo_onnx), "--synthetic", "2", "--method", "mse",
                                 "-o", str(tmp_path / "x.onnx")], env=env)
    assert result.exit_code == 2 and "unknown calibration method 'mse'" in result.output
    result = runner.invoke(app, ["quantize", str(demo_onnx), "--synthetic", "2", "--keep-float", "nope",
                                 "-o", str(tmp_path / "x.onnx")], env=env)
    assert result.exit_code == 2 and "--keep-float nope: no such node or layer" in result.output


def test_quantize_refuses_an_already_quantized_model(demo_onnx):
    model = onnx.load(str(demo_onnx))
    quantized = quantize_onnx(model, synthetic_calibration(model, 2)).model
    with pytest.raises(ValueError, match="already quantized"):
        quantize_onnx(quantized, synthetic_calibration(model, 2))


@pytest.mark.parametrize("y_scale", [None, 0.05])
def test_int8_batch_of_zero_gives_an_empty_output(y_scale):
    """N=0 through the exact INT8 reference, the fake-quant reference and the ONNX Runtime INT8 ops."""
    case = Case("empty batch", n=1, seed=23)
    q = quantized_case(case)  # scales from one image, then the batch cut to none
    q.update({name: q[name][:0] for name in ("X", "offset", "mask")})
    want = (0, case.m, *case.out_hw)
    exact = reference(case, q, y_scale=y_scale)
    assert tuple(exact.shape) == want and exact.dtype == (torch.int8 if y_scale else torch.float32)
    fake = int8.deform_conv2d_fake_quant(q["X"], q["offset"], q["W"], q["x_scale"], q["w_scale"], q["B"],
                                         padding=case.pads, mask=q["mask"])
    assert tuple(fake.shape) == want
    got = run_int8_model(int8_model(case, q, y_scale=y_scale), q)
    assert got.shape == want and got.dtype == (np.int8 if y_scale else np.float32)
