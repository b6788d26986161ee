"""The ONNX Runtime custom op dcn_deploy::DcnDeformConv against ORT's own DeformConv.

Each case builds two single-node graphs with onnx.helper: the standard
DeformConv-19 node (ONNX Runtime's native kernel is the independent oracle)
and the custom node, runs both on the same random inputs and compares.

The library comes from $DCN_DEPLOY_ORT_LIB (a relative path is looked up in the
working directory, then the repository root) or build/lib/libdcn_deploy_ort.so;
build it with scripts/build_plugins.sh. A missing library is a failure, not a skip.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument, InvalidGraph, RuntimeException

REPO_ROOT = Path(__file__).resolve().parents[1]
CUSTOM_DOMAIN = "dcn_deploy"
CUSTOM_OP = "DcnDeformConv"
NODE_NAME = "layer3/dcn"
IR_VERSION = 10  # Opset 19 needs IR >= 9; newer onnx defaults exceed what some ORT releases accept.


# Also run under ASan+UBSan by scripts/sanitize_tests.sh, which selects this marker.
pytestmark = pytest.mark.custom_op


def library_path() -> Path:
    configured = os.environ.get("DCN_DEPLOY_ORT_LIB")
    if not configured:
        return REPO_ROOT / "build" / "lib" / "libdcn_deploy_ort.so"
    path = Path(configured)
    if path.is_absolute() or path.is_file():  # A relative path that exists is taken from the working directory.
        return path.resolve()
    return REPO_ROOT / path


@pytest.fixture(scope="module")
def ort_library() -> str:
    path = library_path()
    assert path.is_file(), f"{path} not found: build it with scripts/build_plugins.sh (or set DCN_DEPLOY_ORT_LIB)"
    return str(path)


@dataclasses.dataclass(frozen=True)
class Config:
    batch: int = 1
    channels: int = 4
    height: int = 7
    width: int = 9
    out_channels: int = 6
    kernel: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (1, 1, 1, 1)  # top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    offset_group: int = 1
    bias: bool = True
    mask: bool = True
    offset_scale: float = 1.5
    integer_offsets: bool = False

    @property
    def out_size(self) -> tuple[int, int]:
        def extent(size: int, begin: int, end: int, kernel: int, stride: int, dilation: int) -> int:
            return (size + begin + end - (dilation * (kernel - 1) + 1)) // stride + 1

        kh, kw = self.kernel
        return (
            extent(self.height, self.pads[0], self.pads[2], kh, self.strides[0], self.dilations[0]),
            extent(self.width, self.pads[1], self.pads[3], kw, self.strides[1], self.dilations[1]),
        )

    @property
    def taps(self) -> int:
        return self.offset_group * self.kernel[0] * self.kernel[1]


def attributes_of(config: Config) -> dict:
    return {
        "dilations": list(config.dilations),
        "group": config.group,
        "kernel_shape": list(config.kernel),
        "offset_group": config.offset_group,
        "pads": list(config.pads),
        "strides": list(config.strides),
    }


def make_inputs(config: Config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out_h, out_w = config.out_size
    kh, kw = config.kernel
    shape_offset = (config.batch, 2 * config.taps, out_h, out_w)
    if config.integer_offsets:
        # Integer offsets put samples exactly on pixels, on the last row/column
        # and on -1 / H / W, where corners fall off the image.
        reach = max(config.height, config.width) + 1
        offset = rng.integers(-reach, reach + 1, size=shape_offset).astype(np.float32)
    else:
        offset = (rng.standard_normal(shape_offset) * config.offset_scale).astype(np.float32)
    inputs = {
        "X": rng.standard_normal((config.batch, config.channels, config.height, config.width)).astype(np.float32),
        "W": rng.standard_normal((config.out_channels, config.channels // config.group, kh, kw)).astype(np.float32),
        "offset": offset,
    }
    if config.bias:
        inputs["B"] = rng.standard_normal(config.out_channels).astype(np.float32)
    if config.mask:
        inputs["mask"] = rng.uniform(0.0, 1.0, (config.batch, config.taps, out_h, out_w)).astype(np.float32)
    return inputs


def build_model(
    op_type: str,
    attributes: dict,
    input_ranks: dict[str, int],
    node_name: str = NODE_NAME,
    elem_type: int = TensorProto.FLOAT,
) -> bytes:
    """A one-node model; graph inputs have symbolic dims so any shape can be fed."""
    custom = op_type == CUSTOM_OP
    node_inputs = ["X", "W", "offset"]
    if "mask" in input_ranks:
        node_inputs += ["B" if "B" in input_ranks else "", "mask"]
    elif "B" in input_ranks:
        node_inputs.append("B")
    node_attributes = dict(attributes)
    if custom:
        node_attributes.update(plugin_namespace="dcn_deploy", plugin_version="1")
    node = helper.make_node(
        op_type, node_inputs, ["Y"], name=node_name, domain=CUSTOM_DOMAIN if custom else "", **node_attributes
    )
    graph_inputs = [
        helper.make_tensor_value_info(name, elem_type, [f"{name}_d{axis}" for axis in range(rank)])
        for name, rank in input_ranks.items()
    ]
    output = helper.make_tensor_value_info("Y", elem_type, ["N", "M", "Ho", "Wo"])
    opsets = [helper.make_opsetid("", 19)]
    if custom:
        opsets.append(helper.make_opsetid(CUSTOM_DOMAIN, 1))
    model = helper.make_model(helper.make_graph([node], "dcn", graph_inputs, [output]), opset_imports=opsets)
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def input_ranks_of(inputs: dict[str, np.ndarray]) -> dict[str, int]:
    return {name: value.ndim for name, value in inputs.items()}


def custom_session(library: str, model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def native_session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def run_custom(library: str, config: Config, inputs: dict[str, np.ndarray]) -> np.ndarray:
    model = build_model(CUSTOM_OP, attributes_of(config), input_ranks_of(inputs))
    return custom_session(library, model).run(None, inputs)[0]


def run_native(config: Config, inputs: dict[str, np.ndarray]) -> np.ndarray:
    model = build_model("DeformConv", attributes_of(config), input_ranks_of(inputs))
    return native_session(model).run(None, inputs)[0]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    error = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    assert error <= 1e-5 * scale, f"max abs error {error:.3g} exceeds {1e-5 * scale:.3g}"


CONFIGS = {
    "1x1": Config(kernel=(1, 1), pads=(0, 0, 0, 0), mask=False),
    "3x3_mask_bias": Config(),
    "3x3_no_mask_no_bias": Config(bias=False, mask=False),
    "3x2_stride_dilation_asym_pads_groups": Config(
        channels=4, out_channels=6, height=11, width=8, kernel=(3, 2), strides=(2, 1), pads=(1, 0, 2, 1),
        dilations=(2, 2), group=2, offset_group=2,
    ),
    "5x5_offset_group3_mask_without_bias": Config(
        channels=6, out_channels=4, height=9, width=12, kernel=(5, 5), pads=(2, 2, 2, 2), offset_group=3,
        bias=False, mask=True,
    ),
    "group2_offset_group3_batch3_nonsquare": Config(
        batch=3, channels=6, out_channels=8, height=5, width=13, kernel=(3, 3), strides=(2, 1), pads=(0, 2, 1, 0),
        group=2, offset_group=3,
    ),
    "large_offsets_leave_image": Config(batch=2, height=6, width=5, offset_scale=8.0),
    "integer_offsets_on_borders": Config(batch=2, height=5, width=6, integer_offsets=True),
    "integer_offsets_stride_dilation": Config(
        height=8, width=7, strides=(2, 1), dilations=(2, 1), pads=(2, 1, 0, 3), integer_offsets=True, bias=False,
    ),
    "single_pixel_input": Config(batch=3, height=1, width=1, channels=2, out_channels=3, pads=(1, 1, 1, 1)),
    "single_pixel_input_1x1": Config(height=1, width=1, kernel=(1, 1), pads=(0, 0, 0, 0), offset_scale=0.7),
    "many_tiles": Config(channels=3, out_channels=5, height=40, width=37, offset_scale=3.0),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_native_deform_conv(ort_library: str, name: str) -> None:
    config = CONFIGS[name]
    rng = np.random.default_rng(sorted(CONFIGS).index(name) + 1)
    inputs = make_inputs(config, rng)
    expected = run_native(config, inputs)
    assert expected.shape == (config.batch, config.out_channels, *config.out_size)
    assert_close(run_custom(ort_library, config, inputs), expected)


def test_random_configs_match_native(ort_library: str) -> None:
    rng = np.random.default_rng(2024)
    for _ in range(12):
        group = int(rng.choice([1, 2]))
        offset_group = int(rng.choice([1, 2, 3]))
        kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        config = Config(
            batch=int(rng.integers(1, 4)),
            channels=group * offset_group * int(rng.integers(1, 3)),
            height=int(rng.integers(1, 10)),
            width=int(rng.integers(1, 10)),
            out_channels=group * int(rng.integers(1, 4)),
            kernel=kernel,
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            pads=tuple(int(p) for p in rng.integers(0, 3, size=4)),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            group=group,
            offset_group=offset_group,
            bias=bool(rng.integers(0, 2)),
            mask=bool(rng.integers(0, 2)),
            offset_scale=float(rng.uniform(0.5, 6.0)),
            integer_offsets=bool(rng.integers(0, 2)),
        )
        if min(config.out_size) < 1:
            continue
        inputs = make_inputs(config, rng)
        assert_close(run_custom(ort_library, config, inputs), run_native(config, inputs))


def test_integer_offsets_land_exactly_on_borders(ort_library: str) -> None:
    """Every sample sits on a chosen integer row/column around the image edges."""
    config = Config(batch=2, channels=4, height=5, width=6, out_channels=4, offset_group=2)
    rng = np.random.default_rng(21)
    inputs = make_inputs(config, rng)
    out_h, out_w = config.out_size
    kh, kw = config.kernel
    border_rows = np.array([-1, 0, 1, config.height - 2, config.height - 1, config.height], np.float32)
    border_cols = np.array([-1, 0, 1, config.width - 2, config.width - 1, config.width], np.float32)
    offset = np.empty((config.batch, config.offset_group, kh * kw, 2, out_h, out_w), np.float32)
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    for i in range(kh):
        for j in range(kw):
            base_y = oy * config.strides[0] - config.pads[0] + i * config.dilations[0]
            base_x = ox * config.strides[1] - config.pads[1] + j * config.dilations[1]
            target_y = rng.choice(border_rows, size=(config.batch, config.offset_group, out_h, out_w))
            target_x = rng.choice(border_cols, size=(config.batch, config.offset_group, out_h, out_w))
            offset[:, :, i * kw + j, 0] = target_y - base_y
            offset[:, :, i * kw + j, 1] = target_x - base_x
    inputs["offset"] = offset.reshape(config.batch, 2 * config.taps, out_h, out_w)
    assert_close(run_custom(ort_library, config, inputs), run_native(config, inputs))


def test_non_finite_offsets_give_zero_samples(ort_library: str) -> None:
    config = Config(batch=2, channels=4, height=6, width=7, out_channels=4, offset_group=2)
    inputs = make_inputs(config, np.random.default_rng(7))
    offset = inputs["offset"]
    flat = offset.reshape(-1)
    flat[0::7] = np.nan
    flat[3::11] = np.inf
    flat[5::13] = -np.inf
    # Moving a sample far off the image zeroes it, which is what NaN/Inf must do.
    zeroed = dict(inputs, offset=np.where(np.isfinite(offset), offset, np.float32(1e4)).astype(np.float32))
    actual = run_custom(ort_library, config, inputs)
    assert np.all(np.isfinite(actual))
    assert_close(actual, run_native(config, zeroed))


def test_empty_batch_gives_empty_output(ort_library: str) -> None:
    config = Config(batch=2)
    inputs = make_inputs(config, np.random.default_rng(5))
    for name in ("X", "offset", "mask"):
        inputs[name] = inputs[name][:0]
    assert run_custom(ort_library, config, inputs).shape == (0, config.out_channels, *config.out_size)


def test_session_shared_by_threads(ort_library: str) -> None:
    config = Config(batch=2, channels=4, height=12, width=10, out_channels=8, group=2, offset_group=2)
    rng = np.random.default_rng(99)
    cases = [make_inputs(config, rng) for _ in range(8)]
    expected = [run_native(config, inputs) for inputs in cases]
    session = custom_session(ort_library, build_model(CUSTOM_OP, attributes_of(config), input_ranks_of(cases[0])))
    failures: list[str] = []
    barrier = threading.Barrier(len(cases))

    def worker(index: int) -> None:
        barrier.wait()
        for iteration in range(25):
            try:
                assert_close(session.run(None, cases[index])[0], expected[index])
            except Exception as error:  # noqa: BLE001 - collected and reported below.
                failures.append(f"thread {index} iteration {iteration}: {error}")
                return

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_library_registers_into_several_session_options(ort_library: str) -> None:
    config = Config(kernel=(1, 1), pads=(0, 0, 0, 0))
    inputs = make_inputs(config, np.random.default_rng(3))
    model = build_model(CUSTOM_OP, attributes_of(config), input_ranks_of(inputs))
    first = custom_session(ort_library, model)
    second = custom_session(ort_library, model)
    np.testing.assert_array_equal(first.run(None, inputs)[0], second.run(None, inputs)[0])


# --- invalid inputs: every failure is an ORT error naming the node -----------------------------


def run_custom_expecting_error(library: str, attributes: dict, inputs: dict[str, np.ndarray]) -> str:
    """Shape problems fail Run() with INVALID_ARGUMENT; attribute problems fail session creation."""
    model = build_model(CUSTOM_OP, attributes, input_ranks_of(inputs))
    try:
        session = custom_session(library, model)
    except RuntimeException as error:  # ORT reports kernel-creation failures as RUNTIME_EXCEPTION.
        message = str(error)
    else:
        with pytest.raises(InvalidArgument) as raised:
            session.run(None, inputs)
        message = str(raised.value)
    assert f"DcnDeformConv node '{NODE_NAME}'" in message, message
    return message


def valid_case() -> tuple[dict, dict[str, np.ndarray]]:
    config = Config(batch=2, channels=4, height=6, width=5, out_channels=6, pads=(0, 0, 0, 0))
    return attributes_of(config), make_inputs(config, np.random.default_rng(11))


def zeros_like_shape(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    shape = list(array.shape)
    shape[axis] = size
    return np.zeros(shape, np.float32)


def reshaped_inputs(change: str) -> dict[str, np.ndarray]:
    _, inputs = valid_case()  # X [2,4,6,5], W [6,4,3,3], offset [2,18,4,3], B [6], mask [2,9,4,3]
    if change == "x_rank":
        inputs["X"] = inputs["X"][0]
    elif change == "offset_channels":
        inputs["offset"] = zeros_like_shape(inputs["offset"], 1, 17)
    elif change == "mask_channels":
        inputs["mask"] = zeros_like_shape(inputs["mask"], 1, 8)
    elif change == "weight_channels":
        inputs["W"] = zeros_like_shape(inputs["W"], 1, 3)
    elif change == "offset_batch":
        inputs["offset"] = inputs["offset"][:1]
    elif change == "mask_batch":
        inputs["mask"] = inputs["mask"][:1]
    elif change == "offset_spatial":
        inputs["offset"] = zeros_like_shape(inputs["offset"], 3, 4)
    elif change == "mask_spatial":
        inputs["mask"] = zeros_like_shape(inputs["mask"], 2, 3)
    elif change == "bias_length":
        inputs["B"] = inputs["B"][:5]
    elif change == "empty_output":
        inputs["X"] = inputs["X"][:, :, :2, :]
    elif change == "kernel_mismatch":
        inputs["W"] = inputs["W"][:, :, :, :2]
    return inputs


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
def test_bad_input_shapes(ort_library: str, change: str, expected_text: str) -> None:
    attributes, _ = valid_case()
    message = run_custom_expecting_error(ort_library, attributes, reshaped_inputs(change))
    assert expected_text in message, message


@pytest.mark.parametrize(
    ("group", "offset_group", "out_channels", "expected_text"),
    [
        (3, 1, 6, "not divisible by group=3"),
        (1, 3, 6, "not divisible by offset_group=3"),
        (4, 1, 6, "output channels, not divisible by group=4"),
    ],
)
def test_bad_channel_grouping(
    ort_library: str, group: int, offset_group: int, out_channels: int, expected_text: str
) -> None:
    attributes, inputs = valid_case()
    attributes.update(group=group, offset_group=offset_group)
    inputs["W"] = np.zeros((out_channels, max(1, 4 // group), 3, 3), np.float32)
    message = run_custom_expecting_error(ort_library, attributes, inputs)
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
def test_bad_attributes(ort_library: str, attribute: str, value, expected_text: str) -> None:
    attributes, inputs = valid_case()
    attributes[attribute] = value
    message = run_custom_expecting_error(ort_library, attributes, inputs)
    assert expected_text in message, message


@pytest.mark.parametrize("attribute", ["dilations", "group", "kernel_shape", "offset_group", "pads", "strides"])
def test_missing_attribute(ort_library: str, attribute: str) -> None:
    attributes, inputs = valid_case()
    del attributes[attribute]
    message = run_custom_expecting_error(ort_library, attributes, inputs)
    assert f"DcnDeformConv node '{NODE_NAME}': required attribute '{attribute}' is missing" in message, message


def test_attribute_errors_surface_at_session_creation(ort_library: str) -> None:
    attributes, inputs = valid_case()
    attributes["strides"] = [0, 1]
    with pytest.raises(RuntimeException, match="DcnDeformConv node 'layer3/dcn': attribute 'strides'"):
        custom_session(ort_library, build_model(CUSTOM_OP, attributes, input_ranks_of(inputs)))


def test_unnamed_node_is_named_by_its_output(ort_library: str) -> None:
    attributes, inputs = valid_case()
    inputs["B"] = inputs["B"][:5]
    session = custom_session(ort_library, build_model(CUSTOM_OP, attributes, input_ranks_of(inputs), node_name=""))
    with pytest.raises(InvalidArgument, match="DcnDeformConv node '<unnamed node with output Y>': bias B"):
        session.run(None, inputs)


def test_non_float_inputs_are_rejected(ort_library: str) -> None:
    # The op declares float32 inputs, so ORT itself refuses the graph when loading it.
    attributes, inputs = valid_case()
    inputs = {name: value.astype(np.float64) for name, value in inputs.items()}
    model = build_model(CUSTOM_OP, attributes, input_ranks_of(inputs), elem_type=TensorProto.DOUBLE)
    with pytest.raises(InvalidGraph) as raised:
        custom_session(ort_library, model).run(None, inputs)
    message = str(raised.value)
    assert NODE_NAME in message and CUSTOM_OP in message and "tensor(double)" in message, message


def test_models_pass_the_onnx_checker() -> None:
    attributes, inputs = valid_case()
    for op_type in ("DeformConv", CUSTOM_OP):
        onnx.checker.check_model(onnx.load_from_string(build_model(op_type, attributes, input_ranks_of(inputs))))
