"""The INT8 CUDA kernel (plugins/cuda/kernels/int8.cuh) against the exact reference.

The definition (dcn_deploy/op/int8.py) fixes every float operation and the integer sums are exact,
so the kernel must give the reference's bits: ``torch.equal``, not a tolerance. Both algorithms
(integer tensor cores and dp4a) run in the CPU emulation here (the kernel's own block phases,
thread by thread); the "cuda" rows run only where torch sees a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from cases import Case
from test_cuda_kernels import DEVICES, cuda_kernels, pytestmark  # noqa: F401  (the library's skip marker)

from dcn_deploy.op.geometry import DeformConvGeometry
from dcn_deploy.op.int8 import MAX_PRODUCTS_PER_OUTPUT, deform_conv2d_int8
from dcn_deploy.op.reference import sample_columns

ALGORITHMS = ["tensor_core", "simt"]


@dataclass
class Int8Case(Case):
    """A case of tests/cases.py (its geometry) with the INT8 inputs and scales."""

    half_offsets: bool = False  # offsets of exactly +-0.5: samples halfway between two pixels
    y_scale: float | None = None
    single_w_scale: bool = False

    def tensors(self) -> dict:
        g = torch.Generator().manual_seed(self.seed)
        kh, kw = self.kernel
        ho, wo = self.out_hw
        taps = self.offset_group * kh * kw
        x = torch.randint(-128, 128, (self.n, self.c, self.h, self.w), generator=g, dtype=torch.int8)
        weight = torch.randint(-127, 128, (self.m, self.c // self.group, kh, kw), generator=g, dtype=torch.int8)
        if self.half_offsets:
            offset = (torch.randint(0, 2, (self.n, 2 * taps, ho, wo), generator=g) - 0.5).to(torch.float32)
        else:
            offset = torch.randn(self.n, 2 * taps, ho, wo, generator=g) * self.offset_scale
        mask = torch.rand(self.n, taps, ho, wo, generator=g) if self.mask else None
        bias = torch.randn(self.m, generator=g) * 3 if self.bias else None
        w_scale = [0.004] if self.single_w_scale else (torch.rand(self.m, generator=g) * 0.01 + 0.001).tolist()
        return dict(input=x, offset=offset, weight=weight, bias=bias, mask=mask, x_scale=0.05, w_scale=w_scale,
                    y_scale=self.y_scale)

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.pads, dilation=self.dilation, groups=self.group,
                    offset_groups=self.offset_group)


CASES = [
    Int8Case("basic"),
    Int8Case("requantized", y_scale=0.25),
    Int8Case("groups", c=8, m=6, group=2, offset_group=2),
    Int8Case("offset_groups", c=8, m=4, offset_group=4, y_scale=0.5),
    Int8Case("stride_dilation_asymmetric_pads", h=9, w=8, stride=(2, 1), dilation=(1, 2), pads=(0, 1, 2, 1)),
    Int8Case("no_mask_no_bias", mask=False, bias=False, y_scale=0.1),
    Int8Case("large_offsets_outside", offset_scale=6.0, kernel=(3, 2), pads=(2, 0, 1, 3)),
    Int8Case("half_offsets_ties", mask=False, half_offsets=True, y_scale=0.2),
    Int8Case("saturated_output", y_scale=0.01, seed=3),
    Int8Case("single_w_scale", single_w_scale=True, n=2, kernel=(1, 1), pads=(0, 0, 0, 0)),
    Int8Case("k_multiple_of_16", c=16, kernel=(1, 1), pads=(0, 0, 0, 0), m=5),  # 16-byte W chunk loads
    Int8Case("tile_256", c=2, m=160, kernel=(1, 3), pads=(0, 1, 0, 1), h=3, w=5),
    Int8Case("tile_512", c=2, m=300, kernel=(1, 1), pads=(0, 0, 0, 0), h=3, w=4, y_scale=1.0),
]


def _run(t: dict, device: str, case: Int8Case, **kwargs) -> torch.Tensor:
    place = "cpu" if device == "emulated" else device
    moved = {k: (v.to(place) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
    return cuda_kernels.deform_conv2d_cuda(
        moved["input"], moved["offset"], moved["weight"], moved["bias"], mask=moved["mask"],
        x_scale=t["x_scale"], w_scale=t["w_scale"], y_scale=t["y_scale"], emulate=device == "emulated",
        **case.kwargs(), **kwargs,
    ).cpu()


def _reference(t: dict, case: Int8Case) -> torch.Tensor:
    return deform_conv2d_int8(t["input"], t["offset"], t["weight"], t["x_scale"], t["w_scale"], t["bias"],
                              mask=t["mask"], y_scale=t["y_scale"], **case.kwargs())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_int8_is_bitwise_the_reference(case: Int8Case, device: str, algorithm: str):
    t = case.tensors()
    out = _run(t, device, case, algorithm=algorithm)
    expected = _reference(t, case)
    assert out.dtype == (torch.float32 if case.y_scale is None else torch.int8)
    assert out.shape == expected.shape == (case.n, case.m, *case.out_hw)
    assert torch.equal(out, expected), f"{int((out != expected).sum())} of {out.numel()} elements differ"


@pytest.mark.parametrize("split_k", [2, 3, 8])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_int8_split_k_is_bitwise_the_reference(split_k: int, algorithm: str):
    """Split-K sums exact int32 partial tiles: any split gives the same bits (the emulator plans for sm_90)."""
    case = Int8Case("split", c=16, m=8, h=5, w=6, y_scale=0.3)  # K = 144: 5 slices of 32
    t = case.tensors()
    plan = cuda_kernels.launch_plan(_problem(case, split_k=split_k, algorithm=cuda_kernels.ALGORITHMS[algorithm]),
                                    emulated=True)
    assert plan.splits == split_k
    assert torch.equal(_run(t, "emulated", case, algorithm=algorithm, split_k=split_k), _reference(t, case))


def test_int8_cases_cover_ties_and_saturation():
    """The ties case holds samples exactly halfway between integers (round half to even decides
    them), and the saturated case clips Yq at both ends: the bitwise tests see both."""
    case = next(c for c in CASES if c.name == "half_offsets_ties")
    t = case.tensors()
    geo = DeformConvGeometry.check(t["input"].float(), t["offset"], t["weight"].float(), None, None,
                                   case.stride, case.pads, case.dilation, case.group, case.offset_group)
    samples = sample_columns(t["input"].float(), t["offset"], None, geo)
    halves = (samples - samples.floor()) == 0.5
    assert int(halves.sum()) > 50
    # Half to even differs from half away from zero on these samples.
    assert not torch.equal(torch.round(samples[halves]), torch.trunc(samples[halves] + samples[halves].sign() * 0.5))
    saturated = next(c for c in CASES if c.name == "saturated_output")
    out = _reference(saturated.tensors(), saturated)
    assert int((out == 127).sum()) > 10 and int((out == -128).sum()) > 10


def _problem(case: Int8Case, **overrides) -> "cuda_kernels.Problem":
    kh, kw = case.kernel
    fields = dict(batch=case.n, in_channels=case.c, in_height=case.h, in_width=case.w, out_channels=case.m,
                  kernel_h=kh, kernel_w=kw, stride_h=case.stride[0], stride_w=case.stride[1],
                  pad_top=case.pads[0], pad_left=case.pads[1], pad_bottom=case.pads[2], pad_right=case.pads[3],
                  dilation_h=case.dilation[0], dilation_w=case.dilation[1], group=case.group,
                  offset_group=case.offset_group, has_mask=int(case.mask), has_bias=int(case.bias),
                  data_type=cuda_kernels.INT8_ELEMENT_TYPE, offset_type=0)
    fields.update(overrides)
    return cuda_kernels.Problem(**fields)


def test_int8_launch_plan_reports_the_int8_kernel():
    case = CASES[0]
    auto = cuda_kernels.launch_plan(_problem(case), emulated=True)
    assert auto.algorithm == "tensor_core" and auto.threads == 256 and auto.shared_bytes > 0
    simt = cuda_kernels.launch_plan(_problem(case, algorithm=cuda_kernels.ALGORITHMS["simt"]), emulated=True)
    assert simt.algorithm == "simt" and simt.threads == 256  # dp4a on the same block kernel
    assert cuda_kernels.workspace_size(_problem(case)) == 0
    # Float16 would take 128x128 tiles for this problem; INT8 halves the slice bytes.
    fp16 = cuda_kernels.launch_plan(_problem(case, data_type=1), emulated=True)
    assert auto.grid == fp16.grid and auto.shared_bytes < fp16.shared_bytes


def test_int8_takes_a_taller_tile_when_the_corner_table_is_large():
    """offset_group*kh*kw = 64 taps: 128x128 tiles need 270 KiB of corner table; 256x64 fit."""
    case = Int8Case("many_taps", c=8, kernel=(4, 4), offset_group=4, pads=(2, 2, 1, 1))
    plan = cuda_kernels.launch_plan(_problem(case), emulated=True)
    assert plan.grid[1] == 1 and plan.shared_bytes <= 227 * 1024
    t = case.tensors()
    assert torch.equal(_run(t, "emulated", case), _reference(t, case))


# ---- bad input: clear errors, never a crash ---------------------------------------------------

def _base() -> tuple[dict, Int8Case]:
    case = CASES[0]
    return case.tensors(), case


@pytest.mark.parametrize(
    "change, error, expected",
    [
        (dict(weight=lambda t: t.float()), TypeError, "weight must be int8"),
        (dict(input=lambda t: t.float()), TypeError, "input must be int8"),
        (dict(offset=lambda t: t.half()), TypeError, "with int8 input, offset must be float32"),
        (dict(mask=lambda t: t.half()), TypeError, "with int8 input, mask must be float32"),
        (dict(bias=lambda t: t.double()), TypeError, "with int8 input, bias must be float32"),
        (dict(x_scale=lambda v: None), ValueError, "int8 input and weight need x_scale and w_scale"),
        (dict(w_scale=lambda v: None), ValueError, "int8 input and weight need x_scale and w_scale"),
        (dict(x_scale=lambda v: 0.0), ValueError, "x_scale must be finite and positive, got 0.0"),
        (dict(x_scale=lambda v: float("nan")), ValueError, "x_scale must be finite and positive"),
        (dict(y_scale=lambda v: -1.0), ValueError, "y_scale must be finite and positive, got -1.0"),
        (dict(w_scale=lambda v: v[:2]), ValueError, "w_scale has 2 values, expected one per output channel"),
        (dict(w_scale=lambda v: [*v[:-1], float("inf")]), ValueError, r"w_scale\[5\] must be finite and positive"),
        (dict(x_scale=lambda v: 1e-50), ValueError, "x_scale = 1e-50 is not a positive normal float32"),
    ],
)
def test_python_rejects_bad_int8_inputs(change, error, expected):
    t, case = _base()
    for name, make in change.items():
        t[name] = make(t[name])
    with pytest.raises(error, match=expected):
        _run(t, "emulated", case)


def test_python_rejects_scales_with_float_data():
    t, case = _base()
    with pytest.raises(TypeError, match="x_scale, w_scale and y_scale are for int8 input and weight"):
        cuda_kernels.deform_conv2d_cuda(t["input"].float(), t["offset"], t["weight"].float(), x_scale=0.1,
                                        w_scale=[0.1], emulate=True, **case.kwargs())


def test_python_rejects_too_many_products_for_int32():
    case = Int8Case("overflow", c=MAX_PRODUCTS_PER_OUTPUT // 9 + 1, m=1, h=1, w=1, pads=(1, 1, 1, 1), mask=False,
                    bias=False)
    t = case.tensors()
    with pytest.raises(ValueError, match="could overflow the int32 accumulator"):
        _run(t, "emulated", case)


def test_int8_refuses_the_channels_last_kernel():
    t, case = _base()
    with pytest.raises(cuda_kernels.CudaKernelError, match="TENSOR_CORE_NHWC is a float16 kernel"):
        _run(t, "emulated", case, algorithm="tensor_core_nhwc")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(offset_type=1), "DCN_INT8 data needs offset_type DCN_FLOAT32 (0)"),
        (dict(y_scale=-0.5), "y_scale must be 0 (float32 Y) or finite and positive (int8 Yq), got -0.5"),
        (dict(y_scale=float("inf")), "y_scale must be 0 (float32 Y) or finite and positive"),
        (dict(data_type=0, y_scale=0.5), "y_scale is for DCN_INT8 data only"),
        (dict(in_channels=MAX_PRODUCTS_PER_OUTPUT // 9 + 1, out_channels=1), "could overflow the int32 accumulator"),
    ],
)
@pytest.mark.parametrize("emulate", [True, False], ids=["emulated", "launch"])
def test_c_api_rejects_bad_int8_problems(overrides, expected, emulate):
    problem = _problem(CASES[0], **overrides)
    status, message = cuda_kernels.call_c_api(problem, [1] * 7, emulate=emulate)
    assert status == 1 and expected in message, message
    assert message.startswith("DcnDeformConv node 'dcn_deform_conv_cuda': ")


def test_c_api_names_a_missing_output_scale():
    t, case = _base()
    out = torch.empty(case.n, case.m, *case.out_hw)
    pointers = [t[name].data_ptr() for name in ("input", "weight", "offset", "mask", "bias")] + [out.data_ptr(), None]
    status, message = cuda_kernels.call_c_api(_problem(case), pointers, emulate=True)
    assert status == 1 and "NULL buffer for: output_scale (DCN_INT8 data)" in message, message
