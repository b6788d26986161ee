"""The ONNX Runtime custom op dcn_deploy::DcnDeformConv against ORT's own DeformConv.

Each case builds two single-node graphs (tests/graphs.py): the standard
DeformConv-19 node (ONNX Runtime's native kernel is the independent oracle)
and the custom node, runs both on the same seeded inputs (tests/cases.py) and compares.

The library is found by dcn_deploy.ort_custom_op_library(): $DCN_DEPLOY_ORT_LIB or
build/lib/libdcn_deploy_ort.so; build it with scripts/build_plugins.sh. A missing library
is a failure, not a skip.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import onnx
import pytest
from cases import CASES, Case
from graphs import feeds, run_model, single_node_model
from onnxruntime.capi.onnxruntime_pybind11_state import (
    InvalidArgument,
    InvalidGraph,
    RuntimeException,
)

from dcn_deploy.backends.onnxruntime import ort_session

NODE_NAME = "layer3/dcn"

# Also run under ASan+UBSan by scripts/sanitize_tests.sh, which selects this marker.
pytestmark = pytest.mark.custom_op


def run(case: Case, arrays: dict, kind: str) -> np.ndarray:
    """Run ``arrays`` through a one-node graph of ``kind`` ("custom" or "standard")."""
    return run_model(single_node_model(case, kind, arrays=arrays), arrays, custom_op=kind == "custom")


def custom_session(case: Case, arrays: dict, attributes: dict | None = None, node_name: str = NODE_NAME):
    model = single_node_model(case, "custom", attributes=attributes, node_name=node_name, arrays=arrays)
    return ort_session(model.SerializeToString())


def taps(case: Case) -> int:
    return case.offset_group * case.kernel[0] * case.kernel[1]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    error = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    assert error <= 1e-5 * scale, f"max abs error {error:.3g} exceeds {1e-5 * scale:.3g}"


# Configurations beyond the shared CASES. Integer offsets with offset_scale > max(h, w) put
# samples on pixels, on the last row/column, on -1 / H / W and beyond the image.
EXTRA_CASES = [
    Case("1x1_no_mask", n=1, kernel=(1, 1), pads=(0, 0, 0, 0), mask=False, seed=101),
    Case("3x2_stride_dilation_asym_pads_groups", n=1, c=4, m=6, h=11, w=8, kernel=(3, 2), stride=(2, 1),
         pads=(1, 0, 2, 1), dilation=(2, 2), group=2, offset_group=2, seed=102),
    Case("5x5_offset_group3_mask_without_bias", n=1, c=6, m=4, h=9, w=12, kernel=(5, 5), pads=(2, 2, 2, 2),
         offset_group=3, bias=False, mask=True, seed=103),
    Case("group2_offset_group3_batch3_nonsquare", n=3, c=6, m=8, h=5, w=13, stride=(2, 1), pads=(0, 2, 1, 0),
         group=2, offset_group=3, seed=104),
    Case("large_offsets_leave_image", n=2, h=6, w=5, offset_scale=8.0, seed=105),
    Case("integer_offsets_beyond_image", n=2, h=5, w=6, integer_offsets=True, offset_scale=7.0, seed=106),
    Case("integer_offsets_stride_dilation", n=1, h=8, w=7, stride=(2, 1), dilation=(2, 1), pads=(2, 1, 0, 3),
         integer_offsets=True, offset_scale=9.0, bias=False, seed=107),
    Case("single_pixel_input", n=3, c=2, m=3, h=1, w=1, pads=(1, 1, 1, 1), seed=108),
    Case("single_pixel_input_1x1", n=1, h=1, w=1, kernel=(1, 1), pads=(0, 0, 0, 0), offset_scale=0.7, seed=109),
    Case("many_tiles", n=1, c=3, m=5, h=40, w=37, offset_scale=3.0, seed=110),
]


@pytest.mark.parametrize("case", CASES + EXTRA_CASES, ids=lambda case: case.name)
def test_matches_native_deform_conv(case: Case) -> None:
    arrays = case.make()
    expected = run(case, arrays, "standard")
    assert expected.shape == (case.n, case.m, *case.out_hw)
    assert_close(run(case, arrays, "custom"), expected)


def test_random_configs_match_native() -> None:
    rng = np.random.default_rng(2024)
    for index in range(12):
        group = int(rng.choice([1, 2]))
        offset_group = int(rng.choice([1, 2, 3]))
        h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        integer_offsets = bool(rng.integers(0, 2))
        case = Case(
            f"random_{index}",
            n=int(rng.integers(1, 4)),
            c=group * offset_group * int(rng.integers(1, 3)),
            h=h,
            w=w,
            m=group * int(rng.integers(1, 4)),
            kernel=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
            stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            pads=tuple(int(p) for p in rng.integers(0, 3, size=4)),
            dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            group=group,
            offset_group=offset_group,
            bias=bool(rng.integers(0, 2)),
            mask=bool(rng.integers(0, 2)),
            # Integer offsets reach past the image, as far as max(h, w) + 1 and beyond.
            offset_scale=float(max(h, w) + 1) if integer_offsets else float(rng.uniform(0.5, 6.0)),
            integer_offsets=integer_offsets,
            seed=int(rng.integers(2**31)),
        )
        if min(case.out_hw) < 1:
            continue
        arrays = case.make()
        assert_close(run(case, arrays, "custom"), run(case, arrays, "standard"))


def test_integer_offsets_land_exactly_on_borders() -> None:
    """Every sample sits on a chosen integer row/column around the image edges."""
    case = Case("borders", n=2, c=4, h=5, w=6, m=4, offset_group=2, seed=21)
    arrays = case.make()
    rng = np.random.default_rng(21)
    out_h, out_w = case.out_hw
    kh, kw = case.kernel
    border_rows = np.array([-1, 0, 1, case.h - 2, case.h - 1, case.h], np.float32)
    border_cols = np.array([-1, 0, 1, case.w - 2, case.w - 1, case.w], np.float32)
    offset = np.empty((case.n, case.offset_group, kh * kw, 2, out_h, out_w), np.float32)
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    for i in range(kh):
        for j in range(kw):
            base_y = oy * case.stride[0] - case.pads[0] + i * case.dilation[0]
            base_x = ox * case.stride[1] - case.pads[1] + j * case.dilation[1]
            target_y = rng.choice(border_rows, size=(case.n, case.offset_group, out_h, out_w))
            target_x = rng.choice(border_cols, size=(case.n, case.offset_group, out_h, out_w))
            offset[:, :, i * kw + j, 0] = target_y - base_y
            offset[:, :, i * kw + j, 1] = target_x - base_x
    arrays["offset"] = offset.reshape(case.n, 2 * taps(case), out_h, out_w)
    assert_close(run(case, arrays, "custom"), run(case, arrays, "standard"))


def test_non_finite_offsets_give_zero_samples() -> None:
    case = Case("non_finite", n=2, c=4, h=6, w=7, m=4, offset_group=2, seed=7)
    arrays = case.make()
    offset = arrays["offset"]
    flat = offset.reshape(-1)
    flat[0::7] = np.nan
    flat[3::11] = np.inf
    flat[5::13] = -np.inf
    # Moving a sample far off the image zeroes it, which is what NaN/Inf must do.
    zeroed = dict(arrays, offset=np.where(np.isfinite(offset), offset, np.float32(1e4)).astype(np.float32))
    actual = run(case, arrays, "custom")
    assert np.all(np.isfinite(actual))
    assert_close(actual, run(case, zeroed, "standard"))


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_non_finite_input_takes_the_exact_path(special: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # With AVX2, 16 channels take the channels-last path, whose copy of X finds the value and
    # falls back to the exact path (outside corners never read); the portable kernels scan X
    # first and take the exact path directly. Both must give the same Inf/NaN pattern (the
    # same samples in the same order; only FMA rounding of finite sums differs).
    # (ORT's native DeformConv and the dense PyTorch reference are no oracle here: they also
    # carry Inf/NaN through samples that lie outside the image.)
    case = Case("non_finite_x", n=2, c=16, m=8, h=9, w=10, seed=8, offset_scale=2.0)
    arrays = case.make()
    arrays["X"][1, 3, 0, :] = special  # The top row of one plane, next to the border.
    arrays["X"][1, 7, 4, 5] = special
    actual = run(case, arrays, "custom")
    monkeypatch.setenv("DCN_DEPLOY_CPU_KERNELS", "portable")
    exact = run(case, arrays, "custom")
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(exact))
    np.testing.assert_array_equal(np.where(np.isinf(actual), actual, 0), np.where(np.isinf(exact), exact, 0))
    finite = np.isfinite(exact)
    assert_close(actual[finite], exact[finite].astype(np.float64))
    assert np.any(~np.isfinite(actual[1])) and np.any(np.isfinite(actual[1]))
    assert_close(actual[0], run(case, arrays, "standard")[0])  # Image 0 is finite.


def test_empty_batch_gives_empty_output() -> None:
    case = Case("empty_batch", n=2, seed=5)
    arrays = case.make()
    for name in ("X", "offset", "mask"):
        arrays[name] = arrays[name][:0]
    assert run(case, arrays, "custom").shape == (0, case.m, *case.out_hw)


def test_session_shared_by_threads() -> None:
    base = Case("threads", n=2, c=4, h=12, w=10, m=8, group=2, offset_group=2, seed=99)
    inputs = [feeds(dataclasses.replace(base, seed=base.seed + index).make()) for index in range(8)]
    expected = [run(base, arrays, "standard") for arrays in inputs]
    session = custom_session(base, inputs[0])
    failures: list[str] = []
    barrier = threading.Barrier(len(inputs))

    def worker(index: int) -> None:
        barrier.wait()
        for iteration in range(25):
            try:
                assert_close(session.run(None, inputs[index])[0], expected[index])
            except Exception as error:  # noqa: BLE001 - collected and reported below.
                failures.append(f"thread {index} iteration {iteration}: {error}")
                return

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_library_registers_into_several_session_options() -> None:
    case = Case("twice", n=1, kernel=(1, 1), pads=(0, 0, 0, 0), seed=3)
    arrays = case.make()
    first = custom_session(case, arrays)
    second = custom_session(case, arrays)
    np.testing.assert_array_equal(first.run(None, feeds(arrays))[0], second.run(None, feeds(arrays))[0])


# --- invalid inputs: every failure is an ORT error naming the node -----------------------------

VALID = Case("valid", n=2, c=4, h=6, w=5, m=6, pads=(0, 0, 0, 0), seed=11)


def run_custom_expecting_error(attributes: dict, arrays: dict) -> str:
    """Shape problems fail Run() with INVALID_ARGUMENT; attribute problems fail session creation."""
    try:
        session = custom_session(VALID, arrays, attributes=attributes)
    except RuntimeException as error:  # ORT reports kernel-creation failures as RUNTIME_EXCEPTION.
        message = str(error)
    else:
        with pytest.raises(InvalidArgument) as raised:
            session.run(None, feeds(arrays))
        message = str(raised.value)
    assert f"DcnDeformConv node '{NODE_NAME}'" in message, message
    return message


def zeros_like_shape(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    shape = list(array.shape)
    shape[axis] = size
    return np.zeros(shape, np.float32)


def reshaped_inputs(change: str) -> dict:
    arrays = VALID.make()  # X [2,4,6,5], W [6,4,3,3], offset [2,18,4,3], B [6], mask [2,9,4,3]
    if change == "x_rank":
        arrays["X"] = arrays["X"][0]
    elif change == "offset_channels":
        arrays["offset"] = zeros_like_shape(arrays["offset"], 1, 17)
    elif change == "mask_channels":
        arrays["mask"] = zeros_like_shape(arrays["mask"], 1, 8)
    elif change == "weight_channels":
        arrays["W"] = zeros_like_shape(arrays["W"], 1, 3)
    elif change == "offset_batch":
        arrays["offset"] = arrays["offset"][:1]
    elif change == "mask_batch":
        arrays["mask"] = arrays["mask"][:1]
    elif change == "offset_spatial":
        arrays["offset"] = zeros_like_shape(arrays["offset"], 3, 4)
    elif change == "mask_spatial":
        arrays["mask"] = zeros_like_shape(arrays["mask"], 2, 3)
    elif change == "bias_length":
        arrays["B"] = arrays["B"][:5]
    elif change == "empty_output":
        arrays["X"] = arrays["X"][:, :, :2, :]
    elif change == "kernel_mismatch":
        arrays["W"] = arrays["W"][:, :, :, :2]
    return arrays


@pytest.mark.parametrize(
    ("change", "expected_text"),
    [
        ("x_rank", "input X must be 4-D"),
        ("offset_channels", "offset has 17 channels, expected 2*offset_group*kh*kw = 18 (offset_group=1, kernel 3x3)"),
        ("mask_channels", "mask has 8 channels, expected offset_group*kh*kw = 9"),
        ("weight_channels", "weight W has 3 input channels per group"),
        ("offset_batch", "offset has batch size 1, expected N = 2"),
        ("mask_batch", "mask has batch size 1, expected N = 2"),
        ("offset_spatial", "offset has spatial size 4x4, expected the output size Ho x Wo = 4x3"),
        ("mask_spatial", "mask has spatial size 3x3, expected the output size Ho x Wo = 4x3"),
        ("bias_length", "bias B has 5 elements, expected M = 6"),
        ("empty_output", "output would be empty"),
        ("kernel_mismatch", "attribute 'kernel_shape' is 3x3 but weight W has spatial size 3x2"),
    ],
)
def test_bad_input_shapes(change: str, expected_text: str) -> None:
    message = run_custom_expecting_error(VALID.attributes, reshaped_inputs(change))
    assert expected_text in message, message


@pytest.mark.parametrize(
    ("group", "offset_group", "out_channels", "expected_text"),
    [
        (3, 1, 6, "not divisible by group=3"),
        (1, 3, 6, "not divisible by offset_group=3"),
        (4, 1, 6, "output channels, not divisible by group=4"),
    ],
)
def test_bad_channel_grouping(group: int, offset_group: int, out_channels: int, expected_text: str) -> None:
    attributes = dict(VALID.attributes, group=group, offset_group=offset_group)
    arrays = VALID.make()
    arrays["W"] = np.zeros((out_channels, max(1, 4 // group), 3, 3), np.float32)
    message = run_custom_expecting_error(attributes, arrays)
    assert expected_text in message, message


@pytest.mark.parametrize(
    ("attribute", "value", "expected_text"),
    [
        ("strides", [0, 1], "attribute 'strides' values must be >= 1"),
        ("strides", [1, 1, 1], "attribute 'strides' must have 2 values, got 3"),
        ("dilations", [1, -1], "attribute 'dilations' values must be >= 1"),
        ("dilations", [1], "attribute 'dilations' must have 2 values"),
        ("pads", [0, -1, 0, 0], "attribute 'pads' values must be >= 0"),
        ("pads", [0, 0], "attribute 'pads' must have 4 values"),
        ("kernel_shape", [0, 3], "attribute 'kernel_shape' values must be >= 1"),
        ("kernel_shape", [3, 3, 3], "attribute 'kernel_shape' must have 2 values"),
        ("group", 0, "attribute 'group' must be >= 1"),
        ("offset_group", 0, "attribute 'offset_group' must be >= 1"),
        ("strides", 1, "attribute 'strides' must be of type ints"),
        ("group", [1], "attribute 'group' must be of type int"),
    ],
)
def test_bad_attributes(attribute: str, value, expected_text: str) -> None:
    attributes = dict(VALID.attributes, **{attribute: value})
    message = run_custom_expecting_error(attributes, VALID.make())
    assert expected_text in message, message


@pytest.mark.parametrize("attribute", ["dilations", "group", "kernel_shape", "offset_group", "pads", "strides"])
def test_missing_attribute(attribute: str) -> None:
    attributes = VALID.attributes
    del attributes[attribute]
    message = run_custom_expecting_error(attributes, VALID.make())
    assert f"DcnDeformConv node '{NODE_NAME}': required attribute '{attribute}' is missing" in message, message


def test_attribute_errors_surface_at_session_creation() -> None:
    attributes = dict(VALID.attributes, strides=[0, 1])
    with pytest.raises(RuntimeException, match="DcnDeformConv node 'layer3/dcn': attribute 'strides'"):
        custom_session(VALID, VALID.make(), attributes=attributes)


def test_unnamed_node_is_named_by_its_output() -> None:
    arrays = VALID.make()
    arrays["B"] = arrays["B"][:5]
    session = custom_session(VALID, arrays, node_name="")
    with pytest.raises(InvalidArgument, match="DcnDeformConv node '<unnamed node with output Y>': bias B"):
        session.run(None, feeds(arrays))


def test_non_float_inputs_are_rejected() -> None:
    # The op declares float32 and float16 inputs only, so ORT itself refuses the graph when loading it
    # (mixed float32/float16 combinations: tests/test_fp16.py).
    arrays = VALID.make(dtype=np.float64)
    with pytest.raises(InvalidGraph) as raised:
        custom_session(VALID, arrays).run(None, feeds(arrays))
    message = str(raised.value)
    assert NODE_NAME in message and "DcnDeformConv" in message and "tensor(double)" in message, message


def test_models_pass_the_onnx_checker() -> None:
    for kind in ("standard", "custom"):
        onnx.checker.check_model(single_node_model(VALID, kind, node_name=NODE_NAME))
