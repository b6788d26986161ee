"""The CUDA kernels of ``plugins/cuda`` called directly from Python (ctypes).

This is the test harness of the kernels the TensorRT plugin runs: no TensorRT, no
torch extension build. ``deform_conv2d_cuda`` takes the arguments of
:func:`dcn_deploy.deform_conv2d`, checks them with the same Python validation,
and launches the kernel on CUDA tensors; with ``emulate=True`` it runs the very same
kernel code on the CPU, one emulated thread block at a time (slow, for tests on
machines without a GPU).

Storage types (the kernel computes in float32 whatever they are):

================  =========================  ===========================
tensors           allowed dtypes             rule
================  =========================  ===========================
input, weight,    float32, float16           one dtype for the four
bias, output
offset, mask      float32, float16           one dtype for the two
================  =========================  ===========================

INT8 (:mod:`dcn_deploy.op.int8`): int8 ``input`` and ``weight`` with ``x_scale`` and ``w_scale``
(per output channel, or one value), float32 ``offset``, ``mask`` and ``bias``; the output is
float32, or int8 when ``y_scale`` is given. The result is bitwise that of
:func:`dcn_deploy.op.int8.deform_conv2d_int8` with either algorithm ("tensor_core": integer
tensor cores on sm_72+, "simt": dp4a).

Kernels (``algorithm=``; the default "auto" takes the tensor-core kernel for float16
whenever the device and the problem allow it):

=============  ============  ==============================================================
algorithm      X/W/B/Y       arithmetic
=============  ============  ==============================================================
simt           fp32, fp16    float32 FMA on the float32 samples
tensor_core    fp16          samples rounded to float16 once, tensor-core products with
                             float32 accumulation; split-K over a thread-block cluster
                             (sm_90) when the tile grid is smaller than the GPU
tensor_core_   fp16          the same on channels-last gathers (8 channels per 16-byte
nhwc                         load); planar X: C/group and C/offset_group multiples of 8 and
                             a workspace (X in NHWC + W tap-major) allocated here from
                             torch; NHWC X (C padded to 8): read in place, no workspace
=============  ============  ==============================================================

Layouts of X and Y (``layout=``; offset, mask, W and B are always planar). Element (n, c, pixel)
lies at ``n*Cp*P + (c // B)*P*B + pixel*B + c % B`` (plugins/core/params.h):

============  ============================  =====================  ===========================
layout        memory                        TensorRT format        kernels
============  ============================  =====================  ===========================
nchw          [N][C][H][W]                  kLINEAR                all
nhwc          [N][H][W][C]                  (torch.channels_last)  fp16 tensor core, INT8
nhwc8         [N][H][W][C padded to 8]      kHWC8 (fp16)           fp16 tensor core, INT8
nhwc16        [N][H][W][C padded to 16]     kHWC16                 fp16 tensor core, INT8
nc4hw4        [N][C/4][H][W][4]             kCHW4 (int8)           fp16 tensor core, INT8
nc32hw32      [N][C/32][H][W][32]           kCHW32 (int8)          fp16 tensor core, INT8
============  ============================  =====================  ===========================

With ``layout=None`` a 4-D input in ``torch.channels_last`` memory format runs as ``nhwc`` (no copy;
the output comes back in ``torch.channels_last`` too) where a channels-last kernel may take it: float16
with an algorithm other than "simt", or int8. Otherwise (float32, float16 "simt"), or when the kernel
answers unsupported for that automatic choice (e.g. a corner table too large for the tensor-core
kernel's shared memory), X is copied to NCHW and the output is NCHW, as before channels-last support.
The padded layouts are packed here (:func:`pack_layout`, a copy: this is a test harness; inside
TensorRT the tensors arrive packed). X's padding channels never reach the result: 8-channel gathers
load them and zero those lanes, one-channel gathers skip them; Y's are written as zeros.
"""
from __future__ import annotations

import ctypes
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from dcn_deploy.backends.native import native_library
from dcn_deploy.op.geometry import DeformConvGeometry
from dcn_deploy.op.int8 import Int8Scales, check_int8_problem

LIBRARY_ENV = "DCN_DEPLOY_CUDA_LIB"
LIBRARY_NAME = "libdcn_deploy_cuda.so"
ELEMENT_TYPES = {torch.float32: 0, torch.float16: 1}  # DcnElementType of float data
INT8_ELEMENT_TYPE = 2  # DCN_INT8
_STATUS_NAMES = {1: "invalid argument", 2: "unsupported", 3: "CUDA error"}
_UNSUPPORTED = 2  # DCN_STATUS_UNSUPPORTED
ALGORITHMS = {"auto": 0, "simt": 1, "tensor_core": 2, "tensor_core_nhwc": 3}  # DcnAlgorithm
# name: (DcnLayout, layout_vector)
LAYOUTS = {"nchw": (0, 1), "nhwc": (1, 1), "nhwc8": (1, 8), "nhwc16": (1, 16), "nc4hw4": (2, 4), "nc32hw32": (2, 32)}
_ALGORITHM_NAMES = {value: name for name, value in ALGORITHMS.items()}


class CudaKernelError(RuntimeError):
    """A non-zero DcnStatus from the C API, with its message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (status {status}: {_STATUS_NAMES.get(status, 'unknown')})")
        self.status = status


class Problem(ctypes.Structure):
    """``DcnDeformConvProblem`` of deform_conv_cuda.h."""

    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "batch", "in_channels", "in_height", "in_width", "out_channels", "kernel_h", "kernel_w",
            "stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom", "pad_right",
            "dilation_h", "dilation_w", "group", "offset_group",
        )
    ] + [
        ("has_mask", ctypes.c_int32),
        ("has_bias", ctypes.c_int32),
        ("data_type", ctypes.c_int),
        ("offset_type", ctypes.c_int),
        ("algorithm", ctypes.c_int),
        ("split_k", ctypes.c_int32),
        ("y_scale", ctypes.c_float),
        ("layout", ctypes.c_int),
        ("layout_vector", ctypes.c_int32),
    ]


class _LaunchInfo(ctypes.Structure):
    _fields_ = [
        ("algorithm", ctypes.c_int),
        ("splits", ctypes.c_int32),
        ("grid", ctypes.c_uint32 * 3),
        ("threads", ctypes.c_uint32),
        ("shared_bytes", ctypes.c_uint64),
    ]


class LaunchInfo(NamedTuple):
    """What one launch of a problem does (``dcn_deform_conv_cuda_plan``)."""

    algorithm: str
    splits: int
    grid: tuple[int, int, int]
    threads: int
    shared_bytes: int


class _Buffers(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_void_p) for name in ("input", "weight", "offset", "mask", "bias", "output", "output_scale")
    ]


def cuda_kernel_library() -> str:
    """Path of ``libdcn_deploy_cuda.so``: ``$DCN_DEPLOY_CUDA_LIB``, else the repository's build."""
    return native_library(LIBRARY_NAME, LIBRARY_ENV, "run ./scripts/build_plugins.sh on a machine with nvcc")


_library: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _library
    if _library is None:
        library = ctypes.CDLL(cuda_kernel_library())
        error_args = [ctypes.c_char_p, ctypes.c_size_t]
        library.dcn_deform_conv_cuda.argtypes = [
            ctypes.POINTER(Problem), ctypes.POINTER(_Buffers), ctypes.c_void_p, ctypes.c_void_p, *error_args
        ]
        library.dcn_deform_conv_cuda_emulated.argtypes = [
            ctypes.POINTER(Problem), ctypes.POINTER(_Buffers), *error_args
        ]
        library.dcn_deform_conv_cuda_plan.argtypes = [
            ctypes.POINTER(Problem), ctypes.c_int, ctypes.POINTER(_LaunchInfo), *error_args
        ]
        library.dcn_deform_conv_cuda_plan.restype = ctypes.c_int
        library.dcn_deform_conv_cuda_workspace_size.argtypes = [ctypes.POINTER(Problem)]
        library.dcn_deform_conv_cuda_workspace_size.restype = ctypes.c_size_t
        for function in (library.dcn_deform_conv_cuda, library.dcn_deform_conv_cuda_emulated):
            function.restype = ctypes.c_int
        _library = library
    return _library


def _element_type(tensors: dict[str, Tensor | None], role: str) -> int:
    present = {name: t for name, t in tensors.items() if t is not None}
    dtypes = {t.dtype for t in present.values()}
    if len(dtypes) != 1:
        listed = ", ".join(f"{name}={t.dtype}" for name, t in present.items())
        raise TypeError(f"deform_conv2d_cuda: {role} must share one dtype, got {listed}")
    dtype = dtypes.pop()
    if dtype not in ELEMENT_TYPES:
        raise TypeError(f"deform_conv2d_cuda: {role} must be float32 or float16, got {dtype}")
    return ELEMENT_TYPES[dtype]


def _layout_code(layout: str) -> tuple[int, int]:
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"deform_conv2d_cuda: layout must be one of {sorted(LAYOUTS)}, got {layout!r}") from None


def _padded(channels: int, layout: str) -> tuple[int, int]:
    """(Cp, B): padded channels and channels per block of ``layout`` (module docstring)."""
    kind, vector = _layout_code(layout)
    padded = channels if kind == 0 else -(-channels // vector) * vector
    return padded, (1 if kind == 0 else padded if kind == 1 else vector)


def pack_layout(x: Tensor, layout: str, fill: float = 0.0) -> Tensor:
    """The buffer of an [N, C, H, W] tensor in ``layout``, padding channels set to ``fill``:
    shape [N, Cp/B, H, W, B] (contiguous; planar: B = 1)."""
    n, c, h, w = x.shape
    padded, block = _padded(c, layout)
    full = torch.full((n, padded, h, w), fill, dtype=x.dtype, device=x.device)
    full[:, :c] = x
    return full.reshape(n, padded // block, block, h, w).permute(0, 1, 3, 4, 2).contiguous()


def unpack_layout(buffer: Tensor, layout: str, channels: int) -> Tensor:
    """The [N, C, H, W] tensor (contiguous) held by a :func:`pack_layout`-shaped ``buffer``."""
    n, blocks, h, w, block = buffer.shape
    return buffer.permute(0, 1, 4, 2, 3).reshape(n, blocks * block, h, w)[:, :channels].contiguous()


def workspace_size(problem: Problem) -> int:
    return int(_load().dcn_deform_conv_cuda_workspace_size(ctypes.byref(problem)))


def launch_plan(problem: Problem, emulated: bool = False) -> LaunchInfo:
    """The kernel, split-K, grid and shared memory a launch of ``problem`` gets on the current
    CUDA device (``emulated=False``) or in the emulator (which plans for an H100)."""
    info = _LaunchInfo()
    error = ctypes.create_string_buffer(1024)
    status = _load().dcn_deform_conv_cuda_plan(ctypes.byref(problem), int(emulated), ctypes.byref(info), error, 1024)
    if status != 0:
        raise CudaKernelError(status, error.value.decode(errors="replace"))
    return LaunchInfo(_ALGORITHM_NAMES[info.algorithm], info.splits, tuple(info.grid), info.threads, info.shared_bytes)


def _algorithm_code(algorithm: str) -> int:
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"deform_conv2d_cuda: algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}") from None


def deform_conv2d_cuda(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    mask: Tensor | None = None,
    groups: int = 1,
    offset_groups: int | None = None,
    *,
    emulate: bool = False,
    algorithm: str = "auto",
    split_k: int = 0,
    x_scale: float | None = None,
    w_scale: Sequence[float] | Tensor | float | None = None,
    y_scale: float | None = None,
    layout: str | None = None,
    padding_fill: float = 0.0,
    packed_output: bool = False,
    output_fill: float | None = None,
) -> Tensor:
    """Runs the CUDA kernel (or its CPU emulation) with :func:`dcn_deploy.deform_conv2d`'s arguments.

    Returns a new tensor of the input's dtype on the input's device (INT8: float32, or int8
    when ``y_scale`` is given). On CUDA the launch is on torch's current stream, so the result
    is ordered like any torch operation. ``algorithm`` picks the kernel (see the module's
    table); ``split_k`` > 0 forces that many K splits on the tensor-core kernel (0: the
    kernel's own choice). ``x_scale``, ``w_scale`` and ``y_scale``: the INT8 form, for int8
    ``input`` and ``weight`` only (module docstring). ``layout``: how X and Y are laid out for
    the kernel (module docstring; None: ``nhwc`` for a ``torch.channels_last`` float16 (not "simt")
    or int8 input where the kernel runs it, else ``nchw``); padded layouts get ``padding_fill`` in X's padding channels, and
    ``packed_output=True`` returns Y's packed buffer [N, Mp/B, Ho, Wo, B] instead of [N, M, Ho, Wo];
    ``output_fill`` fills Y before the launch (tests: what the kernel leaves unwritten shows).
    """
    where = "deform_conv2d_cuda"
    algorithm_code = _algorithm_code(algorithm)
    int8 = input.dtype == torch.int8 or weight.dtype == torch.int8
    if int8:
        check_int8_problem(input, weight, where)
    elif x_scale is not None or w_scale is not None or y_scale is not None:
        raise TypeError(
            f"{where}: x_scale, w_scale and y_scale are for int8 input and weight, got {input.dtype} and {weight.dtype}"
        )
    geo = DeformConvGeometry.check(
        input, offset, weight, bias, mask, stride, padding, dilation, groups, offset_groups, where=where,
    )
    output_scale = None
    y_scale_value = 0.0
    if int8:
        if x_scale is None or w_scale is None:
            raise ValueError(f"{where}: int8 input and weight need x_scale and w_scale")
        scales = Int8Scales.make(x_scale, w_scale, y_scale, out_channels=weight.shape[0], where=where)
        for name, tensor in (("offset", offset), ("mask", mask), ("bias", bias)):
            if tensor is not None and tensor.dtype != torch.float32:
                raise TypeError(f"{where}: with int8 input, {name} must be float32, got {tensor.dtype}")
        data_type, offset_type = INT8_ELEMENT_TYPE, ELEMENT_TYPES[torch.float32]
        output_scale = torch.from_numpy(scales.output_scale()).to(input.device)
        y_scale_value = scales.y_scale or 0.0
        output_dtype = torch.float32 if scales.y_scale is None else torch.int8
    else:
        data_type = _element_type({"input": input, "weight": weight, "bias": bias}, "input, weight and bias")
        offset_type = _element_type({"offset": offset, "mask": mask}, "offset and mask")
        output_dtype = input.dtype
    tensors = {"input": input, "weight": weight, "offset": offset, "mask": mask, "bias": bias}
    wanted = torch.device("cpu") if emulate else input.device
    for name, tensor in tensors.items():
        if tensor is not None and tensor.device != wanted:
            where = "the CPU (emulate=True)" if emulate else f"{input.device} like input"
            raise ValueError(f"deform_conv2d_cuda: {name} is on {tensor.device}, expected {where}")
    if not emulate and input.device.type != "cuda":
        raise ValueError(
            f"deform_conv2d_cuda: tensors are on {input.device}; pass CUDA tensors, or emulate=True for CPU tensors"
        )

    automatic_nhwc = False
    if layout is None:  # torch.channels_last (and not also plain contiguous, as for C == 1 or H*W == 1)
        channels_last = input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()
        automatic_nhwc = channels_last and (int8 or (input.dtype == torch.float16 and algorithm != "simt"))
        layout = "nhwc" if automatic_nhwc else "nchw"
    layout_code, layout_vector = _layout_code(layout)
    contiguous = {name: (t.contiguous() if t is not None else None) for name, t in tensors.items()}
    n, c, h, w = input.shape
    m = weight.shape[0]
    kh, kw = geo.kernel
    out_padded, out_block = _padded(m, layout)
    packed = out_block > 1 and layout != "nhwc"
    if layout == "nhwc":  # torch's own channels-last strides: no copy of a channels_last input
        contiguous["input"] = input.contiguous(memory_format=torch.channels_last)
        output = torch.empty((n, m, *geo.out_hw), dtype=output_dtype, device=input.device,
                             memory_format=torch.channels_last)
    else:
        if packed:
            contiguous["input"] = pack_layout(input, layout, padding_fill)
        shape = (n, out_padded // out_block, *geo.out_hw, out_block) if packed else (n, m, *geo.out_hw)
        output = torch.empty(shape, dtype=output_dtype, device=input.device)
    if output_fill is not None:
        output.fill_(output_fill)
    problem = Problem(
        batch=n, in_channels=c, in_height=h, in_width=w, out_channels=m, kernel_h=kh, kernel_w=kw,
        stride_h=geo.stride[0], stride_w=geo.stride[1],
        pad_top=geo.pads[0], pad_left=geo.pads[1], pad_bottom=geo.pads[2], pad_right=geo.pads[3],
        dilation_h=geo.dilation[0], dilation_w=geo.dilation[1], group=geo.groups, offset_group=geo.offset_groups,
        has_mask=int(mask is not None), has_bias=int(bias is not None),
        data_type=data_type, offset_type=offset_type, algorithm=algorithm_code, split_k=split_k,
        y_scale=y_scale_value, layout=layout_code, layout_vector=layout_vector,
    )

    def pointer(tensor: Tensor | None) -> int | None:
        return tensor.data_ptr() if tensor is not None else None

    pointers = [pointer(contiguous[name]) for name in ("input", "weight", "offset", "mask", "bias")]
    stream = None if emulate else torch.cuda.current_stream(input.device).cuda_stream
    workspace = None
    if not emulate and (size := workspace_size(problem)) > 0:  # torch's caching allocator, on this stream
        workspace = torch.empty(size, dtype=torch.uint8, device=input.device)
    status, message = call_c_api(
        problem, [*pointers, output.data_ptr(), pointer(output_scale)], emulate=emulate, stream=stream,
        workspace=workspace.data_ptr() if workspace is not None else None,
    )
    if status == _UNSUPPORTED and automatic_nhwc:  # planning refused it before any launch: planar X instead
        return deform_conv2d_cuda(
            input, offset, weight, bias, stride, padding, dilation, mask, groups, offset_groups, emulate=emulate,
            algorithm=algorithm, split_k=split_k, x_scale=x_scale, w_scale=w_scale, y_scale=y_scale, layout="nchw",
            padding_fill=padding_fill, packed_output=packed_output, output_fill=output_fill,
        )
    if status != 0:
        raise CudaKernelError(status, message)
    if packed and not packed_output:
        return unpack_layout(output, layout, m)
    return output


def call_c_api(
    problem: Problem, pointers: Sequence[int | None], emulate: bool, stream: int | None = None,
    workspace: int | None = None,
) -> tuple[int, str]:
    """Calls the C API with a raw problem and raw pointers (X, W, offset, mask, B, Y and, for INT8,
    output_scale); returns (status, message)."""
    buffers = _Buffers(*pointers)
    error = ctypes.create_string_buffer(1024)
    library = _load()
    if emulate:
        status = library.dcn_deform_conv_cuda_emulated(ctypes.byref(problem), ctypes.byref(buffers), error, 1024)
    else:
        status = library.dcn_deform_conv_cuda(
            ctypes.byref(problem), ctypes.byref(buffers), workspace, stream, error, 1024
        )
    return status, error.value.decode(errors="replace")
