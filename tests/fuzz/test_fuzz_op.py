"""Random valid attribute and shape combinations: our ONNX Runtime custom op and the CUDA kernels' CPU
emulation against the float64 reference within the fp32 tolerance, the INT8 op bitwise against its exact
reference; random invalid ones: an error naming the node, never a crash."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import Case
from graphs import run_model, single_node_model
from hypothesis import given
from hypothesis import strategies as st
from test_int8 import int8_model, quantized_case, reference, run_int8_model

from dcn_deploy import deform_conv2d
from dcn_deploy.backends import cuda_kernels
from dcn_deploy.op.tolerances import tolerance_for

pytestmark = pytest.mark.fuzz

FP32 = tolerance_for("fp32")
NODE = "fuzzed"


@st.composite
def valid_cases(draw) -> Case:
    """A small random problem whose output is not empty: groups and offset groups dividing the channels,
    any kernel 1..3, stride, dilation 1..2, asymmetric pads 0..2, offsets up to 4 px, mask/bias or not."""
    group, offset_group = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    c = int(np.lcm(group, offset_group)) * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    sizes = []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1 - pads[axis] - pads[axis + 2]
        sizes.append(draw(st.integers(max(1, span), max(1, span) + 6)))
    return Case("fuzz", n=draw(st.integers(1, 2)), c=c, h=sizes[0], w=sizes[1], m=group * draw(st.integers(1, 3)),
                kernel=kernel, stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))), pads=pads,
                dilation=dilation, group=group, offset_group=offset_group, mask=draw(st.booleans()),
                bias=draw(st.booleans()), offset_scale=draw(st.sampled_from([0.0, 0.5, 1.5, 4.0])),
                integer_offsets=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _reference64(case: Case, arrays) -> torch.Tensor:
    t = {k: None if v is None else torch.from_numpy(v).double() for k, v in arrays.items()}
    return deform_conv2d(t["X"], t["offset"], t["W"], t["B"], stride=case.stride, padding=case.pads,
                         dilation=case.dilation, mask=t["mask"], groups=case.group, offset_groups=case.offset_group)


def _max_rel(out, ref: torch.Tensor) -> float:
    out = torch.as_tensor(np.asarray(out)).double()
    scale = max(float(ref.abs().max()), 1e-30)
    return float((out - ref).abs().max()) / scale


@pytest.mark.custom_op
@given(valid_cases())
def test_custom_op_matches_float64_reference(case):
    arrays = case.make()
    out = run_model(single_node_model(case, "custom", arrays=arrays), arrays, custom_op=True)
    assert _max_rel(out, _reference64(case, arrays)) <= FP32.max_rel, case


@given(valid_cases())
def test_cuda_kernel_emulation_matches_float64_reference(case):
    try:
        cuda_kernels.cuda_kernel_library()
    except FileNotFoundError as error:  # no nvcc: the CUDA kernels are not built
        pytest.skip(str(error))
    arrays = case.make()
    t = {k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()}
    out = cuda_kernels.deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], stride=case.stride,
                                          padding=case.pads, dilation=case.dilation, mask=t["mask"],
                                          groups=case.group, offset_groups=case.offset_group, emulate=True,
                                          algorithm="simt")
    assert _max_rel(out, _reference64(case, arrays)) <= FP32.max_rel, case


@pytest.mark.custom_op
@given(valid_cases(), st.sampled_from([None, "requantized"]))
def test_int8_op_is_bitwise_its_exact_reference(case, requantize):
    q = quantized_case(case)
    y_scale = None
    if requantize:
        y_scale = float(np.float32(max(float(reference(case, q).abs().max()), 1e-3) / 100))
    out = run_int8_model(int8_model(case, q, y_scale=y_scale), q)
    assert np.array_equal(out, reference(case, q, y_scale=y_scale).numpy()), case


def _break(case: Case, draw) -> tuple[Case, dict, dict, str]:
    """One random defect of a valid case: (case, attribute change, array change, what it breaks)."""
    kind = draw(st.sampled_from(["stride", "dilation", "pads", "group", "offset_group", "offset_channels",
                                 "mask_channels", "offset_size", "bias", "weight_channels", "kernel_shape"]))
    attrs, arrays = {}, {}
    if kind == "stride":
        attrs["strides"] = [draw(st.integers(-3, 0)), 1]
    elif kind == "dilation":
        attrs["dilations"] = [1, draw(st.integers(-3, 0))]
    elif kind == "pads":
        attrs["pads"] = [0, 0, draw(st.integers(-5, -1)), 0]
    elif kind == "group":
        attrs["group"] = draw(st.sampled_from([0, -1, case.c + 1]))
    elif kind == "offset_group":
        attrs["offset_group"] = draw(st.sampled_from([0, -2, case.c + 1]))
    elif kind == "offset_channels":
        arrays["offset"] = lambda a: a[:, : -draw(st.integers(1, a.shape[1]))] if a.shape[1] > 1 else a[:, :0]
    elif kind == "mask_channels":
        case.mask = True
        arrays["mask"] = lambda a: np.concatenate([a, a[:, :1]], axis=1)
    elif kind == "offset_size":
        arrays["offset"] = lambda a: np.concatenate([a, a[:, :, :1]], axis=2)
    elif kind == "bias":
        case.bias = True
        arrays["B"] = lambda a: np.concatenate([a, a[:1]])
    elif kind == "weight_channels":
        arrays["W"] = lambda a: np.concatenate([a, a[:, :1]], axis=1)
    else:
        attrs["kernel_shape"] = [case.kernel[0] + 1, case.kernel[1]]
    return case, attrs, arrays, kind


@st.composite
def invalid_cases(draw):
    return _break(draw(valid_cases()), draw)


def _bad_problem(bad):
    case, attr_change, array_change, kind = bad
    arrays = case.make()
    for name, change in array_change.items():
        arrays[name] = np.ascontiguousarray(change(arrays[name]))
    return case, dict(case.attributes, **attr_change), arrays, kind


@given(invalid_cases())
def test_reference_rejects_invalid_problem(bad):
    case, attrs, arrays, kind = _bad_problem(bad)
    if kind == "kernel_shape":  # the reference takes the kernel from the weight: nothing to break
        return
    t = {k: None if v is None else torch.from_numpy(v) for k, v in arrays.items()}
    with pytest.raises(ValueError, match="deform_conv2d: "):
        deform_conv2d(t["X"], t["offset"], t["W"], t["B"], stride=attrs["strides"], padding=attrs["pads"],
                      dilation=attrs["dilations"], mask=t["mask"], groups=attrs["group"],
                      offset_groups=attrs["offset_group"])


@pytest.mark.custom_op
@given(invalid_cases())
def test_custom_op_rejects_invalid_problem_naming_the_node(bad):
    case, attrs, arrays, _ = _bad_problem(bad)
    model = single_node_model(case, "custom", attributes=attrs, node_name=NODE, arrays=arrays)
    with pytest.raises(Exception) as error:
        run_model(model, arrays, custom_op=True)
    assert f"DcnDeformConv node '{NODE}'" in str(error.value), str(error.value)
