"""Benchmarks of the DCN implementations (``dcn-deploy bench``); never run as a timed test.

Three parts, each a list of rows in the result (``run_benchmark`` returns a JSON-ready dict):

``cpu_layers``
    One DCNv2 layer (3x3, pad 1, stride 1, mask and bias, C = M) per shape and batch, timed in
    one process with one intra-op thread count: this project's ONNX Runtime custom op (one
    ``DcnDeformConv`` node), ONNX Runtime's native ``DeformConv`` (opset 19, same inputs),
    ONNX Runtime's dense ``Conv`` of the same shape (the floor: no sampling at all) and the
    PyTorch reference (:func:`dcn_deploy.ops.deform_conv2d`, torch threads set to the same count).
``end_to_end``
    A recipe (``export/``) exported with the custom node vs the same ONNX rewritten to standard
    ``DeformConv`` (both in ONNX Runtime), and the PyTorch model (eval, no_grad).
``gpu_layers``
    The same layer shapes on a CUDA device: this project's kernels
    (:func:`dcn_deploy.cuda_kernels.deform_conv2d_cuda`) in FP16 (each ``algorithm`` when the
    function takes one) and FP32, ``torchvision.ops.deform_conv2d`` in FP16 and cuDNN's dense
    ``conv2d`` in FP16 on channels-last tensors (the floor), plus the workspace each needs.

Timing: warm-up runs, then ``repeat`` rounds; in each round every implementation runs once,
in an order rotated from round to round, so machine noise hits them alike. Reported: the
median and the minimum. CPU rows use ``time.perf_counter``; GPU rows use CUDA events around
one call, queued behind a short spin kernel (``torch.cuda._sleep``) so the host's launch
overhead is hidden and the events measure GPU time. ONNX Runtime sessions run with thread
spinning off: in one process, a pool that spins after its run would steal the cores of the
implementation timed next.

This module imports only the standard library at load time; torch, onnx and onnxruntime are
imported by the parts that need them, so ``--device cuda`` runs where this project's ONNX
Runtime library (and even onnxruntime) is missing.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "BenchError", "BenchConfig", "LayerShape", "Timing", "DEFAULT_SHAPES", "DEFAULT_BATCHES", "FORMAT",
    "parse_shape_spec", "run_benchmark", "time_interleaved", "gpu_layer_functions", "time_gpu_layer",
    "write_json", "write_plot", "machine_info",
]

FORMAT = "dcn-deploy-bench/1"
DEFAULT_BATCHES = (1, 8)
CPU_REPEAT = 10
E2E_INT8_CALIBRATION_SAMPLES = 8  # bench --recipe --int8: synthetic calibration samples
GPU_REPEAT = 50
BUILD_HINT = "build it with ./scripts/build_plugins.sh"

# What each implementation name in the results means (also written to the JSON).
IMPLEMENTATIONS = {
    "custom": "this project's ONNX Runtime custom op: one DcnDeformConv node (dcn_deploy domain)",
    "native": "ONNX Runtime's native DeformConv (ai.onnx opset 19), same inputs",
    "dense": "ONNX Runtime's dense Conv of the same shape (no sampling: the floor)",
    "reference": "PyTorch reference dcn_deploy.ops.deform_conv2d (torch threads = --threads)",
    "custom_int8": "INT8 (dcn_deploy/int8.py: int8 X and W, per-channel w_scale, float32 Y). Layer rows: one "
    "DcnDeformConvInt8 node, X quantized once before timing; end to end: the recipe after `dcn-deploy quantize "
    "--synthetic 8` (ONNX Runtime's Q/DQ convs, DcnDeformConvInt8 nodes), fed float32 X",
    "ours_fp16": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, float16 storage (default algorithm)",
    "ours_fp16_simt": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, float16, algorithm='simt'",
    "ours_fp16_tensor_core": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, float16, algorithm='tensor_core'",
    "ours_fp16_tensor_core_nhwc": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, float16, algorithm='tensor_core_nhwc' "
    "(channels-last gathers; workspace: X in NHWC + W tap-major)",
    "ours_fp32": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, float32 storage",
    "ours_int8": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, INT8 (dcn_deploy/int8.py: int8 X and W, per-channel "
    "w_scale, float32 Y), default algorithm (integer tensor cores)",
    "ours_int8_simt": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, INT8, algorithm='simt' (dp4a)",
    "ours_int8_requantized": "dcn_deploy.cuda_kernels.deform_conv2d_cuda, INT8 with int8 Yq output (y_scale)",
    "torchvision_fp16": "torchvision.ops.deform_conv2d, float16",
    "cudnn_fp16": "torch.nn.functional.conv2d (cuDNN), float16, channels_last: dense conv of the same shape (floor)",
}
WORKSPACE_NOTE = (
    "ours: dcn_deploy.cuda_kernels.workspace_size(Problem) for the whole batch; torchvision, TensorRT's "
    "built-in ModulatedDeformConv2d plugin and mmcv: an im2col column buffer of C*kh*kw*Ho*Wo elements per "
    "image, computed from the shape, not measured (torchvision processes up to 32 images per column "
    "buffer, so its real buffer can be a multiple of this)"
)


class BenchError(ValueError):
    """A bad argument or a missing prerequisite; the message says which and what to do."""


# --------------------------------------------------------------------------------------------
# shapes


@dataclass(frozen=True)
class LayerShape:
    """One DCNv2 layer: ``in_channels`` -> ``out_channels`` on ``height`` x ``width``, 3x3, pad 1, stride 1."""

    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: int = 3
    pad: int = 1
    stride: int = 1

    @property
    def spec(self) -> str:
        channels = (str(self.in_channels) if self.in_channels == self.out_channels
                    else f"{self.in_channels}:{self.out_channels}")
        return f"{channels}x{self.height}x{self.width}"

    @property
    def out_hw(self) -> tuple[int, int]:
        def size(n: int) -> int:
            return (n + 2 * self.pad - self.kernel) // self.stride + 1

        return size(self.height), size(self.width)

    def describe(self) -> dict:
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "height": self.height,
            "width": self.width, "kernel": [self.kernel, self.kernel], "pads": [self.pad] * 4,
            "stride": [self.stride, self.stride], "dilation": [1, 1], "groups": 1, "offset_groups": 1,
            "mask": True, "bias": True, "out_height": self.out_hw[0], "out_width": self.out_hw[1],
        }


DEFAULT_SHAPES = (
    LayerShape(64, 64, 64, 64),
    LayerShape(256, 256, 50, 68),
    LayerShape(512, 512, 25, 34),
    LayerShape(128, 128, 100, 136),
)

_SPEC = re.compile(r"^(\d+)(?::(\d+))?x(\d+)x(\d+)$")


def parse_shape_spec(text: str) -> LayerShape:
    """``CxHxW`` (C input = output channels, e.g. ``64x64x64``) or ``C:MxHxW`` (``M`` output channels).

    Raises BenchError naming the spec when it is malformed.
    """
    match = _SPEC.match(text.strip().lower())
    if not match:
        raise BenchError(
            f"bad shape spec '{text}': expected CxHxW (channels x height x width, input = output channels, "
            "e.g. 64x64x64) or C:MxHxW (e.g. 64:128x56x56)"
        )
    c, m, h, w = match.groups()
    shape = LayerShape(int(c), int(m or c), int(h), int(w))
    if min(shape.in_channels, shape.out_channels, shape.height, shape.width) <= 0:
        raise BenchError(f"bad shape spec '{text}': every size must be positive")
    return shape


# --------------------------------------------------------------------------------------------
# timing


@dataclass
class Timing:
    """Times of one implementation in one row, milliseconds."""

    times_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "runs": len(self.times_ms),
                "times_ms": [round(t, 6) for t in self.times_ms]}


# Cycles of the spin kernel queued before each timed GPU call: about 1 ms at 1.5-2 GHz, longer than
# the host needs to launch any implementation here, so the events see GPU time only.
_GPU_SPIN_CYCLES = 2_000_000


def _cpu_measure() -> Callable[[Callable[[], Any]], float]:
    def measure(function: Callable[[], Any]) -> float:
        start = time.perf_counter()
        function()
        return (time.perf_counter() - start) * 1e3

    return measure


def _cuda_measure() -> Callable[[Callable[[], Any]], float]:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    spin = getattr(torch.cuda, "_sleep", None)

    def measure(function: Callable[[], Any]) -> float:
        if spin is not None:
            spin(_GPU_SPIN_CYCLES)
        start.record()
        function()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return measure


def time_interleaved(
    functions: dict[str, Callable[[], Any]],
    warmup: int,
    repeat: int,
    timer: str = "cpu",
    step: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Times every function ``repeat`` times after ``warmup`` untimed calls, interleaved.

    Round ``r`` runs every function once, starting at index ``r % len(functions)``, so no
    implementation always runs right after the same other one. ``timer`` is ``"cpu"``
    (``time.perf_counter``) or ``"cuda"`` (CUDA events on the current stream, host launch
    overhead hidden behind a spin kernel). ``step`` is called after each warm-up and each round.
    """
    if timer not in ("cpu", "cuda"):
        raise ValueError(f"timer must be 'cpu' or 'cuda', got {timer!r}")
    if repeat < 1 or warmup < 0:
        raise BenchError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    names = list(functions)
    measure = _cpu_measure() if timer == "cpu" else _cuda_measure()
    for _ in range(warmup):
        for name in names:
            functions[name]()
        if timer == "cuda":
            import torch

            torch.cuda.synchronize()
        if step:
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        first = round_ % len(names) if names else 0
        for name in names[first:] + names[:first]:
            times[name].append(measure(functions[name]))
        if step:
            step()
    return {name: Timing(values) for name, values in times.items()}


def _ratio(numerator: Timing | None, denominator: Timing | None) -> float | None:
    if numerator is None or denominator is None or denominator.median_ms <= 0:
        return None
    return numerator.median_ms / denominator.median_ms


# --------------------------------------------------------------------------------------------
# configuration and machine


@dataclass
class BenchConfig:
    """What ``run_benchmark`` measures; the defaults are those of ``dcn-deploy bench``."""

    shapes: Sequence[LayerShape] = DEFAULT_SHAPES
    batches: Sequence[int] = DEFAULT_BATCHES
    threads: int | None = None  # None: every core this process may use
    warmup: int = 2
    repeat: int | None = None  # None: CPU_REPEAT on the CPU, GPU_REPEAT on the GPU
    device: str = "auto"  # auto: CPU parts, and the GPU part when torch sees CUDA; cpu; cuda: GPU part only
    layers: bool = True
    recipes: Sequence[str] = ()
    recipe_shape: tuple[int, int, int, int] | None = None
    reference: bool = True
    int8: bool = False  # also time the INT8 custom op on the CPU layer rows
    seed: int = 0
    offset_scale: float = 2.0
    command: str = ""

    def checked(self) -> "BenchConfig":
        if self.device not in ("auto", "cpu", "cuda"):
            raise BenchError(f"--device must be auto, cpu or cuda, got '{self.device}'")
        if not self.batches or min(self.batches) < 1:
            raise BenchError(f"batch sizes must be positive, got {list(self.batches)}")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads must be >= 1, got {self.threads}")
        if self.warmup < 0 or (self.repeat is not None and self.repeat < 1):
            raise BenchError(f"--repeat must be >= 1 and --warmup >= 0, got {self.repeat} and {self.warmup}")
        if self.layers and not self.shapes:
            raise BenchError("no layer shapes to time")
        if self.device == "cuda" and self.recipes:
            raise BenchError("--recipe times ONNX Runtime on the CPU; it does not go with --device cuda")
        if not self.layers and not self.recipes:
            raise BenchError("nothing to time: --no-layers without --recipe")
        return self

    @property
    def thread_count(self) -> int:
        return self.threads or _available_cores()

    def repeats(self, part: str) -> int:
        return self.repeat if self.repeat is not None else (GPU_REPEAT if part == "gpu" else CPU_REPEAT)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``python -m dcn_deploy.cli ...`` or ``dcn-deploy ...``."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = argv[0]
    if program.replace("\\", "/").endswith("dcn_deploy/cli.py"):
        program = "python -m dcn_deploy.cli"
    else:
        program = Path(program).name
    return " ".join([program, *map(shlex.quote, argv[1:])])


def machine_info(config: BenchConfig) -> dict:
    """CPU, cores, threads, versions, date and command line (GPU fields are added by the GPU part)."""
    import torch

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": _available_cores(),
        "threads": config.thread_count,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "torchvision": _version("torchvision"),
        "dcn_deploy": _version("dcn-deploy"),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": config.command or command_line(),
    }


# --------------------------------------------------------------------------------------------
# CPU: one layer in ONNX Runtime (custom, native, dense) and PyTorch


def _layer_arrays(shape: LayerShape, batch: int, seed: int, offset_scale: float) -> dict:
    import numpy as np

    rng = np.random.default_rng([seed, shape.in_channels, shape.out_channels, shape.height, shape.width, batch])
    c, m, k = shape.in_channels, shape.out_channels, shape.kernel
    ho, wo = shape.out_hw
    taps = k * k

    def normal(*dims, scale=1.0):
        return (rng.standard_normal(dims, dtype=np.float32) * scale).astype(np.float32)

    return {
        "X": normal(batch, c, shape.height, shape.width),
        "W": normal(m, c, k, k, scale=1.0 / (c * taps) ** 0.5),
        "offset": normal(batch, 2 * taps, ho, wo, scale=offset_scale),
        "B": normal(m, scale=0.1),
        "mask": rng.uniform(0.0, 1.0, (batch, taps, ho, wo)).astype(np.float32),
    }


def _layer_model(shape: LayerShape, arrays: dict, kind: str, int8_scales: dict | None = None) -> bytes:
    """One-node ONNX: ``custom`` DcnDeformConv, ``int8`` DcnDeformConvInt8 (``int8_scales``:
    ``x_scale``, ``w_scale``; int8 X and W in ``arrays``), ``native`` DeformConv or ``dense`` Conv.

    W and B are initializers (as in an exported model); X, offset and mask are graph inputs.
    """
    import onnx
    from onnx import helper, numpy_helper

    from . import schema

    attrs = {"dilations": [1, 1], "group": 1, "kernel_shape": [shape.kernel] * 2, "pads": [shape.pad] * 4,
             "strides": [shape.stride] * 2}
    initializers = [numpy_helper.from_array(arrays["W"], "W"), numpy_helper.from_array(arrays["B"], "B")]
    opsets = [helper.make_opsetid("", schema.STANDARD_OPSET)]
    if kind == "dense":
        node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], name="dense", **attrs)
        names = ["X"]
    elif kind == "native":
        node = helper.make_node(schema.STANDARD_OP_TYPE, ["X", "W", "offset", "B", "mask"], ["Y"], name="native",
                                offset_group=1, **attrs)
        names = ["X", "offset", "mask"]
    elif kind in ("custom", "int8"):
        op_type, extra = schema.CUSTOM_OP_TYPE, schema.PLUGIN_ATTRIBUTES
        if kind == "int8":
            op_type = schema.INT8_OP_TYPE
            extra = {"x_scale": float(int8_scales["x_scale"]), "w_scale": [float(v) for v in int8_scales["w_scale"]]}
        node = helper.make_node(op_type, ["X", "W", "offset", "B", "mask"], ["Y"], name=kind,
                                domain=schema.CUSTOM_DOMAIN, offset_group=1, **attrs, **extra)
        names = ["X", "offset", "mask"]
        opsets.append(helper.make_opsetid(schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION))
    else:
        raise ValueError(f"unknown layer model kind {kind!r}")
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arrays[name].dtype),
                                            list(arrays[name].shape)) for name in names]
    output = helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([node], f"bench_{kind}", inputs, [output], initializer=initializers)
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


def _int8_layer_model(shape: LayerShape, arrays: dict) -> tuple[bytes, dict]:
    """One-node DcnDeformConvInt8 model for the layer's float tensors, and its feeds: X quantized
    with x_scale = max|X| / 127, W per output channel (int8 initializer)."""
    import numpy as np
    import torch

    from .int8 import quantize_symmetric, quantize_weight_per_channel

    x = torch.from_numpy(arrays["X"])
    x_scale = float(np.float32(max(float(x.abs().max()), 1e-6) / 127.0))
    wq, w_scale = quantize_weight_per_channel(torch.from_numpy(arrays["W"]))
    quantized = dict(arrays, X=quantize_symmetric(x, x_scale).numpy(), W=wq.numpy())
    model = _layer_model(shape, quantized, "int8", {"x_scale": x_scale, "w_scale": w_scale})
    return model, {name: quantized[name] for name in ("X", "offset", "mask")}


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No spinning: the pools of the sessions timed one after the other share the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _check_custom_op_library() -> str:
    from .ort import ort_custom_op_library

    try:
        return ort_custom_op_library()
    except FileNotFoundError as error:
        message = str(error)
        hint = "" if "build_plugins.sh" in message else f"; {BUILD_HINT}"
        raise BenchError(
            f"the CPU benchmark needs this project's ONNX Runtime custom-op library: {message}{hint} "
            "(or time only the GPU part with --device cuda)"
        ) from None


def _custom_session(model, threads: int):
    from .ort import ort_session

    return ort_session(model, sess_options=_session_options(threads))


def _plain_session(model, threads: int):
    import onnxruntime as ort

    return ort.InferenceSession(model, sess_options=_session_options(threads), providers=["CPUExecutionProvider"])


def _max_abs_diff(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def time_cpu_implementations(functions: dict[str, Callable[[], Any]], config: BenchConfig, step) -> dict[str, Timing]:
    """The ONNX Runtime sessions interleaved; the PyTorch reference, if any, in rounds of its own
    afterwards: torch's OpenMP threads keep spinning after a call and would slow whichever
    session ran next (seen on 2 cores: the 64-channel custom/dense ratio moved from 1.3 to 1.7)."""
    sessions = dict(functions)
    reference = sessions.pop("reference", None)
    timings = time_interleaved(sessions, config.warmup, config.repeats("cpu"), "cpu", step)
    if reference is not None:
        timings.update(time_interleaved({"reference": reference}, config.warmup, config.repeats("cpu"), "cpu", step))
    return timings


def _cpu_layer_row(shape: LayerShape, batch: int, config: BenchConfig, step) -> dict:
    import torch

    from .ops import deform_conv2d

    threads = config.thread_count
    arrays = _layer_arrays(shape, batch, config.seed, config.offset_scale)
    deform_feeds = {name: arrays[name] for name in ("X", "offset", "mask")}
    sessions = {
        "custom": _custom_session(_layer_model(shape, arrays, "custom"), threads),
        "native": _plain_session(_layer_model(shape, arrays, "native"), threads),
        "dense": _plain_session(_layer_model(shape, arrays, "dense"), threads),
    }
    functions: dict[str, Callable[[], Any]] = {
        "custom": lambda: sessions["custom"].run(None, deform_feeds),
        "native": lambda: sessions["native"].run(None, deform_feeds),
        "dense": lambda: sessions["dense"].run(None, {"X": arrays["X"]}),
    }
    if config.int8:
        int8_model, int8_feeds = _int8_layer_model(shape, arrays)
        sessions["custom_int8"] = _custom_session(int8_model, threads)
        functions["custom_int8"] = lambda: sessions["custom_int8"].run(None, int8_feeds)
    tensors = {name: torch.from_numpy(value) for name, value in arrays.items()}

    def reference():
        with torch.inference_mode():
            return deform_conv2d(tensors["X"], tensors["offset"], tensors["W"], tensors["B"], stride=shape.stride,
                                 padding=shape.pad, mask=tensors["mask"])

    if config.reference:
        functions["reference"] = reference
    # One untimed call each: the outputs must agree (this is a benchmark of equal work).
    outputs = {name: function() for name, function in functions.items()}
    native_out = outputs["native"][0]
    agreement = {"custom_vs_native": _max_abs_diff(outputs["custom"][0], native_out)}
    if "reference" in outputs:
        agreement["reference_vs_native"] = _max_abs_diff(outputs["reference"].numpy(), native_out)
    timings = time_cpu_implementations(functions, config, step)
    ratios = {
        "custom/native": _ratio(timings["custom"], timings["native"]),
        "custom/dense": _ratio(timings["custom"], timings["dense"]),
    }
    if "reference" in timings:
        ratios["custom/reference"] = _ratio(timings["custom"], timings["reference"])
    if "custom_int8" in timings:
        ratios["custom_int8/custom"] = _ratio(timings["custom_int8"], timings["custom"])
        # Quantization error, not a bug: INT8 against the float output, relative to its largest value.
        agreement["custom_int8_vs_native_relative"] = (
            _max_abs_diff(outputs["custom_int8"][0], native_out) / max(float(abs(native_out).max()), 1e-30))
    return {
        "shape": shape.spec, "batch": batch, **shape.describe(),
        "implementations": {name: timing.to_json() for name, timing in timings.items()},
        "ratios": ratios,
        "max_abs_diff": agreement,
    }


# --------------------------------------------------------------------------------------------
# CPU: a recipe end to end


def _end_to_end_row(recipe: str, config: BenchConfig, step) -> dict:
    import numpy as np
    import torch

    from .recipes import export_recipe, load_recipe
    from .rewrite import rewrite_onnx

    try:
        module = load_recipe(recipe)
    except (FileNotFoundError, AttributeError) as error:
        raise BenchError(str(error)) from None
    shape = tuple(config.recipe_shape or module.INPUT_SHAPE)
    threads = config.thread_count
    with tempfile.TemporaryDirectory(prefix="dcn_bench_") as folder:
        custom_path, standard_path = Path(folder) / "custom.onnx", Path(folder) / "standard.onnx"
        proto = export_recipe(recipe, custom_path, seed=config.seed, input_shape=shape)
        _, count = rewrite_onnx(custom_path, to="standard", output=standard_path)
        sessions = {"custom": _custom_session(str(custom_path), threads),
                    "native": _plain_session(str(standard_path), threads)}
        if config.int8:
            from .quantize import quantize_onnx, synthetic_calibration

            # The INT8 form `dcn-deploy quantize MODEL --synthetic 8` writes (max calibration):
            # ONNX Runtime's Q/DQ convs and DcnDeformConvInt8 nodes.
            calibration = synthetic_calibration(proto, E2E_INT8_CALIBRATION_SAMPLES,
                                                shapes=[list(t.shape) for t in module.example_inputs(
                                                    shape[0], shape[2], shape[3], seed=config.seed)])
            sessions["custom_int8"] = _custom_session(quantize_onnx(proto, calibration).model.SerializeToString(),
                                                      threads)
    del proto
    model = module.build(seed=config.seed).eval()
    inputs = module.example_inputs(shape[0], shape[2], shape[3], seed=config.seed)
    names = [i.name for i in sessions["custom"].get_inputs()]
    feeds = {name: tensor.numpy() for name, tensor in zip(names, inputs)}

    def reference():
        with torch.inference_mode():
            return model(*inputs)

    functions: dict[str, Callable[[], Any]] = {
        "custom": lambda: sessions["custom"].run(None, feeds),
        "native": lambda: sessions["native"].run(None, feeds),
    }
    if "custom_int8" in sessions:
        functions["custom_int8"] = lambda: sessions["custom_int8"].run(None, feeds)
    if config.reference:
        functions["reference"] = reference
    outputs = {name: function() for name, function in functions.items()}
    agreement = {"custom_vs_native": max(_max_abs_diff(a, b) for a, b in zip(outputs["custom"], outputs["native"]))}
    if "custom_int8" in outputs:
        # Quantization error, not a bug: the largest |INT8 - float| over the largest |float| output.
        agreement["custom_int8_vs_native_relative"] = max(
            _max_abs_diff(a, b) / max(float(np.abs(b).max()), 1e-30)
            for a, b in zip(outputs["custom_int8"], outputs["native"]))
    if "reference" in outputs:
        out = outputs["reference"]
        out = [out] if isinstance(out, torch.Tensor) else list(out.values() if isinstance(out, dict) else out)
        agreement["reference_vs_native"] = max(
            _max_abs_diff(a.numpy(), b) for a, b in zip(out, outputs["native"]))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timings = time_cpu_implementations(functions, config, step)
    finally:
        torch.set_num_threads(previous)
    ratios = {"custom/native": _ratio(timings["custom"], timings["native"])}
    if "reference" in timings:
        ratios["custom/reference"] = _ratio(timings["custom"], timings["reference"])
    if "custom_int8" in timings:
        ratios["custom_int8/custom"] = _ratio(timings["custom_int8"], timings["custom"])
    return {
        "recipe": recipe, "input_shape": list(shape), "dcn_nodes": count,
        "inputs": {name: list(np.shape(value)) for name, value in feeds.items()},
        "implementations": {name: timing.to_json() for name, timing in timings.items()},
        "ratios": ratios,
        "max_abs_diff": agreement,
    }


# --------------------------------------------------------------------------------------------
# GPU


def int8_layer_tensors(t32: dict) -> dict:
    """The INT8 form of one layer's float32 tensors (same device): ``X`` and ``W`` quantized
    symmetrically (``x_scale = max|X| / 127``, per-channel ``w_scale``), float32 offset, mask and
    bias, and the scales. ``y_scale`` (requantized output) is 1/16 of the worst-case ``|Y|`` bound
    over 127: it only decides how many outputs saturate, which does not change the timing."""
    import torch

    from .int8 import quantize_symmetric, quantize_weight_per_channel

    x = t32["X"].detach().float().cpu()
    x_scale = max(float(x.abs().max()), 1e-6) / 127.0
    wq, w_scale = quantize_weight_per_channel(t32["W"].detach().float().cpu())
    device = t32["X"].device
    y_bound = x_scale * 127.0 * float(wq.abs().flatten(1).sum(dim=1).to(torch.float64).max()) * max(w_scale)
    return {
        "X": quantize_symmetric(x, x_scale).to(device), "W": wq.to(device),
        "offset": t32["offset"].float(), "mask": None if t32["mask"] is None else t32["mask"].float(),
        "B": None if t32["B"] is None else t32["B"].float(),
        "x_scale": x_scale, "w_scale": w_scale, "y_scale": max(y_bound / 16.0 / 127.0, 1e-6),
    }


def gpu_layer_functions(t16: dict, t32: dict | None, conv: dict,
                        t8: dict | None = None) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """The GPU implementations of one layer as zero-argument callables, and a note for each left out.

    ``t16``/``t32``: CUDA tensors ``X, W, offset, B, mask`` (B and mask may be None) in float16 /
    float32 (``t32`` None: no FP32 row). ``t8``: the INT8 form (``int8_layer_tensors``; None: no
    INT8 rows). ``conv``: ``stride, padding, dilation, groups,
    offset_groups`` as :func:`dcn_deploy.cuda_kernels.deform_conv2d_cuda` takes them (``padding``
    may be the four ONNX pads). Every callable was run once; one that raised is left out with
    its error as the note.
    """
    import torch
    import torch.nn.functional as F

    from .cuda_kernels import deform_conv2d_cuda
    from .ops import normalize_pads

    def ours(t: dict, **extra) -> Callable[[], Any]:
        return lambda: deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], mask=t["mask"], **conv, **extra)

    candidates: dict[str, Callable[[], Any]] = {
        "ours_fp16": ours(t16),
        "ours_fp16_simt": ours(t16, algorithm="simt"),
        "ours_fp16_tensor_core": ours(t16, algorithm="tensor_core"),
        "ours_fp16_tensor_core_nhwc": ours(t16, algorithm="tensor_core_nhwc"),
    }
    if t32 is not None:
        candidates["ours_fp32"] = ours(t32)
    if t8 is not None:
        scales = dict(x_scale=t8["x_scale"], w_scale=t8["w_scale"])
        candidates["ours_int8"] = ours(t8, **scales)
        candidates["ours_int8_simt"] = ours(t8, algorithm="simt", **scales)
        candidates["ours_int8_requantized"] = ours(t8, y_scale=t8["y_scale"], **scales)
    notes: dict[str, str] = {}
    top, left, bottom, right = normalize_pads(conv.get("padding", 0))
    symmetric = top == bottom and left == right
    stride, dilation, groups = conv.get("stride", 1), conv.get("dilation", 1), conv.get("groups", 1)
    try:
        import torchvision.ops  # noqa: F401

        if symmetric:
            candidates["torchvision_fp16"] = lambda: torchvision.ops.deform_conv2d(
                t16["X"], t16["offset"], t16["W"], t16["B"], stride=stride, padding=(top, left),
                dilation=dilation, mask=t16["mask"])
        else:
            notes["torchvision_fp16"] = "asymmetric pads"
    except Exception as error:  # not installed, or built without its ops
        notes["torchvision_fp16"] = f"not importable: {type(error).__name__}: {error}"[:160]
    if symmetric:
        x_cl = t16["X"].contiguous(memory_format=torch.channels_last)
        w_cl = t16["W"].contiguous(memory_format=torch.channels_last)
        candidates["cudnn_fp16"] = lambda: F.conv2d(x_cl, w_cl, t16["B"], stride=stride, padding=(top, left),
                                                    dilation=dilation, groups=groups)
    else:
        notes["cudnn_fp16"] = "asymmetric pads"
    functions = {}
    for name, function in candidates.items():
        try:
            function()
            torch.cuda.synchronize()
            functions[name] = function
        except Exception as error:  # e.g. an algorithm that does not support this shape
            notes[name] = f"{type(error).__name__}: {error}"[:200]
    return functions, notes


def time_gpu_layer(t16: dict, t32: dict | None, conv: dict, warmup: int = 5, repeat: int = GPU_REPEAT,
                   step: Callable[[], None] | None = None,
                   t8: dict | None = None) -> tuple[dict[str, Timing], dict[str, str]]:
    """CUDA-event timings of every GPU implementation of one layer (see ``gpu_layer_functions``)."""
    functions, notes = gpu_layer_functions(t16, t32, conv, t8)
    return time_interleaved(functions, warmup, repeat, "cuda", step), notes


def _gpu_problem(shape: LayerShape, batch: int, dtype, algorithm: str | None = None):
    from . import cuda_kernels

    k = shape.kernel
    fields = dict(
        batch=batch, in_channels=shape.in_channels, in_height=shape.height, in_width=shape.width,
        out_channels=shape.out_channels, kernel_h=k, kernel_w=k, stride_h=shape.stride, stride_w=shape.stride,
        pad_top=shape.pad, pad_left=shape.pad, pad_bottom=shape.pad, pad_right=shape.pad,
        dilation_h=1, dilation_w=1, group=1, offset_group=1, has_mask=1, has_bias=1,
        data_type=cuda_kernels.ELEMENT_TYPES[dtype], offset_type=cuda_kernels.ELEMENT_TYPES[dtype],
    )
    if algorithm is not None:
        fields["algorithm"] = cuda_kernels.ALGORITHMS[algorithm]
    return cuda_kernels.Problem(**fields)


def _gpu_workspace(shape: LayerShape, batch: int) -> dict:
    """Workspace bytes: ours from the C API (per algorithm where it has them), im2col computed."""
    import torch

    from . import cuda_kernels

    ho, wo = shape.out_hw
    columns = shape.in_channels * shape.kernel * shape.kernel * ho * wo
    ours = {"fp16": cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float16)),
            "fp32": cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float32))}
    for algorithm in ("simt", "tensor_core", "tensor_core_nhwc"):
        ours[f"fp16_{algorithm}"] = cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float16, algorithm))
    result = {
        "ours_bytes": ours,
        "im2col_elements_per_image": columns,
        "im2col_bytes_per_image": {"fp16": columns * 2, "fp32": columns * 4},
    }
    try:  # what the default ("auto") FP16 launch does on this GPU
        result["ours_fp16_launch"] = cuda_kernels.launch_plan(_gpu_problem(shape, batch, torch.float16))._asdict()
    except cuda_kernels.CudaKernelError as error:
        result["ours_fp16_launch"] = str(error)[:200]
    return result


def _gpu_row(shape: LayerShape, batch: int, config: BenchConfig, step) -> dict:
    import torch

    arrays = _layer_arrays(shape, batch, config.seed, config.offset_scale)
    t32 = {name: torch.from_numpy(value).cuda() for name, value in arrays.items()}
    t16 = {name: value.half() for name, value in t32.items()}
    conv = dict(stride=shape.stride, padding=shape.pad, dilation=1, groups=1, offset_groups=1)
    timings, notes = time_gpu_layer(t16, t32, conv, warmup=max(config.warmup, 3), repeat=config.repeats("gpu"),
                                    step=step, t8=int8_layer_tensors(t32))
    ratios: dict[str, float | None] = {}
    for name in timings:
        if name.startswith("ours_"):
            ratios[f"{name}/cudnn_fp16"] = _ratio(timings[name], timings.get("cudnn_fp16"))
            if name.startswith("ours_fp16"):
                ratios[f"torchvision_fp16/{name}"] = _ratio(timings.get("torchvision_fp16"), timings[name])
            if name.startswith("ours_int8"):  # the INT8 target: <= 0.7 of the FP16 tensor-core time
                ratios[f"{name}/ours_fp16_tensor_core"] = _ratio(timings[name], timings.get("ours_fp16_tensor_core"))
    row = {
        "shape": shape.spec, "batch": batch, **shape.describe(),
        "implementations": {name: timing.to_json() for name, timing in timings.items()},
        "ratios": ratios,
        "workspace": _gpu_workspace(shape, batch),
    }
    if notes:
        row["not_timed"] = notes
    return row


def _gpu_unavailable_reason() -> str | None:
    """None when the GPU part can run, else why not."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    from .cuda_kernels import cuda_kernel_library

    try:
        cuda_kernel_library()
    except FileNotFoundError as error:
        return str(error)
    return None


def _gpu_info() -> dict:
    import torch

    from . import cuda_kernels

    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": torch.cuda.get_device_name(),
        "gpu_multiprocessors": properties.multi_processor_count,
        "gpu_memory_bytes": properties.total_memory,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "deform_conv2d_cuda_algorithms": sorted(cuda_kernels.ALGORITHMS),
    }


# --------------------------------------------------------------------------------------------
# the whole run


def run_benchmark(config: BenchConfig, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Runs the parts ``config`` asks for and returns the JSON-ready result.

    ``progress(description, completed, total)`` is called as the work advances (units: warm-up
    runs and timed rounds). Raises BenchError for bad arguments and missing prerequisites.
    """
    config.checked()
    run_cpu = config.device in ("auto", "cpu")
    gpu_reason = None
    if config.device == "cuda":
        gpu_reason = _gpu_unavailable_reason()
        if gpu_reason:
            raise BenchError(f"--device cuda: {gpu_reason}")
    elif config.device == "auto":
        gpu_reason = _gpu_unavailable_reason()
    else:
        gpu_reason = "--device cpu"
    run_gpu = gpu_reason is None and config.layers
    if run_cpu:
        if config.recipes:
            from .recipes import load_recipe

            for recipe in config.recipes:  # before any timing: a typo fails at once
                try:
                    load_recipe(recipe)
                except (FileNotFoundError, AttributeError) as error:
                    raise BenchError(str(error)) from None
        _check_custom_op_library()

    cpu_rows = [(s, b) for s in config.shapes for b in config.batches] if (run_cpu and config.layers) else []
    recipes = list(config.recipes) if run_cpu else []
    gpu_rows = [(s, b) for s in config.shapes for b in config.batches] if run_gpu else []
    per_cpu = (config.warmup + config.repeats("cpu")) * (2 if config.reference else 1)  # reference timed apart
    per_gpu = max(config.warmup, 3) + config.repeats("gpu")
    total = per_cpu * (len(cpu_rows) + len(recipes)) + per_gpu * len(gpu_rows)
    done = 0
    description = ""

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(description, done, total)

    def announce(text: str) -> None:
        nonlocal description
        description = text
        if progress:
            progress(description, done, total)

    result: dict = {
        "format": FORMAT,
        "machine": machine_info(config),
        "settings": {
            "device": config.device, "threads": config.thread_count, "warmup": config.warmup,
            "repeat_cpu": config.repeats("cpu"), "repeat_gpu": config.repeats("gpu"),
            "warmup_gpu": max(config.warmup, 3), "seed": config.seed, "offset_scale_px": config.offset_scale,
            "shapes": [s.spec for s in config.shapes] if config.layers else [], "batches": list(config.batches),
            "recipes": recipes, "ort_thread_spinning": False, "order": "ONNX Runtime sessions interleaved, rotated each round; the PyTorch reference in its own rounds after them",
            "statistic": "median (also min) of the timed rounds", "int8": config.int8,
        },
        "implementations": {},
        "cpu_layers": [],
        "end_to_end": [],
        "gpu_layers": [],
        "skipped": {},
    }
    if not run_cpu:
        result["skipped"]["cpu_layers"] = "--device cuda"
    elif not config.layers:
        result["skipped"]["cpu_layers"] = "--no-layers"
    if not run_gpu:
        result["skipped"]["gpu_layers"] = gpu_reason or "--no-layers"

    if cpu_rows:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(config.thread_count)
        try:
            for shape, batch in cpu_rows:
                announce(f"CPU {shape.spec} batch {batch}")
                result["cpu_layers"].append(_cpu_layer_row(shape, batch, config, step))
        finally:
            torch.set_num_threads(previous)
    for recipe in recipes:
        announce(f"end to end {recipe}")
        result["end_to_end"].append(_end_to_end_row(recipe, config, step))
    if gpu_rows:
        result["machine"].update(_gpu_info())
        result["gpu_workspace_note"] = WORKSPACE_NOTE
        for shape, batch in gpu_rows:
            announce(f"GPU {shape.spec} batch {batch}")
            result["gpu_layers"].append(_gpu_row(shape, batch, config, step))
    used = {name for part in ("cpu_layers", "end_to_end", "gpu_layers") for row in result[part]
            for name in row["implementations"]}
    result["implementations"] = {name: text for name, text in IMPLEMENTATIONS.items() if name in used}
    return result


# --------------------------------------------------------------------------------------------
# output


def write_json(result: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


_PART_TITLES = {
    "cpu_layers": "CPU, one DCNv2 layer (3x3, pad 1, mask, bias)",
    "end_to_end": "CPU, whole model",
    "gpu_layers": "GPU, one DCNv2 layer (3x3, pad 1, mask, bias)",
}
_COLORS = {
    "custom": "#d62728", "native": "#1f77b4", "dense": "#7f7f7f", "reference": "#9467bd",
    "ours_fp16": "#d62728", "ours_fp16_simt": "#ff9896", "ours_fp16_tensor_core": "#8c1c13",
    "ours_fp16_tensor_core_nhwc": "#e377c2",
    "ours_fp32": "#ff7f0e", "torchvision_fp16": "#1f77b4", "cudnn_fp16": "#7f7f7f",
    "custom_int8": "#2ca02c", "ours_int8": "#2ca02c",
}

_LABELS = {
    "custom": "custom op (DcnDeformConv, ORT)", "native": "ORT native DeformConv", "dense": "ORT dense Conv (floor)",
    "reference": "PyTorch reference", "ours_fp16": "ours fp16 (default)", "ours_fp16_simt": "ours fp16 simt",
    "ours_fp16_tensor_core": "ours fp16 tensor core", "ours_fp16_tensor_core_nhwc": "ours fp16 tensor core NHWC",
    "ours_fp32": "ours fp32", "torchvision_fp16": "torchvision fp16",
    "cudnn_fp16": "cuDNN dense fp16 (floor)", "custom_int8": "INT8 op (DcnDeformConvInt8, ORT)",
    "ours_int8": "ours int8 (default)",
}


def _row_label(part: str, row: dict) -> str:
    if part == "end_to_end":
        return f"{row['recipe']}\n{'x'.join(map(str, row['input_shape']))}"
    channels = (str(row["in_channels"]) if row["in_channels"] == row["out_channels"]
                else f"{row['in_channels']}:{row['out_channels']}")
    return f"C={channels} {row['height']}x{row['width']}\nbatch {row['batch']}"


def write_plot(result: dict, path: str | os.PathLike) -> None:
    """Grouped bars (log y): median time per row for each implementation, one panel per part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [part for part in ("cpu_layers", "end_to_end", "gpu_layers") if result.get(part)]
    if not parts:
        raise BenchError("nothing to plot: the result has no rows")
    widths = [max(4.0, 1.3 * len(result[p]) + 1.5) for p in parts]
    figure, axes = plt.subplots(len(parts), 1, figsize=(max(widths + [8.0]), 4.6 * len(parts)), squeeze=False)
    machine = result.get("machine", {})
    for axis, part in zip(axes[:, 0], parts):
        rows = result[part]
        names = [n for n in _COLORS if any(n in row["implementations"] for row in rows)]
        names += sorted({n for row in rows for n in row["implementations"]} - set(names))
        width = 0.8 / max(len(names), 1)
        for index, name in enumerate(names):
            xs, ys = [], []
            for position, row in enumerate(rows):
                if name in row["implementations"]:
                    xs.append(position - 0.4 + width * (index + 0.5))
                    ys.append(row["implementations"][name]["median_ms"])
            bars = axis.bar(xs, ys, width, label=_LABELS.get(name, name), color=_COLORS.get(name))
            axis.bar_label(bars, labels=[_short_ms(y) for y in ys], fontsize=6, rotation=90, padding=2)
        axis.set_yscale("log")
        axis.set_xticks(range(len(rows)), [_row_label(part, row) for row in rows], fontsize=8)
        axis.set_ylabel("ms per run (median, log scale)")
        where = machine.get("gpu") if part == "gpu_layers" else (
            f"{machine.get('cpu_model')}, {machine.get('threads')} threads")
        axis.set_title(f"{_PART_TITLES[part]}: {where}", fontsize=10)
        axis.legend(fontsize=7, ncol=min(len(names), 5), loc="upper left")
        axis.margins(y=0.25)
        axis.grid(axis="y", which="major", alpha=0.3)
    versions = [f"torch {machine.get('torch')}"]
    if "cpu_layers" in parts or "end_to_end" in parts:
        versions.append(f"onnxruntime {machine.get('onnxruntime')}")
    if "gpu_layers" in parts:
        versions.append(f"CUDA {machine.get('torch_cuda')}, cuDNN {machine.get('cudnn')}, "
                        f"torchvision {machine.get('torchvision')}")
    versions = ", ".join(versions + [str(machine.get("date_utc"))])
    figure.text(0.99, 0.005, versions, ha="right", va="bottom", fontsize=7, color="#555555")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _short_ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"
