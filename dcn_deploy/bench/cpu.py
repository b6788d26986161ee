"""CPU layer rows: our custom op against ONNX Runtime's native DeformConv, its dense Conv and PyTorch."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from dcn_deploy.backends.onnxruntime import ort_custom_op_library, ort_session
from dcn_deploy.bench.config import BUILD_HINT, BenchConfig
from dcn_deploy.bench.errors import BenchError
from dcn_deploy.bench.layers import LayerShape, layer_arrays
from dcn_deploy.bench.timing import Timing, max_abs_diff, ratio, time_interleaved
from dcn_deploy.onnx import schema
from dcn_deploy.op.functional import deform_conv2d
from dcn_deploy.op.int8 import quantize_symmetric, quantize_weight_per_channel


def session_options(threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No spinning: the pools of the sessions timed one after the other share the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def check_custom_op_library() -> str:
    try:
        return ort_custom_op_library()
    except FileNotFoundError as error:
        message = str(error)
        hint = "" if "build_plugins.sh" in message else f"; {BUILD_HINT}"
        raise BenchError(
            f"the CPU benchmark needs this project's ONNX Runtime custom-op library: {message}{hint} "
            "(or time only the GPU part with --device cuda)"
        ) from None


def custom_session(model, threads: int):
    return ort_session(model, sess_options=session_options(threads))


def plain_session(model, threads: int):
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


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


def cpu_layer_row(shape: LayerShape, batch: int, config: BenchConfig, step) -> dict:
    threads = config.thread_count
    arrays = layer_arrays(shape, batch, config.seed, config.offset_scale)
    deform_feeds = {name: arrays[name] for name in ("X", "offset", "mask")}
    sessions = {
        "custom": custom_session(layer_model(shape, arrays, "custom"), threads),
        "native": plain_session(layer_model(shape, arrays, "native"), threads),
        "dense": plain_session(layer_model(shape, arrays, "dense"), threads),
    }
    functions: dict[str, Callable[[], Any]] = {
        "custom": lambda: sessions["custom"].run(None, deform_feeds),
        "native": lambda: sessions["native"].run(None, deform_feeds),
        "dense": lambda: sessions["dense"].run(None, {"X": arrays["X"]}),
    }
    if config.int8:
        int8_model, int8_feeds = int8_layer_model(shape, arrays)
        sessions["custom_int8"] = custom_session(int8_model, threads)
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
    agreement = {"custom_vs_native": max_abs_diff(outputs["custom"][0], native_out)}
    if "reference" in outputs:
        agreement["reference_vs_native"] = max_abs_diff(outputs["reference"].numpy(), native_out)
    timings = time_cpu_implementations(functions, config, step)
    ratios = {
        "custom/native": ratio(timings["custom"], timings["native"]),
        "custom/dense": ratio(timings["custom"], timings["dense"]),
    }
    if "reference" in timings:
        ratios["custom/reference"] = ratio(timings["custom"], timings["reference"])
    if "custom_int8" in timings:
        ratios["custom_int8/custom"] = ratio(timings["custom_int8"], timings["custom"])
        # Quantization error, not a bug: INT8 against the float output, relative to its largest value.
        agreement["custom_int8_vs_native_relative"] = (
            max_abs_diff(outputs["custom_int8"][0], native_out) / max(float(abs(native_out).max()), 1e-30))
    return {
        "shape": shape.spec, "batch": batch, **shape.describe(),
        "implementations": {name: timing.to_json() for name, timing in timings.items()},
        "ratios": ratios,
        "max_abs_diff": agreement,
    }


def layer_model(shape: LayerShape, arrays: dict, kind: str, int8_scales: dict | None = None) -> bytes:
    """One-node ONNX: ``custom`` DcnDeformConv, ``int8`` DcnDeformConvInt8 (``int8_scales``:
    ``x_scale``, ``w_scale``; int8 X and W in ``arrays``), ``native`` DeformConv or ``dense`` Conv.

    W and B are initializers (as in an exported model); X, offset and mask are graph inputs.
    """

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


def int8_layer_model(shape: LayerShape, arrays: dict) -> tuple[bytes, dict]:
    """One-node DcnDeformConvInt8 model for the layer's float tensors, and its feeds: X quantized
    with x_scale = max|X| / 127, W per output channel (int8 initializer)."""

    x = torch.from_numpy(arrays["X"])
    x_scale = float(np.float32(max(float(x.abs().max()), 1e-6) / 127.0))
    wq, w_scale = quantize_weight_per_channel(torch.from_numpy(arrays["W"]))
    quantized = dict(arrays, X=quantize_symmetric(x, x_scale).numpy(), W=wq.numpy())
    model = layer_model(shape, quantized, "int8", {"x_scale": x_scale, "w_scale": w_scale})
    return model, {name: quantized[name] for name in ("X", "offset", "mask")}
