"""The pure-PyTorch reference against a plain loop and against ONNX Runtime's native DeformConv."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cases import CASES, Case
from graphs import run_model, single_node_model

from dcn_deploy import deform_conv2d


def loop_deform_conv(case: Case, a: dict) -> np.ndarray:
    """The definition written as nested loops in float64: slow, obvious, independent."""
    x, wt, off = (a[k].astype(np.float64) for k in ("X", "W", "offset"))
    n_, c_, h_, w_ = x.shape
    m_, cg, kh, kw = wt.shape
    ho, wo = case.out_hw
    c_per_off = c_ // case.offset_group
    m_per_group = m_ // case.group
    out = np.zeros((n_, m_, ho, wo))

    def pixel(n, c, y, x_):
        if 0 <= y < h_ and 0 <= x_ < w_:
            return x[n, c, y, x_]
        return 0.0

    def sample(n, c, y, xx):
        if not (y > -1 and y < h_ and xx > -1 and xx < w_):
            return 0.0
        y0, x0 = math.floor(y), math.floor(xx)
        ly, lx = y - y0, xx - x0
        return ((1 - ly) * (1 - lx) * pixel(n, c, y0, x0) + (1 - ly) * lx * pixel(n, c, y0, x0 + 1)
                + ly * (1 - lx) * pixel(n, c, y0 + 1, x0) + ly * lx * pixel(n, c, y0 + 1, x0 + 1))

    for n in range(n_):
        for o in range(m_):
            g = o // m_per_group
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if a["B"] is None else float(a["B"][o])
                    for cl in range(cg):
                        c = g * cg + cl
                        og = c // c_per_off
                        for i in range(kh):
                            for j in range(kw):
                                t = i * kw + j
                                dy = off[n, og * 2 * kh * kw + 2 * t, oy, ox]
                                dx = off[n, og * 2 * kh * kw + 2 * t + 1, oy, ox]
                                y = oy * case.stride[0] - case.pads[0] + i * case.dilation[0] + dy
                                xx = ox * case.stride[1] - case.pads[1] + j * case.dilation[1] + dx
                                v = sample(n, c, y, xx)
                                if a["mask"] is not None:
                                    v *= a["mask"][n, og * kh * kw + t, oy, ox]
                                acc += wt[o, cl, i, j] * v
                    out[n, o, oy, ox] = acc
    return out


def reference(case: Case, a: dict, dtype=torch.float64) -> torch.Tensor:
    t = {k: (None if v is None else torch.from_numpy(v).to(dtype)) for k, v in a.items()}
    return deform_conv2d(t["X"], t["offset"], t["W"], t["B"], stride=case.stride, padding=case.pads,
                         dilation=case.dilation, mask=t["mask"], groups=case.group, offset_groups=case.offset_group)


SMALL = [c for c in CASES if c.n * c.m * c.c * c.h * c.w <= 4000]


@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.name)
def test_reference_matches_loop_float64(case):
    arrays = case.make(np.float64)
    got = reference(case, arrays).numpy()
    np.testing.assert_allclose(got, loop_deform_conv(case, arrays), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reference_matches_onnxruntime_native_deformconv(case):
    arrays = case.make(np.float32)
    native = run_model(single_node_model(case, "standard"), arrays, custom_op=False)
    ours = reference(case, arrays).numpy()
    assert native.shape == ours.shape
    scale = max(1.0, float(np.abs(ours).max()))
    assert np.abs(native - ours).max() <= 1e-5 * scale


def test_reference_float32_and_float64_agree():
    case = CASES[-1]
    arrays = case.make(np.float32)
    assert reference(case, arrays, torch.float32).dtype == torch.float32
    np.testing.assert_allclose(reference(case, arrays, torch.float32).numpy(), reference(case, arrays).numpy(),
                               rtol=0, atol=1e-5)


def test_gradients_match_finite_differences():
    case = Case("grad", n=1, c=2, h=4, w=5, m=2, offset_group=2, offset_scale=0.7, seed=3)
    a = case.make(np.float64)
    args = [torch.from_numpy(a[k]).requires_grad_() for k in ("X", "offset", "W", "B", "mask")]

    def f(x, offset, w, b, mask):
        return deform_conv2d(x, offset, w, b, padding=case.pads, mask=mask, offset_groups=2)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_non_finite_offsets_give_zero_samples():
    case = Case("nan", offset_scale=2.0, seed=21)
    a = case.make(np.float64)
    poisoned = dict(a, offset=a["offset"].copy())
    cleaned = dict(a, offset=a["offset"].copy(), mask=a["mask"].copy())
    for (tap, oy, ox), bad in zip([(0, 0, 0), (4, 2, 3), (8, 6, 8)], [np.nan, np.inf, -np.inf]):
        poisoned["offset"][0, 2 * tap, oy, ox] = bad
        cleaned["offset"][0, 2 * tap, oy, ox] = 0.0
        cleaned["mask"][0, tap, oy, ox] = 0.0  # the sample is 0: the same as masking it out
    got = reference(case, poisoned)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.numpy(), reference(case, cleaned).numpy(), rtol=0, atol=1e-12)


EMPTY_BATCH = [Case("empty batch", n=0, seed=21),
               Case("empty batch, groups", n=0, c=4, m=6, group=2, offset_group=2, stride=(2, 1), seed=22)]


@pytest.mark.custom_op
@pytest.mark.parametrize("case", EMPTY_BATCH, ids=lambda c: c.name)
def test_a_batch_of_zero_gives_an_empty_output(case):
    """N=0: once a RuntimeError (a reshape with -1 over 0 elements); ONNX Runtime's native op, our
    custom op and torchvision all answer an empty (0, M, Ho, Wo)."""
    arrays = case.make()
    want = (0, case.m, *case.out_hw)
    out = reference(case, arrays, dtype=torch.float32)
    assert tuple(out.shape) == want and out.dtype == torch.float32
    for custom_op in (True, False):
        got = run_model(single_node_model(case, "custom" if custom_op else "standard", arrays=arrays), arrays,
                        custom_op=custom_op)
        assert got.shape == want
