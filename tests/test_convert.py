"""Every source layer (an independent re-implementation in tests/sources) against its converted
canonical layer: float64 to 1e-9, then exported and run in ONNX Runtime with the custom op."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sources import (
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

from dcn_deploy import DeformConv2d, UnsupportedLayerError, convert_model, export_onnx
from dcn_deploy.backends.onnxruntime import ort_session


class ExternalOffsets(nn.Module):
    """A sibling conv predicting offsets (and a sigmoid mask) for a layer that takes them as inputs."""

    def __init__(self, dcn: nn.Module, in_channels: int, offset_channels: int, mask_channels: int, stride=1,
                 kernel=3, padding=1, dilation=1) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(in_channels, offset_channels + mask_channels, kernel, stride, padding, dilation)
        self.dcn = dcn
        self.split = offset_channels
        self.modulated = mask_channels > 0

    def forward(self, x):
        out = self.offset_conv(x)
        if self.modulated:
            return self.dcn(x, out[:, : self.split], torch.sigmoid(out[:, self.split:]))
        return self.dcn(x, out)


def external(dcn, c, taps, groups=1, modulated=True, **conv):
    return ExternalOffsets(dcn, c, 2 * groups * taps, groups * taps if modulated else 0, **conv)


C, M = 4, 6
# (id, factory) — each factory returns the source model (module whose DCN layers get converted).
SOURCES = [
    ("mmcv_modulated_pack", lambda: mmcv.ModulatedDeformConv2dPack(C, M, 3, stride=2, padding=1, groups=2, deform_groups=2)),
    ("mmcv_pack_v1_dilated", lambda: mmcv.DeformConv2dPack(C, M, 3, padding=2, dilation=2, deform_groups=2)),
    ("mmcv_modulated_external", lambda: external(mmcv.ModulatedDeformConv2d(C, M, 3, padding=1), C, 9)),
    ("mmdet_v1_modulated_pack", lambda: mmdet_v1.ModulatedDeformConvPack(C, M, (3, 2), padding=(1, 0), deformable_groups=1)),
    ("mmdet_v1_pack_v1", lambda: mmdet_v1.DeformConvPack(C, M, 3, stride=1, padding=1, bias=False)),
    ("charlesshang_dcn", lambda: charlesshang.DCN(C, M, 3, stride=1, padding=1, deformable_groups=2)),
    ("charlesshang_dcnv2_external", lambda: external(charlesshang.DCNv2(C, M, 3, 1, 1), C, 9)),
    ("centernet_deformconv", lambda: charlesshang.DeformConv(C, M)),
    ("chengdazhi_pack_bias_false", lambda: chengdazhi.ModulatedDeformConvPack(C, M, 3, 2, 1, bias=False, groups=2)),
    ("detectron2_modulated", lambda: external(
        detectron2.ModulatedDeformConv(C, M, 3, padding=1, bias=True, norm=nn.BatchNorm2d(M), activation=torch.relu),
        C, 9)),
    ("detectron2_v1", lambda: external(detectron2.DeformConv(C, M, 3, stride=2, padding=1, deformable_groups=2), C, 9,
                                       groups=2, modulated=False, stride=2)),
    ("detectron2_bottleneck", lambda: detectron2.DeformBottleneckBlock(
        C, 8, bottleneck_channels=4, stride=2, deform_modulated=True, deform_num_groups=2)),
    ("paddle_deformable_conv_v2_dilated", lambda: paddle.DeformableConvV2(C, M, 3, stride=1, dilation=2)),
    ("paddle_deformconv2d_external", lambda: external(paddle.DeformConv2D(C, M, 3, padding=1, deformable_groups=2), C, 9,
                                                      groups=2)),
    ("4uiiurz1_modulated_k3_p1", lambda: uiiurz1.DeformConv2d(C, M, 3, padding=1, stride=1, modulation=True)),
    ("4uiiurz1_k3_p2_stride2", lambda: uiiurz1.DeformConv2d(C, M, 3, padding=2, stride=2, modulation=True)),
    ("4uiiurz1_k2_p1", lambda: uiiurz1.DeformConv2d(C, M, 2, padding=1, modulation=True, bias=True)),
    ("4uiiurz1_k3_p0", lambda: uiiurz1.DeformConv2d(C, M, 3, padding=0, modulation=True)),
    # The pre-2019 class was also called DeformConv2d; the oracle keeps it apart as DeformConv2dOld.
    ("4uiiurz1_old", lambda: type("DeformConv2d", (uiiurz1.DeformConv2dOld,), {})(C, M, 3, padding=1, modulation=True)),
    ("chunhuanlin_p1", lambda: external(chunhuanlin.DeformConv2D(C, M, 3, padding=1), C, 9, modulated=False)),
    ("chunhuanlin_p0", lambda: external(chunhuanlin.DeformConv2D(C, M, 3, padding=0), C, 9, modulated=False)),
    ("mxnet_dcnv1", lambda: mxnet.MXNetDeformableConvolution(C, M, 3, 1, 2, 2, 2, no_bias=False)),
    ("mxnet_dcnv2_example", lambda: mxnet.MXNetModulatedDCNExample(C, M, 2)),
    ("gluon_modulated", lambda: mxnet.ModulatedDeformableConvolution(M, (3, 3), padding=(1, 1), groups=2,
                                                                      num_deformable_group=2, in_channels=C)),
]
OPTIONS = {"4uiiurz1_old": {"4uiiurz1": {"floor_band": True}}}


def randomize(model: nn.Module, seed: int, offset_px: float, integer: bool = False) -> None:
    """Random weights everywhere; offset convs scaled to give offsets of about ``offset_px``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if any(tag in name for tag in ("offset", "p_conv", "m_conv")):
                fan_in = p[0].numel() if p.dim() > 1 else 1
                if integer:
                    p.copy_(torch.zeros_like(p) if p.dim() > 1 else torch.randint(-3, 4, p.shape, generator=g).to(p))
                else:
                    p.mul_(offset_px * 2 / (fan_in ** 0.5) if p.dim() > 1 else offset_px)


def converted_pair(factory, seed=0, offset_px=1.0, integer=False, options=None):
    torch.manual_seed(seed)
    source = nn.Sequential(factory()).double().eval()  # a model around the layer, as in real use
    randomize(source, seed, offset_px, integer)
    canonical = copy.deepcopy(source)
    report = convert_model(canonical, source_options=options)
    return source, canonical, report


@pytest.mark.parametrize("name, factory", SOURCES, ids=[s[0] for s in SOURCES])
@pytest.mark.parametrize("offset_px", [0.5, 4.0])
def test_converted_layer_equals_source_float64(name, factory, offset_px):
    source, canonical, report = converted_pair(factory, seed=len(name), offset_px=offset_px, options=OPTIONS.get(name))
    assert len(report) >= 1 and report.exact
    assert not any(type(m).__name__ in ("DCN", "DCNv2", "DeformableConvV2", "DeformConv2D", "ModulatedDeformConv",
                                        "MXNetDeformableConvolution") for m in canonical.modules())
    x = torch.randn(2, C, 11, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        expected, got = source(x), canonical(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-9, report.summary()


@pytest.mark.parametrize("name, factory", SOURCES, ids=[s[0] for s in SOURCES])
def test_integer_offsets_on_borders(name, factory):
    source, canonical, _ = converted_pair(factory, seed=3, integer=True, options=OPTIONS.get(name))
    x = torch.randn(2, C, 7, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        assert (canonical(x) - source(x)).abs().max().item() < 1e-9


@pytest.mark.custom_op
@pytest.mark.parametrize("name, factory", SOURCES, ids=[s[0] for s in SOURCES])
def test_converted_layer_exports_and_runs_in_onnxruntime(tmp_path, name, factory):
    source, canonical, _ = converted_pair(factory, seed=5, offset_px=2.0, options=OPTIONS.get(name))
    source, canonical = source.float(), canonical.float()
    x = torch.randn(2, C, 11, 9, generator=torch.Generator().manual_seed(3))
    export_onnx(canonical, (x,), tmp_path / f"{name}.onnx")
    session = ort_session(tmp_path / f"{name}.onnx")
    with torch.no_grad():
        expected = source.double()(x.double()).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize(
    "factory, scale",
    [
        (lambda: mmcv.ModulatedDeformConv2dPack(C, M, 3, padding=1), 0.5),
        (lambda: charlesshang.DCN(C, M, 3, 1, 1), 0.5),
        (lambda: paddle.DeformableConvV2(C, M, 3), 0.5),
        (lambda: uiiurz1.DeformConv2d(C, M, 3, padding=1, modulation=True), 0.5),
        (lambda: mxnet.MXNetModulatedDCNExample(C, M, 1), 1.0),
        (lambda: mxnet.MXNetDeformableConvolution(C, M, 3, 1, 1, 1, 1), 1.0),
    ],
)
def test_zero_initialised_offset_conv_is_plain_conv_times_mask(factory, scale):
    torch.manual_seed(0)
    model = nn.Sequential(factory()).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(tag in name for tag in ("offset", "p_conv", "m_conv")):
                p.zero_()
    convert_model(model)
    layer = next(m for m in model.modules() if isinstance(m, DeformConv2d))
    x = torch.randn(2, C, 8, 9, dtype=torch.float64)
    pads = layer.padding
    padded = nn.functional.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    expected = nn.functional.conv2d(padded, layer.weight * scale, layer.bias, layer.stride, 0, layer.dilation, layer.groups)
    with torch.no_grad():
        assert (model(x) - expected).abs().max().item() < 1e-12


def test_convert_layer_and_root_model():
    from dcn_deploy.convert import convert_layer

    layer = mmcv.ModulatedDeformConv2dPack(C, M, 3, padding=1)
    with pytest.raises(UnsupportedLayerError, match="use convert_layer"):
        convert_model(layer)
    canonical = convert_layer(layer)
    assert isinstance(canonical, DeformConv2d)
    x = torch.randn(1, C, 6, 7)
    torch.testing.assert_close(canonical(x), layer(x), rtol=1e-5, atol=1e-5)


def test_swapped_4uiiurz1_channel_permutation_fails_the_comparison(monkeypatch):
    """Guard: reading 4uiiurz1's planar offsets as if interleaved must be caught by the test."""
    from dcn_deploy.convert import uiiurz1 as converter

    monkeypatch.setattr(converter, "planar_to_interleaved", lambda taps: list(range(2 * taps)))
    source, canonical, _ = converted_pair(SOURCES[14][1], seed=1, offset_px=1.0)
    x = torch.randn(2, C, 11, 9, dtype=torch.float64)
    with torch.no_grad():
        assert (canonical(x) - source(x)).abs().max().item() > 1e-3


def test_charlesshang_dilation_2_is_rejected():
    model = nn.Sequential(charlesshang.DCN(C, M, 3, 1, 1, dilation=2))
    with pytest.raises(UnsupportedLayerError, match=r"module '0'.*different output heights"):
        convert_model(model)


@pytest.mark.parametrize("factory, word", [
    (lambda: dcnv3.DCNv3_pytorch(channels=8, group=2), "DCNv3"),
    (lambda: dcnv3.DCNv4(channels=8, group=2), "DCNv4"),
    (lambda: keras_deform.ConvOffset2D(4), "per-pixel"),
])
def test_other_operators_are_rejected_with_the_reason(factory, word):
    model = nn.Sequential(nn.Conv2d(4, 4, 1), factory())
    with pytest.raises(UnsupportedLayerError, match=rf"module '1'.*{word}"):
        convert_model(model)


def test_unknown_deformable_layer_is_rejected():
    class MyDeformableThing(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(2, 2, 3, 3))

    with pytest.raises(UnsupportedLayerError, match="module 'head.dcn'.*MyDeformableThing.*matches no known source"):
        convert_model(nn.ModuleDict({"head": nn.ModuleDict({"dcn": MyDeformableThing()})}))


def test_mxnet_rule_without_transform_is_approximate_and_measured():
    factory = SOURCES[21][1]  # MXNet DCNv1
    source, _, _ = converted_pair(factory, seed=2, offset_px=2.0)
    x = torch.randn(2, C, 11, 9, dtype=torch.float64)
    with pytest.raises(UnsupportedLayerError, match="mxnet_v1.*approximate"):
        convert_model(copy.deepcopy(source), emulate_boundary=False)
    approx = copy.deepcopy(source)
    report = convert_model(approx, emulate_boundary=False, accept_approximation=True, example_inputs=(x,))
    assert not report.exact
    with torch.no_grad():
        actual = (approx(x) - source(x)).abs().max().item()
    assert actual > 1e-6  # the rules really differ here ...
    assert report.layers[0].max_abs_diff == pytest.approx(actual)  # ... and the report says by how much
    assert "APPROXIMATE" in report.summary()


def test_4uiiurz1_version_is_detected_from_its_source_code():
    from dcn_deploy.convert.uiiurz1 import floors_in_padding_band

    class DeformConv2d(uiiurz1.DeformConv2d):  # the old forward, as published before 2019-01-05
        def forward(self, x):
            p = x
            mask = torch.cat([p[..., :1].lt(self.padding), p[..., 1:].lt(self.padding)], dim=-1).type_as(p)
            floor_p = p - (p - torch.floor(p))
            return p * (1 - mask) + floor_p * mask

    assert floors_in_padding_band(DeformConv2d(C, M), "x")
    assert not floors_in_padding_band(uiiurz1.DeformConv2d(C, M), "x")
