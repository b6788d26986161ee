""":func:`run_benchmark`: every part ``dcn-deploy bench`` was asked for, in one process, as one result dict."""
from __future__ import annotations

from typing import Callable

import torch

from dcn_deploy.bench.config import (
    FORMAT,
    IMPLEMENTATIONS,
    WORKSPACE_NOTE,
    BenchConfig,
    machine_info,
)
from dcn_deploy.bench.errors import BenchError
from dcn_deploy.bench.gpu import gpu_info, gpu_layer_row, gpu_unavailable_reason


def run_benchmark(config: BenchConfig, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Runs the parts ``config`` asks for and returns the JSON-ready result.

    ``progress(description, completed, total)`` is called as the work advances (units: warm-up
    runs and timed rounds). Raises BenchError for bad arguments and missing prerequisites.
    """
    config.checked()
    run_cpu = config.device in ("auto", "cpu")
    gpu_reason = None
    if config.device == "cuda":
        gpu_reason = gpu_unavailable_reason()
        if gpu_reason:
            raise BenchError(f"--device cuda: {gpu_reason}")
    elif config.device == "auto":
        gpu_reason = gpu_unavailable_reason()
    else:
        gpu_reason = "--device cpu"
    run_gpu = gpu_reason is None and config.layers
    if run_cpu:
        # the CPU parts need onnx and onnxruntime, optional on a GPU-only machine: imported only here
        from dcn_deploy.bench.cpu import check_custom_op_library, cpu_layer_row
        from dcn_deploy.bench.end_to_end import end_to_end_row
        from dcn_deploy.onnx.recipes import load_recipe

        if config.recipes:

            for recipe in config.recipes:  # before any timing: a typo fails at once
                try:
                    load_recipe(recipe)
                except (FileNotFoundError, AttributeError) as error:
                    raise BenchError(str(error)) from None
        check_custom_op_library()

    cpu_rows = [(s, b) for s in config.shapes for b in config.batches] if (run_cpu and config.layers) else []
    recipes = list(config.recipes) if run_cpu else []
    gpu_rows = [(s, b) for s in config.shapes for b in config.batches] if run_gpu else []
    per_cpu = (config.warmup + config.repeats("cpu")) * (2 if config.reference else 1)  # reference timed apart
    per_gpu = config.gpu_warmup + config.repeats("gpu")
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
            "warmup_gpu": config.gpu_warmup, "seed": config.seed, "offset_scale_px": config.offset_scale,
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

        previous = torch.get_num_threads()
        torch.set_num_threads(config.thread_count)
        try:
            for shape, batch in cpu_rows:
                announce(f"CPU {shape.spec} batch {batch}")
                result["cpu_layers"].append(cpu_layer_row(shape, batch, config, step))
        finally:
            torch.set_num_threads(previous)
    for recipe in recipes:
        announce(f"end to end {recipe}")
        result["end_to_end"].append(end_to_end_row(recipe, config, step))
    if gpu_rows:
        result["machine"].update(gpu_info())
        result["gpu_workspace_note"] = WORKSPACE_NOTE
        for shape, batch in gpu_rows:
            announce(f"GPU {shape.spec} batch {batch}")
            result["gpu_layers"].append(gpu_layer_row(shape, batch, config, step))
    used = {name for part in ("cpu_layers", "end_to_end", "gpu_layers") for row in result[part]
            for name in row["implementations"]}
    result["implementations"] = {name: text for name, text in IMPLEMENTATIONS.items() if name in used}
    return result
