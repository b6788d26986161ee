"""End-to-end rows: a recipe exported, run with our custom op, ONNX Runtime's native node and PyTorch."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dcn_deploy.bench.config import E2E_INT8_CALIBRATION_SAMPLES, BenchConfig
from dcn_deploy.bench.cpu import (
    custom_session,
    plain_session,
    time_cpu_implementations,
)
from dcn_deploy.bench.errors import BenchError
from dcn_deploy.bench.timing import max_abs_diff, ratio
from dcn_deploy.onnx.quantize import quantize_onnx, synthetic_calibration
from dcn_deploy.onnx.recipes import export_recipe, load_recipe
from dcn_deploy.onnx.rewrite import rewrite_onnx


def end_to_end_row(recipe: str, config: BenchConfig, step) -> dict:
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
        sessions = {"custom": custom_session(str(custom_path), threads),
                    "native": plain_session(str(standard_path), threads)}
        if config.int8:

            # The INT8 form `dcn-deploy quantize MODEL --synthetic 8` writes (max calibration):
            # ONNX Runtime's Q/DQ convs and DcnDeformConvInt8 nodes.
            calibration = synthetic_calibration(proto, E2E_INT8_CALIBRATION_SAMPLES,
                                                shapes=[list(t.shape) for t in module.example_inputs(
                                                    shape[0], shape[2], shape[3], seed=config.seed)])
            sessions["custom_int8"] = custom_session(quantize_onnx(proto, calibration).model.SerializeToString(),
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
    agreement = {"custom_vs_native": max(max_abs_diff(a, b) for a, b in zip(outputs["custom"], outputs["native"]))}
    if "custom_int8" in outputs:
        # Quantization error, not a bug: the largest |INT8 - float| over the largest |float| output.
        agreement["custom_int8_vs_native_relative"] = max(
            max_abs_diff(a, b) / max(float(np.abs(b).max()), 1e-30)
            for a, b in zip(outputs["custom_int8"], outputs["native"]))
    if "reference" in outputs:
        out = outputs["reference"]
        out = [out] if isinstance(out, torch.Tensor) else list(out.values() if isinstance(out, dict) else out)
        agreement["reference_vs_native"] = max(
            max_abs_diff(a.numpy(), b) for a, b in zip(out, outputs["native"]))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timings = time_cpu_implementations(functions, config, step)
    finally:
        torch.set_num_threads(previous)
    ratios = {"custom/native": ratio(timings["custom"], timings["native"])}
    if "reference" in timings:
        ratios["custom/reference"] = ratio(timings["custom"], timings["reference"])
    if "custom_int8" in timings:
        ratios["custom_int8/custom"] = ratio(timings["custom_int8"], timings["custom"])
    return {
        "recipe": recipe, "input_shape": list(shape), "dcn_nodes": count,
        "inputs": {name: list(np.shape(value)) for name, value in feeds.items()},
        "implementations": {name: timing.to_json() for name, timing in timings.items()},
        "ratios": ratios,
        "max_abs_diff": agreement,
    }
