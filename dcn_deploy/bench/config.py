"""Benchmarks of the DCN implementations (``dcn-deploy bench``); never run as a timed test.

Three parts, each a list of rows in the result (``run_benchmark`` returns a JSON-ready dict):

``cpu_layers``
    One DCNv2 layer (3x3, pad 1, stride 1, mask and bias, C = M) per shape and batch, timed in
    one process with one intra-op thread count: this project's ONNX Runtime custom op (one
    ``DcnDeformConv`` node), ONNX Runtime's native ``DeformConv`` (opset 19, same inputs),
    ONNX Runtime's dense ``Conv`` of the same shape (the floor: no sampling at all) and the
    PyTorch reference (:func:`dcn_deploy.deform_conv2d`, torch threads set to the same count).
``end_to_end``
    A recipe (``export/``) exported with the custom node vs the same ONNX rewritten to standard
    ``DeformConv`` (both in ONNX Runtime), and the PyTorch model (eval, no_grad).
``gpu_layers``
    The same layer shapes on a CUDA device: this project's kernels
    (:func:`dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda`) in FP16 (each ``algorithm`` when the
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
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from dcn_deploy.bench.errors import BenchError
from dcn_deploy.bench.layers import DEFAULT_SHAPES, LayerShape

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
    "reference": "PyTorch reference dcn_deploy.deform_conv2d (torch threads = --threads)",
    "custom_int8": "INT8 (dcn_deploy/int8.py: int8 X and W, per-channel w_scale, float32 Y). Layer rows: one "
    "DcnDeformConvInt8 node, X quantized once before timing; end to end: the recipe after `dcn-deploy quantize "
    "--synthetic 8` (ONNX Runtime's Q/DQ convs, DcnDeformConvInt8 nodes), fed float32 X",
    "ours_fp16": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, float16 storage (default algorithm)",
    "ours_fp16_simt": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, float16, algorithm='simt'",
    "ours_fp16_tensor_core": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, float16, algorithm='tensor_core'",
    "ours_fp16_tensor_core_nhwc": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, float16, algorithm='tensor_core_nhwc' "
    "(channels-last gathers; workspace: X in NHWC + W tap-major)",
    "ours_fp16_channels_last": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, float16, X in torch.channels_last "
    "(layout 'nhwc', as TensorRT's kHWC8 hands it over): 16-byte gathers of X in place, no workspace",
    "ours_fp32": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, float32 storage",
    "ours_int8": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, INT8 (dcn_deploy/int8.py: int8 X and W, per-channel "
    "w_scale, float32 Y), default algorithm (integer tensor cores)",
    "ours_int8_simt": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, INT8, algorithm='simt' (dp4a)",
    "ours_int8_requantized": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, INT8 with int8 Yq output (y_scale)",
    "ours_int8_channels_last": "dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda, INT8, X in torch.channels_last "
    "(layout 'nhwc'; one channel per gather), default algorithm",
    "ours_int8_channels_last_simt": "as ours_int8_channels_last, algorithm='simt' (dp4a)",
    "torchvision_fp16": "torchvision.ops.deform_conv2d, float16",
    "cudnn_fp16": "torch.nn.functional.conv2d (cuDNN), float16, channels_last: dense conv of the same shape (floor)",
}


WORKSPACE_NOTE = (
    "ours: dcn_deploy.backends.cuda_kernels.workspace_size(Problem) for the whole batch; torchvision, TensorRT's "
    "built-in ModulatedDeformConv2d plugin and mmcv: an im2col column buffer of C*kh*kw*Ho*Wo elements per "
    "image, computed from the shape, not measured (torchvision processes up to 32 images per column "
    "buffer, so its real buffer can be a multiple of this)"
)


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

    @property
    def gpu_warmup(self) -> int:
        """Warm-up rounds of a GPU row: at least 3 (the first launches load modules and size caches)."""
        return max(self.warmup, 3)

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
