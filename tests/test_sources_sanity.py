"""Sanity tests of the third-party-layer oracles in ``tests/sources`` (not converter tests).

* With zero offsets (offset-predicting convs zeroed) every source reduces to a plain
  convolution times its mask at zero logits: 0.5 (sigmoid), 1 (no mask) or 1 (MXNet's
  ``2*sigmoid``).
* The oracles' "canonical" sampler agrees with the project's reference
  ``dcn_deploy.deform_conv2d`` (the only use of ``dcn_deploy`` under tests/sources' tests).
* The "mxnet_v1" border differs from the canonical one exactly where it should.
* The pure-PyTorch ports agree with the kernel rules in their documented geometry.
* ``save_mxnet_params`` round-trips through an independent reader.
"""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sources import (
    _sampling,
    charlesshang,
    chengdazhi,
    chunhuanlin,
    dcnv3,
    detectron2,
    keras_deform,
    mmcv,
    mmdet_v1,
    mxnet,
    paddle,
    uiiurz1,
)
from torch import nn

DT = torch.float64
TOL = 1e-10


def _rand(*shape, scale=1.0, seed=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(*shape, dtype=DT, generator=g) * scale


def _zero_(*modules):
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.zero_()


def _randomise_(module: nn.Module, seed: int, skip=()):
    """Random parameters (and BN statistics) so nothing is trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    skip_ids = {id(p) for m in skip for p in m.parameters()}
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in skip_ids:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, detectron2.FrozenBatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5)
                if isinstance(m, detectron2.FrozenBatchNorm2d):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
    return module


def _bn(bn, x):
    if isinstance(bn, nn.BatchNorm2d):
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return bn(x)


X = _rand(2, 8, 12, 10, seed=0)  # batch 2, non-square


# ---------------------------------------------------------------------------------------------
# 1. zero offsets -> plain convolution
# ---------------------------------------------------------------------------------------------


def _case_mmcv_mdcn_pack():
    m = mmcv.ModulatedDeformConv2dPack(8, 6, 3, stride=2, padding=2, dilation=2, groups=2, deform_groups=2)
    m = _randomise_(m.double(), 1, skip=[m.conv_offset])
    _zero_(m.conv_offset)
    return m(X), 0.5 * F.conv2d(X, m.weight, None, 2, 2, 2, 2) + m.bias.view(1, -1, 1, 1)


def _case_mmcv_dcn_pack():
    m = mmcv.DeformConv2dPack(8, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2, deformable_groups=2)
    m = _randomise_(m.double(), 2, skip=[m.conv_offset])
    _zero_(m.conv_offset)
    return m(X), F.conv2d(X, m.weight, None, (1, 2), (1, 0), 1, 2)


def _case_mmcv_mdcn_external():
    m = _randomise_(mmcv.ModulatedDeformConv2d(8, 6, 3, padding=1, bias=True).double(), 3)
    offset = torch.zeros(2, 18, 12, 10, dtype=DT)
    mask = torch.full((2, 9, 12, 10), 0.5, dtype=DT)
    return m(X, offset, mask), 0.5 * F.conv2d(X, m.weight, None, 1, 1) + m.bias.view(1, -1, 1, 1)


def _case_mmcv_dcn_small_input():
    # input smaller than the kernel: mmcv pads bottom/right, then crops the output back
    m = _randomise_(mmcv.DeformConv2d(8, 6, 3, padding=1).double(), 4)
    x = X[:, :, :2, :]
    offset = torch.zeros(2, 18, 2, 10, dtype=DT)
    return m(x, offset), F.conv2d(x, m.weight, None, 1, 1)


def _case_mmdet_mdcn_pack():
    m = mmdet_v1.ModulatedDeformConvPack(8, 6, 3, stride=2, padding=1, deformable_groups=2)
    m = _randomise_(m.double(), 5, skip=[m.conv_offset])
    _zero_(m.conv_offset)
    return m(X), 0.5 * F.conv2d(X, m.weight, None, 2, 1) + m.bias.view(1, -1, 1, 1)


def _case_mmdet_dcn_pack():
    m = mmdet_v1.DeformConvPack(8, 6, 3, padding=2, dilation=2)
    m = _randomise_(m.double(), 6, skip=[m.conv_offset])
    _zero_(m.conv_offset)
    return m(X), F.conv2d(X, m.weight, None, 1, 2, 2)


def _case_charlesshang_dcn():
    m = charlesshang.DCN(8, 6, 3, stride=2, padding=1, dilation=1)
    m = _randomise_(m.double(), 7, skip=[m.conv_offset_mask])
    _zero_(m.conv_offset_mask)
    return m(X), 0.5 * F.conv2d(X, m.weight, None, 2, 1) + m.bias.view(1, -1, 1, 1)


def _case_charlesshang_dcn_dilated_consistent():
    # stride 3 / dilation 2 on 8x11: the undilated offset conv happens to give the same 2x3 map
    m = charlesshang.DCN(8, 6, 3, stride=3, padding=0, dilation=2)
    m = _randomise_(m.double(), 8, skip=[m.conv_offset_mask])
    _zero_(m.conv_offset_mask)
    m.offset_size_mismatch = "raise"
    x = X[:, :, :8, :]
    x = torch.cat([x, x[:, :, :, :1]], dim=3)  # 8x11
    return m(x), 0.5 * F.conv2d(x, m.weight, None, 3, 0, 2) + m.bias.view(1, -1, 1, 1)


def _case_centernet():
    m = _randomise_(charlesshang.DeformConv(8, 6).double(), 9).eval()
    _zero_(m.conv.conv_offset_mask)
    expected = 0.5 * F.conv2d(X, m.conv.weight, None, 1, 1) + m.conv.bias.view(1, -1, 1, 1)
    return m(X), F.relu(_bn(m.actf[0], expected))


def _case_chengdazhi_frozen_bias():
    m = chengdazhi.ModulatedDeformConvPack(8, 6, 3, 1, 1, bias=False)
    assert not m.bias.requires_grad and bool((m.bias != 0).any())  # frozen, random, still added
    m = m.double()
    _zero_(m.conv_offset_mask)
    return m(X), 0.5 * F.conv2d(X, m.weight, None, 1, 1) + m.bias.view(1, -1, 1, 1)


def _d2_bottleneck_expected(m, x, factor):
    out = F.relu(_bn(m.conv1.norm, F.conv2d(x, m.conv1.weight, None, m.conv1.stride)))
    c2 = m.conv2
    out = factor * F.conv2d(out, c2.weight, None, c2.stride, c2.padding, c2.dilation, c2.groups)
    out = F.relu(_bn(c2.norm, out))
    out = _bn(m.conv3.norm, F.conv2d(out, m.conv3.weight))
    shortcut = x if m.shortcut is None else _bn(m.shortcut.norm, F.conv2d(x, m.shortcut.weight, None, m.shortcut.stride))
    return F.relu(out + shortcut)


def _case_d2_block_modulated():
    m = detectron2.DeformBottleneckBlock(
        8, 16, bottleneck_channels=4, stride=2, num_groups=2, deform_modulated=True, deform_num_groups=2
    )
    m = _randomise_(m.double(), 10, skip=[m.conv2_offset]).eval()
    _zero_(m.conv2_offset)
    return m(X), _d2_bottleneck_expected(m, X, 0.5)


def _case_d2_block_v1_frozen_bn():
    m = detectron2.DeformBottleneckBlock(8, 8, bottleneck_channels=4, dilation=2, norm="FrozenBN")
    m = _randomise_(m.double(), 11, skip=[m.conv2_offset]).eval()
    _zero_(m.conv2_offset)
    return m(X), _d2_bottleneck_expected(m, X, 1.0)


def _case_d2_modulated_norm_act():
    m = detectron2.ModulatedDeformConv(8, 6, 3, padding=1, norm=nn.BatchNorm2d(6), activation=F.relu)
    m = _randomise_(m.double(), 12).eval()
    offset = torch.zeros(2, 18, 12, 10, dtype=DT)
    mask = torch.full((2, 9, 12, 10), 0.5, dtype=DT)
    expected = F.relu(_bn(m.norm, 0.5 * F.conv2d(X, m.weight, None, 1, 1) + m.bias.view(1, -1, 1, 1)))
    return m(X, offset, mask), expected


def _case_paddle_dcnv2():
    m = paddle.DeformableConvV2(8, 6, 3, stride=2, padding=99, dilation=2, groups=2, bias_attr=True)
    m = _randomise_(m.double(), 13, skip=[m.conv_offset])
    _zero_(m.conv_offset)
    assert m.conv_dcn._padding == [2, 2]  # (k-1)//2*dilation; `padding` ignored
    return m(X), 0.5 * F.conv2d(X, m.conv_dcn.weight, None, 2, 2, 2, 2) + m.conv_dcn.bias.view(1, -1, 1, 1)


def _case_paddle_deformconv2d_v1():
    m = _randomise_(paddle.DeformConv2D(8, 6, 3, padding=1, deformable_groups=2, groups=2).double(), 14)
    offset = torch.zeros(2, 36, 12, 10, dtype=DT)
    return m(X, offset), F.conv2d(X, m.weight, m.bias, 1, 1, 1, 2)


def _uiiurz1_case(cls, stride, modulation):
    def case():
        m = cls(8, 6, 3, 1, stride, bias=True, modulation=modulation)
        skip = [m.p_conv] + ([m.m_conv] if modulation else [])
        m = _randomise_(m.double(), 15, skip=skip)
        _zero_(*skip)
        factor = 0.5 if modulation else 1.0
        return m(X), factor * F.conv2d(X, m.conv.weight, None, stride, 1) + m.conv.bias.view(1, -1, 1, 1)

    return case


def _case_chunhuanlin():
    m = _randomise_(chunhuanlin.DeformConv2D(8, 6, bias=True).double(), 16)
    offset = torch.zeros(2, 18, 12, 10, dtype=DT)
    return m(X, offset), F.conv2d(X, m.conv_kernel.weight, m.conv_kernel.bias, 1, 1)


def _case_mxnet_v1():
    m = mxnet.MXNetDeformableConvolution(8, 6, 3, 2, 2, 2, 2, no_bias=False, num_group=2)
    m = _randomise_(m.double(), 17, skip=[m.offset])
    _zero_(m.offset)
    return m(X), F.conv2d(X, m.weight, m.bias, 2, 2, 2, 2)


def _case_mxnet_example():
    m = mxnet.MXNetModulatedDCNExample(8, 6, 2)
    m = _randomise_(m.double(), 18, skip=[m.offset])
    _zero_(m.offset)
    return m(X), F.conv2d(X, m.weight, None, 2, 1)  # 2 * sigmoid(0) = 1


def _case_gluon():
    m = mxnet.ModulatedDeformableConvolution(
        6, kernel_size=3, strides=(1, 2), padding=1, groups=2, num_deformable_group=2, in_channels=8
    ).double()
    _randomise_(m, 19)
    with torch.no_grad():
        m.offset_weight.zero_()
        m.offset_bias.zero_()
    return m(X), F.conv2d(X, m.deformable_conv_weight, m.deformable_conv_bias, (1, 2), 1, 1, 2)


def _case_keras():
    m = keras_deform.ConvOffset2D(8).double()
    _zero_(m)
    return m(X), X


ZERO_OFFSET_CASES = {
    "mmcv.ModulatedDeformConv2dPack": _case_mmcv_mdcn_pack,
    "mmcv.DeformConv2dPack": _case_mmcv_dcn_pack,
    "mmcv.ModulatedDeformConv2d": _case_mmcv_mdcn_external,
    "mmcv.DeformConv2d-small-input": _case_mmcv_dcn_small_input,
    "mmdet_v1.ModulatedDeformConvPack": _case_mmdet_mdcn_pack,
    "mmdet_v1.DeformConvPack": _case_mmdet_dcn_pack,
    "charlesshang.DCN": _case_charlesshang_dcn,
    "charlesshang.DCN-dilated-consistent": _case_charlesshang_dcn_dilated_consistent,
    "centernet.DeformConv": _case_centernet,
    "chengdazhi.ModulatedDeformConvPack-frozen-bias": _case_chengdazhi_frozen_bias,
    "detectron2.DeformBottleneckBlock-modulated": _case_d2_block_modulated,
    "detectron2.DeformBottleneckBlock-v1-FrozenBN": _case_d2_block_v1_frozen_bn,
    "detectron2.ModulatedDeformConv-norm-act": _case_d2_modulated_norm_act,
    "paddle.DeformableConvV2": _case_paddle_dcnv2,
    "paddle.DeformConv2D-v1": _case_paddle_deformconv2d_v1,
    "uiiurz1.DeformConv2d-s1": _uiiurz1_case(uiiurz1.DeformConv2d, 1, False),
    "uiiurz1.DeformConv2d-s2-modulated": _uiiurz1_case(uiiurz1.DeformConv2d, 2, True),
    "uiiurz1.DeformConv2dOld-modulated": _uiiurz1_case(uiiurz1.DeformConv2dOld, 1, True),
    "chunhuanlin.DeformConv2D": _case_chunhuanlin,
    "mxnet.MXNetDeformableConvolution": _case_mxnet_v1,
    "mxnet.MXNetModulatedDCNExample": _case_mxnet_example,
    "mxnet.gluon.ModulatedDeformableConvolution": _case_gluon,
    "keras_deform.ConvOffset2D": _case_keras,
}


@pytest.mark.parametrize("name", list(ZERO_OFFSET_CASES))
def test_zero_offsets_reduce_to_plain_conv(name):
    torch.manual_seed(0)
    with torch.no_grad():
        got, expected = ZERO_OFFSET_CASES[name]()
    assert got.dtype == DT and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------------
# 2. the canonical sampler agrees with the project's reference
# ---------------------------------------------------------------------------------------------

CANONICAL_CONFIGS = [
    # n, c, h, w, m, kernel, stride, pad, dil, groups, deform_groups, mask, bias, scale, integer
    (2, 8, 12, 10, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, True, True, 3.0, False),
    (3, 8, 9, 13, 4, (3, 2), (2, 1), (2, 0), (1, 2), 2, 4, True, False, 4.0, False),
    (2, 6, 7, 5, 6, (1, 3), (1, 2), (0, 3), (1, 1), 3, 2, False, True, 2.5, False),
    (2, 4, 6, 8, 4, (3, 3), (1, 1), (1, 1), (2, 1), 1, 2, True, True, 3.0, True),  # exact borders
]


@pytest.mark.parametrize("config", CANONICAL_CONFIGS, ids=lambda c: f"k{c[5]}s{c[6]}p{c[7]}d{c[8]}g{c[9]}dg{c[10]}")
def test_canonical_sampler_matches_dcn_deploy(config):
    from dcn_deploy import deform_conv2d

    n, c, h, w, m, k, s, p, d, g, dg, with_mask, with_bias, scale, integer = config
    ho = _sampling.conv_out_size(h, k[0], s[0], p[0], d[0])
    wo = _sampling.conv_out_size(w, k[1], s[1], p[1], d[1])
    gen = torch.Generator().manual_seed(hash(config) % 2**31)
    x = torch.randn(n, c, h, w, generator=gen, dtype=DT)
    weight = torch.randn(m, c // g, *k, generator=gen, dtype=DT)
    bias = torch.randn(m, generator=gen, dtype=DT) if with_bias else None
    offset = torch.randn(n, 2 * dg * k[0] * k[1], ho, wo, generator=gen, dtype=DT) * scale
    if integer:
        offset = offset.round()
    mask = torch.rand(n, dg * k[0] * k[1], ho, wo, generator=gen, dtype=DT) if with_mask else None
    ours = _sampling.deform_conv(x, offset, weight, bias, s, p, d, g, dg, mask=mask)
    ref = deform_conv2d(x, offset, weight, bias, s, p, d, mask, g, dg)
    torch.testing.assert_close(ours, ref, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------------
# 3. the MXNet DCNv1 border
# ---------------------------------------------------------------------------------------------


def _offsets_for_positions(target_h, target_w, n, kernel, ho, wo, stride=1, pad=0, dil=1):
    """Offsets (one deformable group) that put every tap of every output at the given positions."""
    kh, kw = kernel
    taps = kh * kw
    tap_r = torch.arange(kh).repeat_interleave(kw) * dil
    tap_c = torch.arange(kw).repeat(kh) * dil
    grid_h = (tap_r.view(taps, 1, 1) + (torch.arange(ho) * stride - pad).view(1, ho, 1)).to(DT)
    grid_w = (tap_c.view(taps, 1, 1) + (torch.arange(wo) * stride - pad).view(1, 1, wo)).to(DT)
    dy = target_h - grid_h
    dx = target_w - grid_w
    return torch.stack([dy, dx], dim=2).reshape(n, 2 * taps, ho, wo)


@pytest.mark.parametrize("where", ["inside", "row(-1,0)", "row(H-1,H)", "col(-1,0)", "col(W-1,W)"])
def test_mxnet_v1_border_differs_only_at_the_edges(where):
    n, c, h, w = 2, 3, 6, 7
    x = _rand(n, c, h, w, seed=3) + 2.0  # keep values away from 0 so differences show
    ho, wo = 4, 5
    g = torch.Generator().manual_seed(4)
    th = torch.rand(n, 9, ho, wo, generator=g, dtype=DT) * (h - 1.2) + 0.1  # strictly inside [0, H-1)
    tw = torch.rand(n, 9, ho, wo, generator=g, dtype=DT) * (w - 1.2) + 0.1
    if where == "row(-1,0)":
        th = -torch.rand(n, 9, ho, wo, generator=g, dtype=DT) * 0.8 - 0.1
    elif where == "row(H-1,H)":
        th = h - 1 + torch.rand(n, 9, ho, wo, generator=g, dtype=DT) * 0.8 + 0.1
    elif where == "col(-1,0)":
        tw = -torch.rand(n, 9, ho, wo, generator=g, dtype=DT) * 0.8 - 0.1
    elif where == "col(W-1,W)":
        tw = w - 1 + torch.rand(n, 9, ho, wo, generator=g, dtype=DT) * 0.8 + 0.1
    offset = _offsets_for_positions(th.reshape(n, 9, ho, wo), tw.reshape(n, 9, ho, wo), n, (3, 3), ho, wo)
    kwargs = dict(mask=None, kernel_size=3, stride=1, padding=0, dilation=1, deform_groups=1)
    canon = _sampling.sample_columns(x, offset, rule="canonical", **kwargs)
    mx = _sampling.sample_columns(x, offset, rule="mxnet_v1", **kwargs)
    if where == "inside":
        torch.testing.assert_close(mx, canon, rtol=0, atol=1e-12)
    else:
        assert (mx - canon).abs().min() > 1e-3  # every sample differs
        if "(-1,0)" in where:
            assert bool((mx == 0).all())  # MXNet v1 reads nothing below 0
        else:
            assert bool((mx != 0).all())  # ... but snaps onto the last row/column


def test_mxnet_v1_integer_positions_equal_canonical():
    n, c, h, w = 2, 3, 6, 7
    x = _rand(n, c, h, w, seed=5)
    offset = (_rand(n, 18, 6, 7, seed=6) * 3).round()
    a = _sampling.deform_conv(x, offset, _rand(4, 3, 3, 3, seed=7), None, 1, 1, 1, rule="mxnet_v1")
    b = _sampling.deform_conv(x, offset, _rand(4, 3, 3, 3, seed=7), None, 1, 1, 1, rule="canonical")
    torch.testing.assert_close(a, b, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------------
# 4. the pure-PyTorch ports against the kernel rules
# ---------------------------------------------------------------------------------------------


def _planar_to_interleaved(offset):
    n, two_n, h, w = offset.shape
    taps = two_n // 2
    return torch.stack([offset[:, :taps], offset[:, taps:]], dim=2).reshape(n, two_n, h, w)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("modulation", [False, True])
def test_uiiurz1_k3_p1_equals_canonical_pads_1(stride, modulation):
    m = uiiurz1.DeformConv2d(8, 6, 3, 1, stride, bias=True, modulation=modulation).double()
    _randomise_(m, 20)
    with torch.no_grad():  # large offsets so samples leave the image on every side
        m.p_conv.weight.mul_(2.0)
        m.p_conv.bias.mul_(6.0)
        got = m(X)
        offset = m.p_conv(X)
        mask = torch.sigmoid(m.m_conv(X)) if modulation else None
        right = _sampling.deform_conv(
            X, _planar_to_interleaved(offset), m.conv.weight, m.conv.bias, stride, 1, 1, mask=mask
        )
        wrong = _sampling.deform_conv(X, offset, m.conv.weight, m.conv.bias, stride, 1, 1, mask=mask)
    torch.testing.assert_close(got, right, rtol=0, atol=TOL)
    assert (got - wrong).abs().max() > 1e-2


def test_uiiurz1_p_conv_geometry_is_fixed():
    m = uiiurz1.DeformConv2d(8, 6, kernel_size=5, padding=2, stride=2, modulation=True)
    assert m.p_conv.kernel_size == (3, 3) and m.p_conv.padding == (1, 1) and m.p_conv.stride == (2, 2)
    assert m.p_conv.out_channels == 50 and m.m_conv.out_channels == 25
    assert m.conv.kernel_size == (5, 5) and m.conv.stride == (5, 5) and m.conv.bias is None
    assert bool((m.p_conv.weight == 0).all()) and bool((m.m_conv.weight == 0).all())
    assert bool((uiiurz1.DeformConv2dOld(8, 6, modulation=True).m_conv.weight == 0.5).all())
    with torch.no_grad():
        assert m.double()(X).shape == (2, 6, 6, 5)


def test_chunhuanlin_k3_p1_equals_mxnet_v1_pads_1():
    m = _randomise_(chunhuanlin.DeformConv2D(8, 6, bias=True).double(), 21)
    for scale, integer in ((3.0, False), (0.7, False), (2.0, True)):
        offset = _rand(2, 18, 12, 10, scale=scale, seed=22)
        if integer:
            offset = offset.round()
        with torch.no_grad():
            got = m(X, offset)
            ref = _sampling.deform_conv(
                X, offset, m.conv_kernel.weight, m.conv_kernel.bias, 1, 1, 1, rule="mxnet_v1"
            )
            canon = _sampling.deform_conv(
                X, offset, m.conv_kernel.weight, m.conv_kernel.bias, 1, 1, 1, rule="canonical"
            )
        torch.testing.assert_close(got, ref, rtol=0, atol=TOL)
        if not integer:
            assert (got - canon).abs().max() > 1e-3


def test_uiiurz1_old_k3_p1_equals_mxnet_v1_pads_1():
    m = uiiurz1.DeformConv2dOld(8, 6, 3, 1, 1, bias=True, modulation=True).double()
    _randomise_(m, 23)
    with torch.no_grad():
        m.p_conv.bias.mul_(6.0)
        got = m(X)
        offset = _planar_to_interleaved(m.p_conv(X))
        mask = torch.sigmoid(m.m_conv(X))
        ref = _sampling.deform_conv(X, offset, m.conv.weight, m.conv.bias, 1, 1, 1, mask=mask, rule="mxnet_v1")
    torch.testing.assert_close(got, ref, rtol=0, atol=TOL)


# ---------------------------------------------------------------------------------------------
# 5. other behaviours the converters rely on
# ---------------------------------------------------------------------------------------------


def test_charlesshang_dilated_offset_conv_is_undilated():
    m = charlesshang.DCN(8, 6, 3, 1, 2, dilation=2).double()
    assert m.conv_offset_mask.dilation == (1, 1) and m.conv_offset_mask.padding == (2, 2)
    _randomise_(m, 24)
    with torch.no_grad():
        raw = m.conv_offset_mask(X)
        assert raw.shape[2:] == (14, 12)  # the DCN's output is 12x10
        m.offset_size_mismatch = "raise"
        with pytest.raises(ValueError, match="spatial size"):
            m(X)
        m.offset_size_mismatch = "cuda"
        cuda = m(X)
        m.offset_size_mismatch = "cpu"
        cpu = m(X)
    assert cuda.shape == cpu.shape == (2, 6, 12, 10)
    torch.testing.assert_close(cuda[0], cpu[0], rtol=0, atol=TOL)  # same start for sample 0
    assert (cuda[1] - cpu[1]).abs().max() > 1e-3  # batched vs per-sample addressing


def test_paddle_state_dict_and_split_layout():
    m = paddle.DeformableConvV2(8, 6, 3, stride=1, dilation=1).double()
    sd = paddle.paddle_state_dict(m)
    assert set(sd) == {"conv_offset.weight", "conv_offset.bias", "conv_dcn.weight"}
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["conv_offset.weight"].shape == (27, 8, 3, 3)
    bn = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    assert set(paddle.paddle_state_dict(bn)) == {"0.weight", "0.bias", "1.weight", "1.bias", "1._mean", "1._variance"}
    # offsets are the first 2*k*k channels as they are (no chunk/cat): check against the sampler
    _randomise_(m, 25)
    with torch.no_grad():
        raw = m.conv_offset(X)
        ref = _sampling.deform_conv(X, raw[:, :18], m.conv_dcn.weight, None, 1, 1, 1, mask=torch.sigmoid(raw[:, 18:]))
        torch.testing.assert_close(m(X), ref, rtol=0, atol=TOL)


def test_mmcv_pack_chunk_cat_layout():
    m = mmcv.ModulatedDeformConv2dPack(8, 6, 3, padding=1, deform_groups=2).double()
    _randomise_(m, 26)
    with torch.no_grad():
        raw = m.conv_offset(X)  # 54 channels: [o1 | o2 | mask logits], 18 each
        offset = raw[:, :36]
        mask = torch.sigmoid(raw[:, 36:])
        ref = _sampling.deform_conv(X, offset, m.weight, m.bias, 1, 1, 1, 1, 2, mask=mask)
        torch.testing.assert_close(m(X), ref, rtol=0, atol=TOL)


def test_gluon_mask_is_twice_sigmoid():
    m = mxnet.ModulatedDeformableConvolution(6, 3, padding=1, in_channels=8, activation="relu").double()
    _randomise_(m, 27)
    with torch.no_grad():
        raw = F.conv2d(X, m.offset_weight, m.offset_bias, 1, 1)
        ref = _sampling.deform_conv(
            X, raw[:, :18], m.deformable_conv_weight, m.deformable_conv_bias, 1, 1, 1,
            mask=2 * torch.sigmoid(raw[:, 18:]),
        )
        torch.testing.assert_close(m(X), F.relu(ref), rtol=0, atol=TOL)


def test_keras_conv_offset_pairs_come_from_a_raw_reshape():
    m = keras_deform.ConvOffset2D(2).double()
    h, w = 3, 4
    g = torch.Generator().manual_seed(28)
    x = torch.randint(0, 2, (1, 2, h, w), generator=g).to(DT)  # integer displacements: exact picks
    with torch.no_grad():
        m.conv.weight.zero_()
        m.conv.weight[0, 0, 1, 1] = 1.0  # conv output channel 0 = input channel 0, the rest 0
        got = m(x)
    # channels-first output (1, 4, h, w) read as (2, h, w, 2): the pairs of input channel 0 are
    # consecutive values of the flat buffer, i.e. of conv channel 0 then channel 1 (zeros)
    flat = torch.cat([x[0, 0].flatten(), torch.zeros(h * w, dtype=DT)])
    expected = x.clone()
    for p in range(h * w):
        i, j = divmod(p, w)
        dr, dc = int(flat[2 * p]), int(flat[2 * p + 1])
        expected[0, 0, i, j] = x[0, 0, min(max(i + dr, 0), h - 1), min(max(j + dc, 0), w - 1)]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with torch.no_grad():
        m.conv.weight.normal_(0, 1.0, generator=g)
        assert torch.isfinite(m(_rand(2, 2, 5, 7, seed=29))).all()


def test_dcnv3_dcnv4_are_structural_only():
    v3 = dcnv3.DCNv3_pytorch(16, group=4)
    assert set(v3.state_dict()) == {
        "dw_conv.0.weight", "dw_conv.0.bias", "dw_conv.1.1.weight", "dw_conv.1.1.bias",
        "offset.weight", "offset.bias", "mask.weight", "mask.bias",
        "input_proj.weight", "input_proj.bias", "output_proj.weight", "output_proj.bias",
    }
    assert v3.offset.out_features == 72 and v3.mask.out_features == 36
    v4 = dcnv3.DCNv4(16, group=4)
    assert set(v4.state_dict()) == {
        "offset_mask.weight", "offset_mask.bias", "value_proj.weight", "value_proj.bias",
        "output_proj.weight", "output_proj.bias",
    }
    assert v4.offset_mask.out_features == 112  # ceil(36*3/8)*8
    with pytest.raises(NotImplementedError):
        v3(torch.zeros(1, 4, 4, 16))
    with pytest.raises(NotImplementedError):
        v4(torch.zeros(1, 16, 16))


# ---------------------------------------------------------------------------------------------
# 6. state_dict keys, dtypes, speed
# ---------------------------------------------------------------------------------------------

STATE_DICT_KEYS = {
    "mmcv.ModulatedDeformConv2dPack": (
        lambda: mmcv.ModulatedDeformConv2dPack(8, 6, 3, padding=1),
        {"weight", "bias", "conv_offset.weight", "conv_offset.bias"},
    ),
    "mmcv.DeformConv2dPack": (
        lambda: mmcv.DeformConv2dPack(8, 6, 3, padding=1),
        {"weight", "conv_offset.weight", "conv_offset.bias"},
    ),
    "mmcv.ModulatedDeformConv2d": (lambda: mmcv.ModulatedDeformConv2d(8, 6, 3, padding=1, bias=False), {"weight"}),
    "mmcv.DeformConv2d": (lambda: mmcv.DeformConv2d(8, 6, 3, padding=1), {"weight"}),
    "mmdet_v1.ModulatedDeformConvPack": (
        lambda: mmdet_v1.ModulatedDeformConvPack(8, 6, 3, padding=1),
        {"weight", "bias", "conv_offset.weight", "conv_offset.bias"},
    ),
    "mmdet_v1.DeformConvPack": (
        lambda: mmdet_v1.DeformConvPack(8, 6, 3, padding=1),
        {"weight", "conv_offset.weight", "conv_offset.bias"},
    ),
    "charlesshang.DCN": (
        lambda: charlesshang.DCN(8, 6, 3, 1, 1),
        {"weight", "bias", "conv_offset_mask.weight", "conv_offset_mask.bias"},
    ),
    "centernet.DeformConv": (
        lambda: charlesshang.DeformConv(8, 6),
        {
            "actf.0.weight", "actf.0.bias", "actf.0.running_mean", "actf.0.running_var",
            "actf.0.num_batches_tracked", "conv.weight", "conv.bias",
            "conv.conv_offset_mask.weight", "conv.conv_offset_mask.bias",
        },
    ),
    "chengdazhi.ModulatedDeformConvPack": (
        lambda: chengdazhi.ModulatedDeformConvPack(8, 6, 3, 1, 1, bias=False),
        {"weight", "bias", "conv_offset_mask.weight", "conv_offset_mask.bias"},
    ),
    "detectron2.DeformConv": (lambda: detectron2.DeformConv(8, 6, 3, padding=1), {"weight"}),
    "detectron2.ModulatedDeformConv": (lambda: detectron2.ModulatedDeformConv(8, 6, 3, padding=1), {"weight", "bias"}),
    "paddle.DeformConv2D": (lambda: paddle.DeformConv2D(8, 6, 3, bias_attr=False), {"weight"}),
    "paddle.DeformableConvV2-bias": (
        lambda: paddle.DeformableConvV2(8, 6, 3, bias_attr=True),
        {"conv_offset.weight", "conv_offset.bias", "conv_dcn.weight", "conv_dcn.bias"},
    ),
    "uiiurz1.DeformConv2d": (
        lambda: uiiurz1.DeformConv2d(8, 6, modulation=True),
        {"conv.weight", "p_conv.weight", "p_conv.bias", "m_conv.weight", "m_conv.bias"},
    ),
    "chunhuanlin.DeformConv2D": (lambda: chunhuanlin.DeformConv2D(8, 6), {"conv_kernel.weight"}),
    "mxnet.MXNetDeformableConvolution": (
        lambda: mxnet.MXNetDeformableConvolution(8, 6, 3, 1, 1, 1, 1),
        {"weight", "offset.weight", "offset.bias"},
    ),
    "mxnet.MXNetModulatedDCNExample": (
        lambda: mxnet.MXNetModulatedDCNExample(8, 6, 1),
        {"weight", "offset.weight", "offset.bias"},
    ),
    "mxnet.gluon.ModulatedDeformableConvolution": (
        lambda: mxnet.ModulatedDeformableConvolution(6, 3, padding=1, in_channels=8),
        {"deformable_conv_weight", "deformable_conv_bias", "offset_weight", "offset_bias"},
    ),
    "keras_deform.ConvOffset2D": (lambda: keras_deform.ConvOffset2D(8), {"conv.weight"}),
}


@pytest.mark.parametrize("name", list(STATE_DICT_KEYS))
def test_state_dict_keys(name):
    build, keys = STATE_DICT_KEYS[name]
    assert set(build().state_dict()) == keys


def test_detectron2_block_keys():
    m = detectron2.DeformBottleneckBlock(8, 16, bottleneck_channels=4, deform_modulated=True)
    keys = set(m.state_dict())
    for name in ("conv1", "conv3", "shortcut", "conv2"):
        assert f"{name}.weight" in keys and f"{name}.norm.running_var" in keys
    assert {"conv2_offset.weight", "conv2_offset.bias"} <= keys and "conv2.bias" not in keys
    assert m.conv2_offset.out_channels == 27 and m.conv2.bias is None


def test_refusals():
    with pytest.raises(AssertionError):
        mmcv.DeformConv2d(8, 6, 3, bias=True)
    with pytest.raises(AssertionError):
        detectron2.DeformConv(8, 6, 3, bias=True)
    with pytest.raises(AssertionError):
        chengdazhi.ModulatedDeformConvPack(8, 6, 3, 1, 1, im2col_step=2).double()(_rand(3, 8, 5, 5))


FLOAT32_BUILDERS = {
    "mmcv": lambda: mmcv.ModulatedDeformConv2dPack(8, 6, 3, padding=1),
    "charlesshang": lambda: charlesshang.DCN(8, 6, 3, 1, 1),
    "detectron2": lambda: detectron2.DeformBottleneckBlock(8, 16, bottleneck_channels=4, deform_modulated=True).eval(),
    "paddle": lambda: paddle.DeformableConvV2(8, 6, 3),
    "uiiurz1": lambda: uiiurz1.DeformConv2d(8, 6, modulation=True),
    "mxnet_v1": lambda: mxnet.MXNetDeformableConvolution(8, 6, 3, 1, 1, 1, 2),
    "gluon": lambda: mxnet.ModulatedDeformableConvolution(6, 3, padding=1, in_channels=8),
}


@pytest.mark.parametrize("name", list(FLOAT32_BUILDERS))
def test_float32_matches_float64_and_is_fast(name):
    m = FLOAT32_BUILDERS[name]()
    _randomise_(m, 29)
    with torch.no_grad():
        start = time.perf_counter()
        y32 = m(X.float())
        elapsed = time.perf_counter() - start
        y64 = m.double()(X)
    assert y32.dtype == torch.float32 and y64.dtype == DT
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    assert elapsed < 1.0


# ---------------------------------------------------------------------------------------------
# 7. save_mxnet_params round trip through an independent reader
# ---------------------------------------------------------------------------------------------

_DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}


def _read_mxnet_params(data: bytes) -> dict[str, np.ndarray]:
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    magic, reserved = take("<QQ")
    assert (magic, reserved) == (0x112, 0)
    (count,) = take("<Q")
    arrays = []
    for _ in range(count):
        record_magic, stype = take("<Ii")
        assert record_magic == 0xF993FAC9 and stype == 0
        (ndim,) = take("<i")
        shape = take(f"<{ndim}q")
        dev_type, dev_id, type_flag = take("<iii")
        assert (dev_type, dev_id) == (1, 0)
        dtype = np.dtype(_DTYPES[type_flag]).newbyteorder("<")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        arrays.append(np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=pos).reshape(shape))
        pos += nbytes
    (name_count,) = take("<Q")
    assert name_count == count
    names = []
    for _ in range(name_count):
        (length,) = take("<Q")
        names.append(data[pos : pos + length].decode("utf-8"))
        pos += length
    assert pos == len(data)
    return dict(zip(names, arrays))


def test_save_mxnet_params_round_trip(tmp_path):
    m = mxnet.MXNetDeformableConvolution(8, 6, 3, 1, 2, 2, 4, no_bias=False)
    _randomise_(m, 30)
    arrays = m.mxnet_params("res5a_branch2b")
    assert set(arrays) == {
        "arg:res5a_branch2b_offset_weight", "arg:res5a_branch2b_offset_bias",
        "arg:res5a_branch2b_weight", "arg:res5a_branch2b_bias",
    }
    assert arrays["arg:res5a_branch2b_offset_weight"].shape == (72, 8, 3, 3)
    arrays["aux:bn_moving_var"] = np.arange(5, dtype=np.float64) + 0.5
    arrays["arg:some_index"] = np.arange(6, dtype=np.int64).reshape(2, 3)
    arrays["arg:big_endian"] = np.arange(4, dtype=">f4")
    path = tmp_path / "model-0000.params"
    mxnet.save_mxnet_params(path, arrays)
    back = _read_mxnet_params(path.read_bytes())
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].shape == value.shape
        assert back[name].dtype.newbyteorder("=") == value.dtype.newbyteorder("=")
        np.testing.assert_array_equal(back[name], value)
    with pytest.raises(ValueError):
        mxnet.save_mxnet_params(tmp_path / "bad.params", {"x": np.zeros((), np.float32)})
