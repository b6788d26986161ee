"""Bad arguments of the op: a clear error naming what mismatches, from the Python reference and from the
custom op (whose errors also name the node); huge sizes fail before anything is allocated; non-finite
offsets are not errors but give a finite output. Nothing crashes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from cases import Case
from graphs import run_model, single_node_model
from onnx import TensorProto, helper

from dcn_deploy import deform_conv2d
from dcn_deploy.backends import cuda_kernels
from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.onnx import schema

pytestmark = pytest.mark.bad_input

NODE = "backbone.layer3.0.conv2"


def _drop_channel(name):
    return lambda a: a.__setitem__(name, a[name][:, :-1])


def _crop(name):
    return lambda a: a.__setitem__(name, a[name][:, :, :-1])


# (id, case, change to the arrays, change to the attributes, Python message, custom-op key word)
BAD = [
    ("offset_channels", Case("b"), _drop_channel("offset"), None, "offset has 17 channels, expected 2\\*offset_group\\*kh\\*kw = 18", "offset"),
    ("mask_channels", Case("b"), _drop_channel("mask"), None, "mask has 8 channels, expected offset_group\\*kh\\*kw = 9", "mask"),
    ("channels_vs_group", Case("b", c=4, m=6), None, {"group": 3}, "not divisible by groups=3", "group"),
    ("channels_vs_offset_group", Case("b", c=4), None, {"offset_group": 3}, "offset_groups=3", "offset_group"),
    ("weight_in_channels", Case("b"), lambda a: a.__setitem__("W", a["W"][:, :-1]), None, "dim 1 must be input channels", "W"),
    ("offset_size", Case("b"), _crop("offset"), None, "offset spatial size \\(6, 9\\) differs from the output size \\(7, 9\\)", "offset"),
    ("mask_size", Case("b"), _crop("mask"), None, "mask spatial size \\(6, 9\\) differs from the output size \\(7, 9\\)", "mask"),
    ("bias_length", Case("b"), lambda a: a.__setitem__("B", a["B"][:-1]), None, "bias has shape \\(5,\\), expected \\(6,\\)", "B"),
    ("stride_zero", Case("b"), None, {"strides": [0, 1]}, "stride must be positive", "stride"),
    ("dilation_negative", Case("b"), None, {"dilations": [1, -1]}, "dilation must be positive", "dilation"),
    ("negative_pads", Case("b"), None, {"pads": [1, -1, 1, 1]}, "pads must be non-negative", "pads"),
    ("offset_batch", Case("b"), lambda a: a.__setitem__("offset", a["offset"][:1]), None, "offset batch 1 differs from input batch 2", "offset has batch size 1"),
    ("mask_batch", Case("b"), lambda a: a.__setitem__("mask", a["mask"][:1]), None, "mask batch 1 differs from input batch 2", "mask has batch size 1"),
    ("input_rank_3", Case("b"), lambda a: a.__setitem__("X", a["X"][0]), None, "input must be 4-D, got shape \\(4, 7, 9\\)", "input X must be 4-D"),
    ("mask_rank_3", Case("b"), lambda a: a.__setitem__("mask", a["mask"][0]), None, "mask must be 4-D", "mask must be 4-D"),
    ("kernel_larger_than_1x1_image", Case("b"), lambda a: a.__setitem__("X", a["X"][:, :, :1, :1]), {"pads": [0, 0, 0, 0]}, "output would be empty \\(-1x-1\\) for input 1x1", "output would be empty"),
    ("empty_image", Case("b"), lambda a: a.__setitem__("X", a["X"][:, :, :0]), None, "input must have C, H and W >= 1", "input X must have C, H and W >= 1"),
]


def _apply(case, change_arrays, change_attrs):
    arrays = case.make()
    if change_arrays:
        change_arrays(arrays)
    attrs = dict(case.attributes, **(change_attrs or {}))
    return arrays, attrs


def _reference(t, attrs):
    return deform_conv2d(t["X"], t["offset"], t["W"], t["B"], stride=attrs["strides"], padding=attrs["pads"],
                         dilation=attrs["dilations"], mask=t["mask"], groups=attrs["group"],
                         offset_groups=attrs["offset_group"])


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b[0])
def test_reference_names_the_mismatch(bad):
    _, case, change_arrays, change_attrs, message, _ = bad
    arrays, attrs = _apply(case, change_arrays, change_attrs)
    t = {k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()}
    with pytest.raises(ValueError, match=message):
        _reference(t, attrs)


@pytest.mark.custom_op
@pytest.mark.parametrize("bad", BAD, ids=lambda b: b[0])
def test_custom_op_names_the_node_and_the_mismatch(bad):
    _, case, change_arrays, change_attrs, _, keyword = bad
    arrays, attrs = _apply(case, change_arrays, change_attrs)
    model = single_node_model(case, "custom", attributes=attrs, node_name=NODE, arrays=arrays)
    with pytest.raises(Exception) as error:
        run_model(model, arrays, custom_op=True)
    text = str(error.value)
    assert NODE in text and keyword in text, text


def _valid():
    arrays = Case("b").make()
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, Case("b").attributes


def _expanded(shape):
    """A tensor of ``shape`` that allocates one element (a broadcast view): size checks see the shape."""
    return torch.zeros(1, 1, 1, 1).expand(*shape)


# Python-only arguments: (id, change to tensors and attributes, message)
PYTHON_ONLY = [
    ("stride_float", lambda t, a: a.update(strides=1.5), "stride must be an int or a pair of ints, got 1.5"),
    ("stride_string", lambda t, a: a.update(strides="2"), "stride must be an int or a pair of ints, got '2'"),
    ("stride_three_values", lambda t, a: a.update(strides=(1, 1, 1)), "stride must be an int or a pair, got \\(1, 1, 1\\)"),
    ("dilation_bool", lambda t, a: a.update(dilations=True), "dilation must be an int or a pair of ints, got True"),
    ("padding_three_values", lambda t, a: a.update(pads=(1, 1, 1)), "padding must be an int, \\(ph, pw\\) or \\(top, left, bottom, right\\), got \\(1, 1, 1\\)"),
    ("padding_float", lambda t, a: a.update(pads=0.5), "padding must be an int, \\(ph, pw\\) or"),
    ("groups_zero", lambda t, a: a.update(group=0), "groups must be positive, got 0"),
    ("offset_groups_negative", lambda t, a: a.update(offset_group=-2), "offset_groups must be positive, got -2"),
    ("weight_rank_5", lambda t, a: t.update(W=t["W"][..., None]), "weight must be 4-D, got shape \\(6, 4, 3, 3, 1\\)"),
    ("weight_empty_kernel", lambda t, a: t.update(W=t["W"][:, :, :0]), "weight has an empty kernel 0x3"),
    ("bias_2d", lambda t, a: t.update(B=t["B"][:, None]), "bias has shape \\(6, 1\\), expected \\(6,\\)"),
    ("input_integer_dtype", lambda t, a: t.update(X=t["X"].long()), "input must be a floating-point tensor, got torch.int64"),
    ("mask_bool_dtype", lambda t, a: t.update(mask=t["mask"] > 0.5), "mask must be a floating-point tensor, got torch.bool"),
    ("weight_dtype_differs", lambda t, a: t.update(X=t["X"].double()), "weight has dtype torch.float32, expected the input's torch.float64"),
    ("offset_channels_not_multiple", lambda t, a: (t.update(offset=t["offset"][:, :-1]), a.update(offset_group=None)), "offset has 17 channels, not a multiple of 2\\*kh\\*kw = 18"),
    ("weight_out_channels_vs_groups", lambda t, a: (t.update(W=t["W"][:5, :2], B=t["B"][:5]), a.update(group=2)), "weight has 5 output channels, not divisible by groups=2"),
    # Sizes whose counts overflow 32 bits or memory: refused from the shapes alone, nothing allocated.
    ("input_side_over_2_24", lambda t, a: t.update(X=_expanded((1, 4, 1 << 25, 1))), "input spatial size 33554432x1 is too large"),
    ("input_plane_over_2_31", lambda t, a: t.update(X=_expanded((1, 4, 1 << 16, 1 << 16))), "input spatial size 65536x65536 is too large \\(each side <= 16777216 and H\\*W < 2\\^31"),
    ("output_plane_over_2_31", lambda t, a: (a.update(pads=(1 << 16,) * 4), t.update(X=_expanded((2, 4, 7, 9)))), "output size 131077x131079 is too large \\(Ho\\*Wo < 2\\^31"),
    ("columns_over_memory", lambda t, a: t.update(X=_expanded((2, 4, 40000, 40000)), offset=_expanded((2, 18, 40000, 40000)), mask=_expanded((2, 9, 40000, 40000))), "the reference would need about .* GiB for its sampled columns .* more than this machine's"),
]


@pytest.mark.parametrize("bad", PYTHON_ONLY, ids=lambda b: b[0])
def test_reference_rejects_bad_arguments(bad):
    _, change, message = bad
    tensors, attrs = _valid()
    change(tensors, attrs)
    with pytest.raises(ValueError, match=f"deform_conv2d: {message}"):
        _reference(tensors, attrs)


def _typed_model(types: dict[str, int], attributes: dict | None = None) -> onnx.ModelProto:
    """A one-node custom-op model of Case("b") with the given element type per input (others float)."""
    case = Case("b")
    arrays = case.make()
    node = helper.make_node(schema.CUSTOM_OP_TYPE, ["X", "W", "offset", "B", "mask"], ["Y"], name=NODE,
                            domain=schema.CUSTOM_DOMAIN, **(attributes or case.attributes), **schema.PLUGIN_ATTRIBUTES)
    inputs = [helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), list(arrays[name].shape))
              for name in ("X", "W", "offset", "B", "mask")]
    output = helper.make_tensor_value_info("Y", types.get("X", TensorProto.FLOAT), None)
    graph = helper.make_graph([node], "bad", inputs, [output])
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", schema.STANDARD_OPSET), helper.make_opsetid(schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)])


_ATTRS = Case("b").attributes
# Session creation of the custom op: (id, model, message)
SESSION = [
    ("strides_as_floats", lambda: _typed_model({}, dict(_ATTRS, strides=[1.0, 1.0])), "attribute 'strides' must be of type ints"),
    ("kernel_shape_three_values", lambda: _typed_model({}, dict(_ATTRS, kernel_shape=[3, 3, 3])), "attribute 'kernel_shape' must have 2 values, got 3"),
    ("stride_over_2_24", lambda: _typed_model({}, dict(_ATTRS, strides=[1 << 40, 1])), "attribute 'strides' values must be <= 16777216"),
    ("group_zero", lambda: _typed_model({}, dict(_ATTRS, group=0)), "attribute 'group' must be >= 1, got 0"),
    ("offset_group_negative", lambda: _typed_model({}, dict(_ATTRS, offset_group=-1)), "attribute 'offset_group' must be >= 1, got -1"),
    ("weight_float16_input_float32", lambda: _typed_model({"W": TensorProto.FLOAT16}), "unsupported element types: .*W float16"),
    ("mask_float16_offset_float32", lambda: _typed_model({"mask": TensorProto.FLOAT16}), "offset and mask .*one type"),
    ("input_int32", lambda: _typed_model({"X": TensorProto.INT32}), "tensor\\(int32\\)' of input parameter \\(X\\)"),
    ("input_double", lambda: _typed_model({"X": TensorProto.DOUBLE, "W": TensorProto.DOUBLE, "B": TensorProto.DOUBLE}), "tensor\\(double\\)' of input parameter \\(X\\)"),
]


@pytest.mark.custom_op
@pytest.mark.parametrize("bad", SESSION, ids=lambda b: b[0])
def test_custom_op_session_rejects_bad_node(bad):
    _, make_model, message = bad
    with pytest.raises(Exception, match=message):
        ort_session(make_model().SerializeToString())


@pytest.mark.custom_op
@pytest.mark.parametrize("missing", ["strides", "pads", "dilations", "group", "offset_group", "kernel_shape"])
def test_custom_op_missing_required_attribute(missing):
    case = Case("attrs")
    arrays = case.make()
    attrs = {k: v for k, v in case.attributes.items() if k != missing}
    model = single_node_model(case, "custom", attributes=attrs, node_name=NODE, arrays=arrays)
    with pytest.raises(Exception) as error:
        run_model(model, arrays, custom_op=True)
    text = str(error.value)
    assert NODE in text and missing in text and "missing" in text, text


@pytest.mark.custom_op
def test_kernel_shape_attribute_must_match_weight():
    case = Case("kernel")
    arrays = case.make()
    model = single_node_model(case, "custom", attributes=dict(case.attributes, kernel_shape=[5, 5]), node_name=NODE)
    with pytest.raises(Exception, match="kernel_shape") as error:
        run_model(model, arrays, custom_op=True)
    assert NODE in str(error.value)


def _poison(case):
    """The case's arrays with NaN/Inf/huge offsets at random taps, and the same arrays with those offsets 0
    and those taps' mask 0: what the poisoned sample must contribute (nothing)."""
    arrays = case.make()
    poisoned = dict(arrays, offset=arrays["offset"].copy())
    cleaned = dict(arrays, offset=arrays["offset"].copy(), mask=arrays["mask"].copy())
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf, -np.inf, 1e30, -1e30, 3e38):
        n, tap, oy, ox = (int(rng.integers(0, s)) for s in (case.n, 9, *case.out_hw))
        axis = int(rng.integers(0, 2))
        poisoned["offset"][n, 2 * tap + axis, oy, ox] = bad
        cleaned["offset"][n, 2 * tap + axis, oy, ox] = 0.0
        cleaned["mask"][n, tap, oy, ox] = 0.0
    return poisoned, cleaned


@pytest.mark.custom_op
def test_non_finite_offsets_in_custom_op_never_read_outside():
    case = Case("nonfinite", offset_scale=2.0, seed=4)
    poisoned, cleaned = _poison(case)
    model = single_node_model(case, "custom")
    got = run_model(model, poisoned, custom_op=True)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, run_model(model, cleaned, custom_op=True), rtol=0, atol=1e-5)


def test_non_finite_offsets_in_reference_give_zero_samples():
    case = Case("nonfinite", offset_scale=2.0, seed=5)
    poisoned, cleaned = _poison(case)
    attrs = case.attributes
    as64 = [{k: None if v is None else torch.from_numpy(v).double() for k, v in arrays.items()}
            for arrays in (poisoned, cleaned)]
    got, expected = (_reference(t, attrs) for t in as64)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.custom_op
def test_empty_batch_gives_an_empty_output_like_the_custom_op():
    """N = 0 is not an error: both the reference and the custom op return (0, M, Ho, Wo)."""
    case = Case("empty_batch", n=0)
    arrays = case.make()
    t = {k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()}
    expected_shape = (0, case.m, *case.out_hw)
    assert tuple(_reference(t, case.attributes).shape) == expected_shape
    assert run_model(single_node_model(case, "custom", arrays=arrays), arrays, custom_op=True).shape == expected_shape


def _problem(**change):
    sizes = dict(batch=1, in_channels=4, in_height=8, in_width=8, out_channels=4, kernel_h=3, kernel_w=3, stride_h=1,
                 stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1, dilation_w=1, group=1,
                 offset_group=1, has_mask=1, has_bias=1)
    return cuda_kernels.Problem(**dict(sizes, **change))


# Sizes handed to the CUDA kernels' C API as numbers (the TensorRT plugin's path): refused by the planner
# before any memory exists. (id, change to a valid problem, message)
CUDA_SIZES = [
    ("cuda_input_plane_over_2_31", dict(in_height=1 << 24, in_width=1 << 24), "input X spatial size 16777216x16777216 is too large"),
    ("cuda_input_side_over_2_24", dict(in_width=1 << 25), "input X spatial size 8x33554432 is too large"),
    ("cuda_reduction_over_2_31", dict(in_channels=1 << 30), "problem too large for this kernel: .*C/group\\*kh\\*kw = 9663676416"),
    ("cuda_zero_stride", dict(stride_h=0), "attribute 'strides' values must be >= 1"),
    ("cuda_group_mismatch", dict(group=3), "input X has C=4 channels, not divisible by group=3"),
]


@pytest.mark.parametrize("bad", CUDA_SIZES, ids=lambda b: b[0])
def test_cuda_kernel_plan_rejects_bad_sizes(bad):
    try:
        cuda_kernels.cuda_kernel_library()
    except FileNotFoundError as error:  # no nvcc: the CUDA kernels are not built
        pytest.skip(str(error))
    _, change, message = bad
    with pytest.raises(cuda_kernels.CudaKernelError, match=message):
        cuda_kernels.launch_plan(_problem(**change), emulated=True)
