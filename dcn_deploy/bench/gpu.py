"""GPU layer rows: our CUDA kernels against torchvision and cuDNN's dense convolution (needs a GPU)."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from dcn_deploy.backends import cuda_kernels
from dcn_deploy.backends.cuda_kernels import cuda_kernel_library, deform_conv2d_cuda
from dcn_deploy.bench.config import GPU_REPEAT, BenchConfig
from dcn_deploy.bench.layers import LayerShape, int8_layer_tensors, layer_arrays
from dcn_deploy.bench.timing import Timing, ratio, time_interleaved
from dcn_deploy.op.geometry import normalize_pads


def gpu_layer_functions(t16: dict, t32: dict | None, conv: dict,
                        t8: dict | None = None) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:  # pragma: no cover - GPU only
    """The GPU implementations of one layer as zero-argument callables, and a note for each left out.

    ``t16``/``t32``: CUDA tensors ``X, W, offset, B, mask`` (B and mask may be None) in float16 /
    float32 (``t32`` None: no FP32 row). ``t8``: the INT8 form (``int8_layer_tensors``; None: no
    INT8 rows). ``conv``: ``stride, padding, dilation, groups,
    offset_groups`` as :func:`dcn_deploy.backends.cuda_kernels.deform_conv2d_cuda` takes them (``padding``
    may be the four ONNX pads). Every callable was run once; one that raised is left out with
    its error as the note.
    """

    def ours(t: dict, **extra) -> Callable[[], Any]:
        return lambda: deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], mask=t["mask"], **conv, **extra)

    candidates: dict[str, Callable[[], Any]] = {
        "ours_fp16": ours(t16),
        "ours_fp16_simt": ours(t16, algorithm="simt"),
        "ours_fp16_tensor_core": ours(t16, algorithm="tensor_core"),
        "ours_fp16_tensor_core_nhwc": ours(t16, algorithm="tensor_core_nhwc"),
        # X in torch.channels_last, as TensorRT's kHWC8 hands it to the plugin: read in place, no workspace
        "ours_fp16_channels_last": ours({**t16, "X": t16["X"].contiguous(memory_format=torch.channels_last)}),
    }
    if t32 is not None:
        candidates["ours_fp32"] = ours(t32)
    if t8 is not None:
        scales = dict(x_scale=t8["x_scale"], w_scale=t8["w_scale"])
        candidates["ours_int8"] = ours(t8, **scales)
        candidates["ours_int8_simt"] = ours(t8, algorithm="simt", **scales)
        candidates["ours_int8_requantized"] = ours(t8, y_scale=t8["y_scale"], **scales)
        x8_last = {**t8, "X": t8["X"].contiguous(memory_format=torch.channels_last)}  # one channel per gather
        candidates["ours_int8_channels_last"] = ours(x8_last, **scales)
        candidates["ours_int8_channels_last_simt"] = ours(x8_last, algorithm="simt", **scales)
    notes: dict[str, str] = {}
    top, left, bottom, right = normalize_pads(conv.get("padding", 0))
    symmetric = top == bottom and left == right
    stride, dilation, groups = conv.get("stride", 1), conv.get("dilation", 1), conv.get("groups", 1)
    try:
        import torchvision.ops  # noqa: F401 - optional: the GPU baseline only

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
                   t8: dict | None = None) -> tuple[dict[str, Timing], dict[str, str]]:  # pragma: no cover - GPU only
    """CUDA-event timings of every GPU implementation of one layer (see ``gpu_layer_functions``)."""
    functions, notes = gpu_layer_functions(t16, t32, conv, t8)
    return time_interleaved(functions, warmup, repeat, "cuda", step), notes


def _gpu_problem(shape: LayerShape, batch: int, dtype, algorithm: str | None = None,
                 layout: str = "nchw"):  # pragma: no cover - GPU only
    k = shape.kernel
    fields = dict(
        batch=batch, in_channels=shape.in_channels, in_height=shape.height, in_width=shape.width,
        out_channels=shape.out_channels, kernel_h=k, kernel_w=k, stride_h=shape.stride, stride_w=shape.stride,
        pad_top=shape.pad, pad_left=shape.pad, pad_bottom=shape.pad, pad_right=shape.pad,
        dilation_h=1, dilation_w=1, group=1, offset_group=1, has_mask=1, has_bias=1,
        data_type=cuda_kernels.ELEMENT_TYPES[dtype], offset_type=cuda_kernels.ELEMENT_TYPES[dtype],
        layout=cuda_kernels.LAYOUTS[layout][0], layout_vector=cuda_kernels.LAYOUTS[layout][1],
    )
    if algorithm is not None:
        fields["algorithm"] = cuda_kernels.ALGORITHMS[algorithm]
    return cuda_kernels.Problem(**fields)


def _gpu_workspace(shape: LayerShape, batch: int) -> dict:  # pragma: no cover - GPU only
    """Workspace bytes: ours from the C API (per algorithm where it has them), im2col computed."""

    ho, wo = shape.out_hw
    columns = shape.in_channels * shape.kernel * shape.kernel * ho * wo
    ours = {"fp16": cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float16)),
            "fp32": cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float32))}
    for algorithm in ("simt", "tensor_core", "tensor_core_nhwc"):
        ours[f"fp16_{algorithm}"] = cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float16, algorithm))
    ours["fp16_channels_last"] = cuda_kernels.workspace_size(_gpu_problem(shape, batch, torch.float16, None, "nhwc"))
    result = {
        "ours_bytes": ours,
        "im2col_elements_per_image": columns,
        "im2col_bytes_per_image": {"fp16": columns * 2, "fp32": columns * 4},
    }
    for key, layout in (("ours_fp16_launch", "nchw"), ("ours_fp16_channels_last_launch", "nhwc")):
        try:  # what the default ("auto") FP16 launch does on this GPU
            result[key] = cuda_kernels.launch_plan(_gpu_problem(shape, batch, torch.float16, None, layout))._asdict()
        except cuda_kernels.CudaKernelError as error:
            result[key] = str(error)[:200]
    return result


def gpu_layer_row(shape: LayerShape, batch: int, config: BenchConfig, step) -> dict:  # pragma: no cover - GPU only
    arrays = layer_arrays(shape, batch, config.seed, config.offset_scale)
    t32 = {name: torch.from_numpy(value).cuda() for name, value in arrays.items()}
    t16 = {name: value.half() for name, value in t32.items()}
    conv = dict(stride=shape.stride, padding=shape.pad, dilation=1, groups=1, offset_groups=1)
    timings, notes = time_gpu_layer(t16, t32, conv, warmup=config.gpu_warmup, repeat=config.repeats("gpu"),
                                    step=step, t8=int8_layer_tensors(t32))
    ratios: dict[str, float | None] = {}
    for name in timings:
        if name.startswith("ours_"):
            ratios[f"{name}/cudnn_fp16"] = ratio(timings[name], timings.get("cudnn_fp16"))
            if name.startswith("ours_fp16"):
                ratios[f"torchvision_fp16/{name}"] = ratio(timings.get("torchvision_fp16"), timings[name])
            if name.startswith("ours_int8"):  # the INT8 target: <= 0.7 of the FP16 tensor-core time
                ratios[f"{name}/ours_fp16_tensor_core"] = ratio(timings[name], timings.get("ours_fp16_tensor_core"))
    row = {
        "shape": shape.spec, "batch": batch, **shape.describe(),
        "implementations": {name: timing.to_json() for name, timing in timings.items()},
        "ratios": ratios,
        "workspace": _gpu_workspace(shape, batch),
    }
    if notes:
        row["not_timed"] = notes
    return row


def gpu_unavailable_reason() -> str | None:
    """None when the GPU part can run, else why not."""

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"

    try:
        cuda_kernel_library()
    except FileNotFoundError as error:
        return str(error)
    return None


def gpu_info() -> dict:
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": torch.cuda.get_device_name(),
        "gpu_multiprocessors": properties.multi_processor_count,
        "gpu_memory_bytes": properties.total_memory,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "deform_conv2d_cuda_algorithms": sorted(cuda_kernels.ALGORITHMS),
    }
