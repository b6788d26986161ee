"""The CUDA kernels (plugins/cuda) against the float64 PyTorch reference.

Every test runs the kernel's own code twice where it can: emulated on the CPU (always;
the block phases run thread by thread, see plugins/cuda/kernels/tile.cuh) and on a CUDA device
(only where torch sees one, as on the machine scripts/gpu_check.sh runs on).

Tolerances (issue 5): FP32 max |error| / max |reference| <= 1e-5; FP16 relative L2
<= 1e-3 against the float64 reference computed on the same (fp16-rounded) inputs, so
the bound measures the kernel, not the rounding of its inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import CASES, Case

from dcn_deploy.op.functional import deform_conv2d

cuda_kernels = pytest.importorskip("dcn_deploy.backends.cuda_kernels")

FP32_MAX_REL = 1e-5
FP16_REL_L2 = 1e-3

try:
    cuda_kernels.cuda_kernel_library()
    _LIBRARY_ERROR = None
except FileNotFoundError as error:  # nvcc missing: the CUDA kernels are not built
    _LIBRARY_ERROR = str(error)

pytestmark = pytest.mark.skipif(_LIBRARY_ERROR is not None, reason=_LIBRARY_ERROR or "")

DEVICES = [
    "emulated",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


def _tensors(case: Case, data_dtype: torch.dtype, offset_dtype: torch.dtype, device: str):
    """Inputs of the case in the storage dtypes, on the device the kernel runs on."""
    place = "cpu" if device == "emulated" else device
    arrays = case.make(np.float32)
    out = {}
    for name, array in arrays.items():
        if array is None:
            out[name] = None
            continue
        dtype = offset_dtype if name in ("offset", "mask") else data_dtype
        out[name] = torch.from_numpy(array).to(dtype=dtype, device=place)
    return out


def _kwargs(case: Case) -> dict:
    return dict(stride=case.stride, padding=case.pads, dilation=case.dilation, groups=case.group,
                offset_groups=case.offset_group)


# Every float16 test runs on both kernels.
ALGORITHMS = ["simt", "tensor_core"]


def _run(t: dict, device: str, **kwargs) -> torch.Tensor:
    return cuda_kernels.deform_conv2d_cuda(
        t["X"], t["offset"], t["W"], t["B"], mask=t["mask"], emulate=device == "emulated", **kwargs
    )


def _reference(t: dict, **kwargs) -> torch.Tensor:
    """float64 reference on exactly the values the kernel received."""
    as64 = {k: (v.detach().cpu().double() if v is not None else None) for k, v in t.items()}
    return deform_conv2d(as64["X"], as64["offset"], as64["W"], as64["B"], mask=as64["mask"], **kwargs)


def _max_rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.cpu().double() - ref).abs().max() / ref.abs().max())


def _rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.cpu().double() - ref).norm() / ref.norm())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fp32_matches_reference(case: Case, device: str):
    t = _tensors(case, torch.float32, torch.float32, device)
    out = _run(t, device, **_kwargs(case))
    assert out.dtype == torch.float32 and tuple(out.shape) == (case.n, case.m, *case.out_hw)
    assert _max_rel(out, _reference(t, **_kwargs(case))) <= FP32_MAX_REL


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset_dtype", [torch.float16, torch.float32], ids=["fp16_offsets", "fp32_offsets"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fp16_matches_reference(case: Case, offset_dtype: torch.dtype, device: str, algorithm: str):
    t = _tensors(case, torch.float16, offset_dtype, device)
    out = _run(t, device, algorithm=algorithm, **_kwargs(case))
    assert out.dtype == torch.float16
    assert _rel_l2(out, _reference(t, **_kwargs(case))) <= FP16_REL_L2


def _large_coordinate_case(offset_dtype: torch.dtype, device: str):
    """200x272 input, offsets up to +-8 px: coordinates up to ~280, where float16 spacing is 0.25."""
    generator = torch.Generator().manual_seed(5)
    place = "cpu" if device == "emulated" else device
    n, c, h, w, m, k = 1, 8, 200, 272, 16, 3
    x = torch.randn(n, c, h, w, generator=generator)
    weight = torch.randn(m, c, k, k, generator=generator)
    offset = (torch.rand(n, 2 * k * k, h, w, generator=generator) * 16 - 8)
    mask = torch.rand(n, k * k, h, w, generator=generator)
    bias = torch.randn(m, generator=generator)
    data = {"X": x, "W": weight, "B": bias}
    offsets = {"offset": offset, "mask": mask}
    t = {name: v.to(torch.float16).to(place) for name, v in data.items()}
    t.update({name: v.to(offset_dtype).to(place) for name, v in offsets.items()})
    return t, dict(padding=1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset_dtype", [torch.float16, torch.float32], ids=["fp16_offsets", "fp32_offsets"])
def test_fp16_large_coordinates(offset_dtype: torch.dtype, device: str, algorithm: str):
    t, kwargs = _large_coordinate_case(offset_dtype, device)
    ref = _reference(t, **kwargs)
    assert _rel_l2(_run(t, device, algorithm=algorithm, **kwargs), ref) <= FP16_REL_L2


def test_half_precision_coordinates_would_fail_the_large_coordinate_bound():
    """Sensitivity of the test above: rounding each sampling coordinate to float16 (as a
    half-coordinate kernel does) moves samples by up to 1/8 px and breaks the 1e-3 bound."""
    t, kwargs = _large_coordinate_case(torch.float32, "emulated")
    ref = _reference(t, **kwargs)
    h, w = t["X"].shape[2:]
    ys = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1) - 1 + torch.arange(3).repeat_interleave(3).view(1, 9, 1, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w) - 1 + torch.arange(3).repeat(3).view(1, 9, 1, 1)
    offset = t["offset"].double()
    dy, dx = offset[:, 0::2], offset[:, 1::2]
    rounded = torch.empty_like(offset)
    rounded[:, 0::2] = (ys + dy).half().double() - ys
    rounded[:, 1::2] = (xs + dx).half().double() - xs
    t_half_coordinates = dict(t, offset=rounded)
    assert _rel_l2(_reference(t_half_coordinates, **kwargs), ref) > 5 * FP16_REL_L2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", CASES[:6], ids=lambda c: c.name)
def test_device_matches_emulation(case: Case):
    """The GPU and the CPU emulation run the same phases; they agree to float32 rounding."""
    t_gpu = _tensors(case, torch.float32, torch.float32, "cuda")
    t_cpu = {k: (v.cpu() if v is not None else None) for k, v in t_gpu.items()}
    gpu = _run(t_gpu, "cuda", **_kwargs(case)).cpu()
    emulated = _run(t_cpu, "emulated", **_kwargs(case))
    assert torch.allclose(gpu, emulated, rtol=1e-6, atol=1e-6 * float(emulated.abs().max()))


# ---- the tensor-core kernel: split-K, planning, device vs emulation -------------------------

def _deep_case() -> Case:
    """K = 48 * 9 = 432, 14 K slices of 32: enough for 2..8 splits, with a ragged last slice."""
    return Case("deep", n=1, c=48, h=9, w=11, m=20, offset_scale=2.0, seed=41)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split_k", [1, 2, 3, 8])
def test_tensor_core_split_k_matches_reference(split_k: int, device: str):
    case = _deep_case()
    t = _tensors(case, torch.float16, torch.float32, device)
    out = _run(t, device, algorithm="tensor_core", split_k=split_k, **_kwargs(case))
    assert _rel_l2(out, _reference(t, **_kwargs(case))) <= FP16_REL_L2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("out_channels, tile", [(200, 256), (300, 512), (700, 512)])
def test_tensor_core_wide_tiles_match_reference(out_channels: int, tile: int, device: str):
    """Output channels beyond 128 take the 256 x 64 and 512 x 32 tiles (700: two channel tiles)."""
    case = Case("wide", n=1, c=8, h=6, w=13, m=out_channels, offset_scale=2.0, seed=43)
    t = _tensors(case, torch.float16, torch.float32, device)
    out = _run(t, device, algorithm="tensor_core", **_kwargs(case))
    assert _rel_l2(out, _reference(t, **_kwargs(case))) <= FP16_REL_L2
    info = cuda_kernels.launch_plan(
        _fp16_problem(in_channels=8, in_height=6, in_width=13, out_channels=out_channels), emulated=True
    )
    pixels_per_tile = 16384 // tile
    assert info.grid[1] == -(-out_channels // tile) and info.grid[0] == -(-78 // pixels_per_tile) * info.splits


def test_split_k_changes_only_the_summation_order():
    """Splits partition K: the emulated outputs of 1 and 3 splits differ by float32 summation
    order, then one float16 rounding, i.e. at most 1 float16 ulp of the output."""
    case = _deep_case()
    t = _tensors(case, torch.float16, torch.float32, "emulated")
    one = _run(t, "emulated", algorithm="tensor_core", split_k=1, **_kwargs(case)).float()
    three = _run(t, "emulated", algorithm="tensor_core", split_k=3, **_kwargs(case)).float()
    ulp = torch.finfo(torch.float16).eps * one.abs().clamp(min=2.0**-14)
    assert bool(((one - three).abs() <= ulp + 1e-6).all())


def _fp16_problem(**overrides):
    return _problem(**{"data_type": 1, "offset_type": 0, "in_channels": 256, "in_height": 50, "in_width": 68,
                       "out_channels": 256, **overrides})


def test_plan_prefers_tensor_cores_for_fp16():
    info = cuda_kernels.launch_plan(_fp16_problem(), emulated=True)
    assert info.algorithm == "tensor_core" and info.threads == 256
    # All 256 channels in one 256 x 64 tile, 50*68 pixels in 54 tiles: 54 blocks give fewer than
    # two per SM of an H100 (132 SMs), so K is split over a cluster.
    assert info.grid[1:] == (1, 1) and info.grid[0] == 54 * info.splits and info.splits == 5
    assert info.shared_bytes > 0


def test_plan_without_split_when_the_grid_fills_the_gpu():
    info = cuda_kernels.launch_plan(_fp16_problem(batch=8), emulated=True)
    assert info.algorithm == "tensor_core" and info.splits == 1 and info.grid == (54, 1, 8)


@pytest.mark.parametrize(
    "overrides, algorithm",
    [(dict(data_type=0), "simt"), (dict(offset_group=64, kernel_h=5, kernel_w=5), "simt"),
     (dict(data_type=1, algorithm=1), "simt")],
    ids=["fp32", "corner_table_too_large", "simt_asked"],
)
def test_plan_falls_back_to_simt(overrides, algorithm):
    assert cuda_kernels.launch_plan(_fp16_problem(**overrides), emulated=True).algorithm == algorithm


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(data_type=0, algorithm=2), "tensor-core kernel cannot run this problem: it needs float16"),
        (dict(offset_group=64, kernel_h=5, kernel_w=5, algorithm=2), "corner table of offset_group*kh*kw = 1600"),
        (dict(algorithm=1, split_k=2), "split_k > 1 needs the tensor-core kernel"),
        (dict(split_k=9), "split_k must be 0 (automatic) or 1..8, got 9"),
        (dict(split_k=-1), "split_k must be 0 (automatic) or 1..8, got -1"),
        (dict(algorithm=5), "algorithm must be DCN_ALGORITHM_AUTO (0), SIMT (1), TENSOR_CORE (2) or TENSOR_CORE_NHWC (3), got 5"),
    ],
)
def test_plan_rejects_impossible_requests(overrides, expected):
    with pytest.raises(cuda_kernels.CudaKernelError, match=None) as error:
        cuda_kernels.launch_plan(_fp16_problem(**overrides), emulated=True)
    assert expected in str(error.value)


def test_python_rejects_unknown_algorithm():
    t = _tensors(CASES[0], torch.float16, torch.float32, "emulated")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        _run(t, "emulated", algorithm="fast", **_kwargs(CASES[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("split_k", [0, 1, 3])
@pytest.mark.parametrize("case", [*CASES[:6], _deep_case()], ids=lambda c: c.name)
def test_tensor_core_device_matches_emulation(case: Case, split_k: int):
    """Same phases on the GPU and in the emulator; the tensor cores sum the same float16
    products in another order, so outputs agree to about one float16 ulp."""
    t_gpu = _tensors(case, torch.float16, torch.float32, "cuda")
    t_cpu = {k: (v.cpu() if v is not None else None) for k, v in t_gpu.items()}
    kwargs = dict(algorithm="tensor_core", split_k=split_k, **_kwargs(case))
    gpu = _run(t_gpu, "cuda", **kwargs).cpu().float()
    emulated = _run(t_cpu, "emulated", **kwargs).float()
    assert torch.allclose(gpu, emulated, rtol=2e-3, atol=2e-3 * float(emulated.abs().max()))


# ---- the channels-last tensor-core variant ---------------------------------------------------

CHANNELS_LAST_CASES = [
    Case("cl_3x3", n=2, c=16, h=7, w=9, m=24, seed=51),
    Case("cl_5x5_stride_2", n=1, c=8, h=11, w=10, m=12, kernel=(5, 5), stride=(2, 2), pads=(2, 2, 2, 2), seed=52),
    Case("cl_dilation_asymmetric", n=1, c=16, h=9, w=8, m=8, dilation=(2, 1), pads=(2, 0, 1, 2), seed=53),
    Case("cl_groups", n=2, c=32, h=6, w=7, m=16, group=2, offset_group=4, seed=54),
    Case("cl_no_mask_no_bias", n=1, c=24, h=5, w=6, m=40, mask=False, bias=False, seed=55),
    Case("cl_samples_leave_image", n=1, c=16, h=6, w=6, m=8, offset_scale=6.0, seed=56),
    Case("cl_h_w_1", n=2, c=8, h=1, w=1, m=8, seed=57),
    Case("cl_deep_wide", n=1, c=64, h=5, w=7, m=300, seed=58),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset_dtype", [torch.float16, torch.float32], ids=["fp16_offsets", "fp32_offsets"])
@pytest.mark.parametrize("case", CHANNELS_LAST_CASES, ids=lambda c: c.name)
def test_channels_last_matches_reference(case: Case, offset_dtype: torch.dtype, device: str):
    t = _tensors(case, torch.float16, offset_dtype, device)
    out = _run(t, device, algorithm="tensor_core_nhwc", **_kwargs(case))
    assert out.dtype == torch.float16 and tuple(out.shape) == (case.n, case.m, *case.out_hw)
    assert _rel_l2(out, _reference(t, **_kwargs(case))) <= FP16_REL_L2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split_k", [2, 5])
def test_channels_last_split_k(split_k: int, device: str):
    case = _deep_case()
    t = _tensors(case, torch.float16, torch.float32, device)
    out = _run(t, device, algorithm="tensor_core_nhwc", split_k=split_k, **_kwargs(case))
    assert _rel_l2(out, _reference(t, **_kwargs(case))) <= FP16_REL_L2


def test_channels_last_and_planar_variants_agree():
    """Same samples, same float16 rounding of each sample, K summed in another order: the two
    tensor-core variants agree to about one float16 ulp of the output."""
    case = CHANNELS_LAST_CASES[3]
    t = _tensors(case, torch.float16, torch.float32, "emulated")
    planar = _run(t, "emulated", algorithm="tensor_core", **_kwargs(case)).float()
    channels_last = _run(t, "emulated", algorithm="tensor_core_nhwc", **_kwargs(case)).float()
    assert torch.allclose(planar, channels_last, rtol=2e-3, atol=2e-3 * float(planar.abs().max()))


def test_channels_last_needs_channel_multiples_of_8():
    with pytest.raises(cuda_kernels.CudaKernelError, match="C/group = 12 and C/offset_group = 12") as error:
        cuda_kernels.launch_plan(_fp16_problem(in_channels=12, algorithm=3), emulated=True)
    assert error.value.status == 2
    with pytest.raises(cuda_kernels.CudaKernelError, match="C/group = 16 and C/offset_group = 4"):
        cuda_kernels.launch_plan(_fp16_problem(in_channels=16, offset_group=4, algorithm=3), emulated=True)


def test_channels_last_workspace_size():
    """X in NHWC and W tap-major, each rounded up to 256 bytes; nothing for the other kernels."""
    problem = _fp16_problem(batch=2, in_channels=16, in_height=5, in_width=7, out_channels=24, algorithm=3)

    def aligned(elements):
        return -(-elements * 2 // 256) * 256

    assert cuda_kernels.workspace_size(problem) == aligned(2 * 16 * 5 * 7) + aligned(24 * 16 * 9)
    assert cuda_kernels.launch_plan(problem, emulated=True).algorithm == "tensor_core_nhwc"
    for algorithm in (0, 1, 2):
        assert cuda_kernels.workspace_size(_fp16_problem(in_channels=16, algorithm=algorithm)) == 0
    assert cuda_kernels.workspace_size(_fp16_problem(in_channels=16, algorithm=3, data_type=0)) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_channels_last_launch_without_workspace_is_refused():
    case = CHANNELS_LAST_CASES[0]
    t = _tensors(case, torch.float16, torch.float16, "cuda")
    out = torch.empty(case.n, case.m, *case.out_hw, dtype=torch.float16, device="cuda")
    problem = _fp16_problem(batch=case.n, in_channels=case.c, in_height=case.h, in_width=case.w,
                            out_channels=case.m, offset_type=1, algorithm=3)
    pointers = [t["X"].data_ptr(), t["W"].data_ptr(), t["offset"].data_ptr(), t["mask"].data_ptr(),
                t["B"].data_ptr(), out.data_ptr()]
    status, message = cuda_kernels.call_c_api(problem, pointers, emulate=False, workspace=None)
    assert status == 1 and "needs a workspace of" in message, message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("case", CHANNELS_LAST_CASES, ids=lambda c: c.name)
def test_channels_last_device_matches_emulation(case: Case):
    t_gpu = _tensors(case, torch.float16, torch.float32, "cuda")
    t_cpu = {k: (v.cpu() if v is not None else None) for k, v in t_gpu.items()}
    kwargs = dict(algorithm="tensor_core_nhwc", **_kwargs(case))
    gpu = _run(t_gpu, "cuda", **kwargs).cpu().float()
    emulated = _run(t_cpu, "emulated", **kwargs).float()
    assert torch.allclose(gpu, emulated, rtol=2e-3, atol=2e-3 * float(emulated.abs().max()))


def test_workspace_is_zero():
    problem = cuda_kernels.Problem(batch=1, in_channels=4, in_height=8, in_width=8, out_channels=4, kernel_h=3,
                                   kernel_w=3, stride_h=1, stride_w=1, pad_top=1, pad_left=1, pad_bottom=1,
                                   pad_right=1, dilation_h=1, dilation_w=1, group=1, offset_group=1)
    assert cuda_kernels.workspace_size(problem) == 0


# ---- bad input: clear errors, never a crash ---------------------------------------------------

def _problem(**overrides):
    fields = dict(batch=1, in_channels=4, in_height=6, in_width=5, out_channels=2, kernel_h=3, kernel_w=3,
                  stride_h=1, stride_w=1, pad_top=1, pad_left=1, pad_bottom=1, pad_right=1, dilation_h=1,
                  dilation_w=1, group=1, offset_group=1, has_mask=1, has_bias=1, data_type=0, offset_type=0)
    fields.update(overrides)
    return cuda_kernels.Problem(**fields)


def _host_buffers(problem) -> list[int]:
    """Host buffers big enough for the problem (kept alive on the function object)."""
    sizes = [problem.batch * problem.in_channels * problem.in_height * problem.in_width, 4 * 9 * 4,
             2 * 9 * 30, 9 * 30, 4, 4 * 30]
    _host_buffers.keep = [torch.zeros(max(s, 1)) for s in sizes]
    return [b.data_ptr() for b in _host_buffers.keep]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(group=0), "attribute 'group' must be >= 1"),
        (dict(stride_h=0), "attribute 'strides' values must be >= 1"),
        (dict(pad_left=-1), "attribute 'pads' values must be >= 0"),
        (dict(in_channels=3, group=2), "not divisible by group=2"),
        (dict(in_channels=4, offset_group=3), "not divisible by offset_group=3"),
        (dict(in_height=1, pad_top=0, pad_bottom=0), "output would be empty"),
        (dict(data_type=7), "data_type must be DCN_FLOAT32 (0), DCN_FLOAT16 (1) or DCN_INT8 (2) and offset_type "
                            "DCN_FLOAT32 (0) or DCN_FLOAT16 (1), got 7 and 0"),
        (dict(batch=70000), "N*group = 70000"),
    ],
)
@pytest.mark.parametrize("emulate", [True, False], ids=["emulated", "launch"])
def test_c_api_rejects_bad_problems(overrides, expected, emulate):
    problem = _problem(**overrides)
    status, message = cuda_kernels.call_c_api(problem, [1, 1, 1, 1, 1, 1], emulate=emulate)
    assert status in (1, 2) and expected in message, message
    assert message.startswith("DcnDeformConv node 'dcn_deform_conv_cuda': ")


@pytest.mark.parametrize("missing, name", [(0, "X"), (1, "W"), (2, "offset"), (3, "mask"), (4, "B"), (5, "Y")])
def test_c_api_names_null_buffers(missing, name):
    problem = _problem()
    pointers = _host_buffers(problem)
    pointers[missing] = None
    status, message = cuda_kernels.call_c_api(problem, pointers, emulate=True)
    assert status == 1 and f"NULL buffer for: {name}" in message, message


def test_c_api_truncates_long_messages_safely():
    problem = _problem(group=0)
    buffers = cuda_kernels._Buffers()
    error = cuda_kernels.ctypes.create_string_buffer(8)
    status = cuda_kernels._load().dcn_deform_conv_cuda_emulated(
        cuda_kernels.ctypes.byref(problem), cuda_kernels.ctypes.byref(buffers), error, 8)
    assert status == 1 and error.value == b"DcnDefo"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-device path")
def test_launch_without_a_device_reports_a_cuda_error():
    problem = _problem()
    status, message = cuda_kernels.call_c_api(problem, _host_buffers(problem), emulate=False)
    assert status == 3 and "kernel launch failed: cuda" in message, message


@pytest.mark.parametrize(
    "change, error, expected",
    [
        (dict(W=torch.float16), TypeError, "input, weight and bias must share one dtype"),
        (dict(offset=torch.float16), TypeError, "offset and mask must share one dtype"),
        (dict(X=torch.float64, W=torch.float64, B=torch.float64), TypeError, "must be float32 or float16"),
    ],
)
def test_python_rejects_bad_dtypes(change, error, expected):
    t = _tensors(CASES[0], torch.float32, torch.float32, "emulated")
    for name, dtype in change.items():
        t[name] = t[name].to(dtype)
    with pytest.raises(error, match=expected):
        _run(t, "emulated", **_kwargs(CASES[0]))


def test_python_rejects_cpu_tensors_without_emulate():
    t = _tensors(CASES[0], torch.float32, torch.float32, "emulated")
    with pytest.raises(ValueError, match="pass CUDA tensors, or emulate=True"):
        _run(t, "cpu", **_kwargs(CASES[0]))


def test_python_checks_shapes_with_the_reference_validation():
    t = _tensors(CASES[0], torch.float32, torch.float32, "emulated")
    t["offset"] = t["offset"][:, :-2]
    with pytest.raises(ValueError, match="deform_conv2d_cuda: offset has 16 channels, expected 2"):
        _run(t, "emulated", **_kwargs(CASES[0]))


def test_gpu_parity_script_runs_on_the_emulation(tmp_path):
    """scripts/gpu_parity.py (the table of scripts/gpu_check.sh) works end to end."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(root / "scripts" / "gpu_parity.py"), "--emulate", "--json",
                             str(tmp_path / "rows.json")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gpu_parity: 5 passed, 0 failed" in result.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert all(row["fp32_max_rel"] <= FP32_MAX_REL and row["fp16_rel_l2"] <= FP16_REL_L2 for row in rows)
    assert all(row["int8_differing"] == 0 for row in rows)  # the INT8 kernel, bitwise
