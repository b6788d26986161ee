"""X and Y in channels-last layouts (plugins/core/params.h TensorLayout) through the CUDA kernels: NHWC
with C padded to 8 or 16 (TensorRT kHWC8 / kHWC16), NC/vHWv (kCHW4 / kCHW32) and torch.channels_last,
on the CPU emulator of the kernels (and on a GPU where torch sees one: scripts/gpu_check.sh).

Proven bitwise (torch.equal), on odd shapes (C and M not multiples of 8) with NaN (float16) or random
int8 values in X's padding channels, which must never reach the result (8-channel gathers load them
and zero those lanes):

* float16 ``tensor_core`` (one channel per gather, any layout) == the planar ``tensor_core`` result;
* float16 ``tensor_core_nhwc`` on NHWC (16-byte gathers of X in place, W read planar, no workspace) ==
  the planar problem with C zero-padded to a multiple of 8 through the workspace variant (same K order
  k = tap * Cp + c; the padding adds exact 0 * 0 products), and within the FP16 bound of the reference;
* INT8 in every layout, dp4a and tensor cores == planar INT8 == the reference (exact int32 sums);
* Y's padding channels are written as zeros.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import Case
from test_cuda_int8 import Int8Case, _reference as _int8_reference
from test_cuda_kernels import DEVICES, FP16_REL_L2, _LIBRARY_ERROR

from dcn_deploy.op.functional import deform_conv2d

cuda_kernels = pytest.importorskip("dcn_deploy.backends.cuda_kernels")

pytestmark = pytest.mark.skipif(_LIBRARY_ERROR is not None, reason=_LIBRARY_ERROR or "")

FP16_CASES = [
    Case("odd_channels", n=2, c=13, m=10, h=7, w=9),
    Case("groups_of_8", n=1, c=16, m=12, h=6, w=5, group=2, offset_group=2),
    Case("stride_dilation_no_mask", n=1, c=5, m=3, h=9, w=8, stride=(2, 1), dilation=(1, 2), pads=(0, 1, 2, 1),
         mask=False, bias=False),
]


def _fp16(case: Case, device: str) -> dict:
    place = "cpu" if device == "emulated" else device
    return {k: (torch.from_numpy(v).to(place, torch.float16) if v is not None else None)
            for k, v in case.make(np.float32).items()}


def _kwargs(case: Case) -> dict:
    return dict(stride=case.stride, padding=case.pads, dilation=case.dilation, groups=case.group,
                offset_groups=case.offset_group)


def _run(t: dict, case: Case, device: str, **kwargs) -> torch.Tensor:
    return cuda_kernels.deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], mask=t["mask"],
                                           emulate=device == "emulated", **_kwargs(case), **kwargs)


def _zero_padded_channels(t: dict, case: Case, multiple: int = 8) -> dict:
    """The same problem with C (one group) padded by zero channels of X and W."""
    padded = -(-case.c // multiple) * multiple
    x = torch.zeros((case.n, padded, case.h, case.w), dtype=t["X"].dtype, device=t["X"].device)
    x[:, :case.c] = t["X"]
    w = torch.zeros((case.m, padded, *case.kernel), dtype=t["W"].dtype, device=t["W"].device)
    w[:, :case.c] = t["W"]
    return {**t, "X": x, "W": w}


def _differ(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{int((a != b).sum())} of {a.numel()} elements differ"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["nhwc8", "nhwc16", "nhwc", "nc4hw4", "nc32hw32"])
@pytest.mark.parametrize("case", FP16_CASES, ids=lambda c: c.name)
def test_fp16_single_channel_gathers_are_bitwise_planar(case: Case, layout: str, device: str):
    t = _fp16(case, device)
    planar = _run(t, case, device, algorithm="tensor_core")
    out = _run(t, case, device, algorithm="tensor_core", layout=layout, padding_fill=float("nan"))
    assert out.shape == planar.shape and torch.equal(out, planar), _differ(out, planar)


@pytest.mark.parametrize("split_k", [0, 3])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", FP16_CASES[:2], ids=lambda c: c.name)
def test_fp16_nhwc8_in_place_gathers_are_bitwise_the_zero_padded_planar_problem(case: Case, device: str,
                                                                                 split_k: int):
    t = _fp16(case, device)
    plan = cuda_kernels.launch_plan(_problem(case, "nhwc8", split_k=split_k), emulated=True)
    assert plan.algorithm == "tensor_core_nhwc"  # what "auto" takes for NHWC X
    out = _run(t, case, device, layout="nhwc8", padding_fill=float("nan"), split_k=split_k)
    reference_problem = _zero_padded_channels(t, case) if case.group == 1 else t
    expected = _run(reference_problem, case, device, algorithm="tensor_core_nhwc", split_k=split_k)
    assert torch.equal(out, expected), _differ(out, expected)
    as64 = {k: (v.cpu().double() if v is not None else None) for k, v in t.items()}
    reference = deform_conv2d(as64["X"], as64["offset"], as64["W"], as64["B"], mask=as64["mask"], **_kwargs(case))
    assert float((out.cpu().double() - reference).norm() / reference.norm()) <= FP16_REL_L2


@pytest.mark.parametrize("layout", ["nhwc8", "nc32hw32"])
def test_fp16_output_padding_channels_are_zero(layout: str):
    case = FP16_CASES[0]  # M = 10: 6 (nhwc8) or 22 (nc32hw32) padding channels
    t = _fp16(case, "emulated")
    packed = _run(t, case, "emulated", layout=layout, padding_fill=float("nan"), packed_output=True,
                  output_fill=float("nan"))
    full = cuda_kernels.unpack_layout(packed, layout, packed.shape[1] * packed.shape[-1])
    assert full.shape[1] > case.m and torch.equal(full[:, case.m:], torch.zeros_like(full[:, case.m:]))
    assert torch.equal(full[:, :case.m], _run(t, case, "emulated", layout=layout))


def test_torch_channels_last_tensors_run_in_place_and_come_back_channels_last():
    case = Case("channels_last", n=2, c=16, m=8, h=5, w=6)
    t = _fp16(case, "emulated")
    t_last = {**t, "X": t["X"].to(memory_format=torch.channels_last)}
    out = _run(t_last, case, "emulated")  # layout None: nhwc, read in place
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    expected = _run(t, case, "emulated", algorithm="tensor_core_nhwc")
    assert torch.equal(out.contiguous(), expected), _differ(out.contiguous(), expected)
    # C = 13 unpadded cannot hold 16-byte vectors: auto gathers one channel at a time.
    odd = FP16_CASES[0]
    t = _fp16(odd, "emulated")
    out = _run({**t, "X": t["X"].to(memory_format=torch.channels_last)}, odd, "emulated")
    assert torch.equal(out.contiguous(), _run(t, odd, "emulated", algorithm="tensor_core"))



# layout=None picks nhwc only for float16 (not "simt") and int8, and falls back to a planar copy of X
# when the kernel refuses that automatic choice: float32, "simt" and a corner table larger than the
# tensor-core kernel's shared memory (16 offset groups x 3x3 = 144 taps) still run, with NCHW output.
@pytest.mark.parametrize("dtype, algorithm, offset_group", [
    (torch.float32, "auto", 1), (torch.float16, "simt", 1), (torch.float16, "auto", 16)])
def test_channels_last_inputs_the_nhwc_kernels_cannot_take_run_planar(dtype, algorithm, offset_group):
    case = Case("channels_last_planar", n=1, c=16, m=4, h=5, w=6, offset_group=offset_group)
    t = {k: (v.to(dtype) if v is not None else None) for k, v in _fp16(case, "emulated").items()}
    out = _run({**t, "X": t["X"].to(memory_format=torch.channels_last)}, case, "emulated", algorithm=algorithm)
    assert out.is_contiguous()
    expected = _run(t, case, "emulated", algorithm=algorithm)
    assert torch.equal(out, expected), _differ(out, expected)
    if offset_group > 1:  # the explicit layout is still refused, with the kernel's reason
        with pytest.raises(cuda_kernels.CudaKernelError, match="bytes of shared memory"):
            _run(t, case, "emulated", layout="nhwc")


@pytest.mark.parametrize("device", DEVICES)
def test_nhwc_x_not_16_byte_aligned_is_gathered_one_channel_at_a_time(device: str):
    """A C-API caller may pass a view starting inside a 16-byte vector: "auto" then gathers one channel at a
    time (as the planar "tensor_core" result, bitwise), and "tensor_core_nhwc" is refused. On the emulator
    both gathers give the same bits and host loads do not fault, so there the refusal shows what planning
    saw; on a GPU a 16-byte gather from that address would stop the launch (misaligned address)."""
    case = Case("misaligned", n=1, c=16, m=8, h=5, w=6)
    t = _fp16(case, device)
    nhwc = t["X"].permute(0, 2, 3, 1).contiguous()
    storage = torch.zeros(nhwc.numel() + 8, dtype=torch.float16, device=nhwc.device)
    storage[1:1 + nhwc.numel()] = nhwc.flatten()  # 2 bytes in
    x = storage[1:1 + nhwc.numel()].view(nhwc.shape).permute(0, 3, 1, 2)
    assert x.data_ptr() % 16 == 2 and x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, t["X"])
    out = _run({**t, "X": x}, case, device, layout="nhwc")
    expected = _run(t, case, device, algorithm="tensor_core")
    assert torch.equal(out.contiguous(), expected), _differ(out.contiguous(), expected)
    with pytest.raises(cuda_kernels.CudaKernelError, match="address must be a multiple of 16 bytes"):
        _run({**t, "X": x}, case, device, layout="nhwc", algorithm="tensor_core_nhwc")
    aligned = _run({**t, "X": nhwc.permute(0, 3, 1, 2)}, case, device, layout="nhwc", algorithm="tensor_core_nhwc")
    assert torch.equal(aligned.contiguous(), expected)


INT8_CASES = [
    Int8Case("odd_channels", c=13, m=10, h=6, w=7),
    Int8Case("odd_channels_requantized", c=13, m=10, h=6, w=7, y_scale=0.25, seed=1),
    Int8Case("groups", c=16, m=6, group=2, offset_group=4, h=5, w=5, seed=2),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["tensor_core", "simt"])
@pytest.mark.parametrize("layout", ["nc32hw32", "nc4hw4", "nhwc16", "nhwc"])
@pytest.mark.parametrize("case", INT8_CASES, ids=lambda c: c.name)
def test_int8_layouts_are_bitwise_the_reference(case: Int8Case, layout: str, algorithm: str, device: str):
    t = case.tensors()
    place = "cpu" if device == "emulated" else device
    moved = {k: (v.to(place) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
    out = cuda_kernels.deform_conv2d_cuda(
        moved["input"], moved["offset"], moved["weight"], moved["bias"], mask=moved["mask"], x_scale=t["x_scale"],
        w_scale=t["w_scale"], y_scale=t["y_scale"], emulate=device == "emulated", algorithm=algorithm,
        layout=layout, padding_fill=-77, **case.kwargs(),
    ).cpu()
    expected = _int8_reference(t, case)
    assert torch.equal(out.contiguous(), expected), _differ(out.contiguous(), expected)


def test_int8_output_padding_channels_are_zero():
    case = INT8_CASES[1]
    t = case.tensors()
    packed = cuda_kernels.deform_conv2d_cuda(
        t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], x_scale=t["x_scale"], w_scale=t["w_scale"],
        y_scale=t["y_scale"], emulate=True, layout="nc32hw32", packed_output=True, output_fill=99, **case.kwargs())
    assert packed.dtype == torch.int8 and packed.shape == (case.n, 1, *case.out_hw, 32)
    assert torch.equal(packed[..., case.m:], torch.zeros_like(packed[..., case.m:]))
    assert torch.equal(packed[..., :case.m].permute(0, 1, 4, 2, 3).reshape(case.n, case.m, *case.out_hw),
                       _int8_reference(t, case))


# ---- the problem's layout through the C API: plan, workspace, errors ----------------------------

def _problem(case: Case, layout_name: str = "nchw", **overrides) -> "cuda_kernels.Problem":
    code, vector = cuda_kernels.LAYOUTS[layout_name]
    fields = dict(batch=case.n, in_channels=case.c, in_height=case.h, in_width=case.w, out_channels=case.m,
                  kernel_h=case.kernel[0], kernel_w=case.kernel[1], stride_h=case.stride[0], stride_w=case.stride[1],
                  pad_top=case.pads[0], pad_left=case.pads[1], pad_bottom=case.pads[2], pad_right=case.pads[3],
                  dilation_h=case.dilation[0], dilation_w=case.dilation[1], group=case.group,
                  offset_group=case.offset_group, has_mask=int(case.mask), has_bias=int(case.bias), data_type=1,
                  offset_type=1, layout=code, layout_vector=vector)
    fields.update(overrides)
    return cuda_kernels.Problem(**fields)


def test_nhwc_needs_no_workspace_and_plans_the_in_place_gathers():
    case = FP16_CASES[1]
    assert cuda_kernels.workspace_size(_problem(case, "nhwc8", algorithm=3)) == 0
    assert cuda_kernels.workspace_size(_problem(case, "nchw", algorithm=3)) > 0  # the planar copy variant
    assert cuda_kernels.launch_plan(_problem(case, "nhwc8"), emulated=True).algorithm == "tensor_core_nhwc"
    assert cuda_kernels.launch_plan(_problem(case, "nhwc8", algorithm=2), emulated=True).algorithm == "tensor_core"
    # offset groups of 4 channels cannot hold an 8-channel vector: auto gathers one channel at a time
    small_groups = Case("og4", c=12, m=4, offset_group=3)
    assert cuda_kernels.launch_plan(_problem(small_groups, "nhwc8"), emulated=True).algorithm == "tensor_core"


BAD_LAYOUTS = [
    (dict(layout=5), "layout must be 0 (NCHW), 1 (NHWC) or 2 (NC/vHWv), got 5", 1),
    (dict(layout=1, layout_vector=3), "pads C to a multiple of layout_vector, which must be 1, 2, 4, 8, 16 or 32, "
                                      "got 3", 1),
    (dict(layout=2, layout_vector=1), "the blocked (NC/vHWv) layout takes layout_vector 2, 4, 8, 16 or 32, got 1", 1),
    (dict(layout=0, layout_vector=8), "the planar (NCHW) layout takes layout_vector 0 or 1, got 8", 1),
    (dict(layout=1, layout_vector=8, data_type=0, offset_type=0),
     "the NHWC (C padded to 8) layout needs the tensor-core kernel (float16) or DCN_INT8 data, and the tensor-core "
     "kernel cannot run this problem: it needs float16 X/W/B/Y", 2),
    (dict(layout=1, layout_vector=8, algorithm=1), "DCN_ALGORITHM_SIMT reads planar X only", 2),
    (dict(layout=1, layout_vector=1, algorithm=3),
     "reads X in the NHWC layout in 16-byte vectors: it needs blocks of a multiple of 8 channels (C padded to 8), "
     "and C/group (if group > 1) and C/offset_group (if offset_group > 1) multiples of 8; got C = 13", 2),
]


@pytest.mark.parametrize("overrides, message, status", BAD_LAYOUTS)
def test_c_api_rejects_bad_layouts_with_a_clear_message(overrides, message, status):
    problem = _problem(FP16_CASES[0], **overrides)
    with pytest.raises(cuda_kernels.CudaKernelError, match="status") as raised:
        cuda_kernels.launch_plan(problem, emulated=True)
    assert message in str(raised.value) and raised.value.status == status


def test_python_rejects_an_unknown_layout():
    case = FP16_CASES[0]
    with pytest.raises(ValueError, match="layout must be one of .*'nhwc8'.*got 'nhwc7'"):
        _run(_fp16(case, "emulated"), case, "emulated", layout="nhwc7")
