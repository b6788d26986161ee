"""Raw checkpoints (no source module at hand) remapped with convert_state_dict / dcn-deploy convert."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sources import charlesshang, mxnet, paddle, uiiurz1
from test_convert import randomize
from torch import nn
from typer.testing import CliRunner

from dcn_deploy import DeformConv2d, convert_state_dict
from dcn_deploy.cli import app
from dcn_deploy.convert import read_mxnet_params
from dcn_deploy.convert.checkpoints import load_weights
from dcn_deploy.onnx.recipes import load_recipe

C, M = 4, 6


def check(source: nn.Module, canonical: nn.Module, shape=(2, C, 11, 9)):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (canonical.double()(x) - source.double()(x)).abs().max().item() < 1e-9


def load_exactly(canonical: nn.Module, state: dict) -> nn.Module:
    canonical.double().load_state_dict(state, strict=True)
    return canonical.eval()


def test_charlesshang_checkpoint():
    source = charlesshang.DCN(C, M, 3, 1, 1, deformable_groups=2).double()
    randomize(source, 0, 2.0)
    state = convert_state_dict(source.state_dict(), source="centernet")
    canonical = load_exactly(DeformConv2d(C, M, 3, padding=1, offset_groups=2, offset_dilation=1), state)
    check(source, canonical)


@pytest.mark.parametrize("padding, kernel", [(1, 3), (2, 3), (1, 2)])
def test_4uiiurz1_checkpoint(padding, kernel):
    source = uiiurz1.DeformConv2d(C, M, kernel, padding=padding, modulation=True).double()
    randomize(source, 1, 2.0)
    state = convert_state_dict(source.state_dict(), source="4uiiurz1", options={"padding": padding})
    b = (kernel - 1) // 2
    canonical = DeformConv2d(C, M, kernel, padding=(b, b, kernel - 1 - b, kernel - 1 - b), bias=False,
                             offset_kernel_size=3, offset_padding=1, offset_dilation=1)
    check(source, load_exactly(canonical, state))


def test_paddle_numpy_checkpoint():
    source = paddle.DeformableConvV2(C, M, 3, stride=1, dilation=2).double()
    randomize(source, 2, 2.0)
    arrays = paddle.paddle_state_dict(source)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    state = convert_state_dict(arrays, source="paddledetection")
    canonical = DeformConv2d(C, M, 3, padding=2, dilation=2, bias=False, offset_padding=1, offset_dilation=1)
    check(source, load_exactly(canonical, state))


def test_mxnet_params_file(tmp_path):
    source = mxnet.MXNetDeformableConvolution(C, M, 3, 1, 2, 2, 2, no_bias=False).double()
    randomize(source, 3, 2.0)
    path = tmp_path / "dcn-0000.params"
    mxnet.save_mxnet_params(path, source.mxnet_params("res5a_branch2b"))
    arrays = read_mxnet_params(path)
    assert set(arrays) == {f"arg:res5a_branch2b_{n}" for n in ("offset_weight", "offset_bias", "weight", "bias")}
    state = convert_state_dict(load_weights(path), source="mxnet")
    canonical = nn.Module()
    canonical.res5a_branch2b = DeformConv2d(C, M, 3, padding=2, dilation=2, offset_groups=2, modulated=False,
                                            boundary="mxnet_v1")
    load_exactly(canonical, state)
    check(source, canonical.res5a_branch2b)


def test_bad_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_weights(tmp_path / "missing.pth")
    (tmp_path / "junk.params").write_bytes(b"\x00" * 24)
    with pytest.raises(ValueError, match="not an MXNet params file"):
        load_weights(tmp_path / "junk.params")
    (tmp_path / "w.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown weight file type"):
        load_weights(tmp_path / "w.onnx")

    class Evil:
        def __reduce__(self):
            return (print, ("code from a checkpoint ran",))

    torch.save({"weight": torch.zeros(1), "evil": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load_weights(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="unknown source 'caffe'"):
        convert_state_dict({}, source="caffe")


def test_mmdetection_checkpoint_of_the_resnet_recipe_converts_exports_and_validates(tmp_path):
    """An mmdetection-style checkpoint (``backbone.`` prefix, old sibling ``conv2_offset`` keys in
    some layers) -> dcn-deploy convert -> export -> validate, all through the command line."""
    recipe = load_recipe("resnet50_dcn")
    trained = recipe.build(seed=11)
    checkpoint = {}
    for key, value in trained.state_dict().items():
        if key.startswith("layer3.") and ".conv2.conv_offset." in key:  # as saved by an old mmdet
            key = key.replace(".conv2.conv_offset.", ".conv2_offset.")
        checkpoint["backbone." + key] = value
    checkpoint["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)  # the rest of the detector
    torch.save({"meta": {"epoch": 12}, "state_dict": checkpoint}, tmp_path / "mmdet.pth")

    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})
        return result

    result = invoke("convert", tmp_path / "mmdet.pth", "--source", "mmdet", "--strip-prefix", "backbone.",
                    "--recipe", "resnet50_dcn", "-o", tmp_path / "w.safetensors")
    assert result.exit_code == 2 and "unexpected ['neck.lateral_convs.0.conv.weight']" in " ".join(result.output.split())
    assert result.output.count("error:") == 1, result.output  # once: the exit is not reported as a second error
    del checkpoint["neck.lateral_convs.0.conv.weight"]
    torch.save({"state_dict": checkpoint}, tmp_path / "mmdet.pth")
    result = invoke("convert", tmp_path / "mmdet.pth", "--source", "mmdet", "--strip-prefix", "backbone.",
                    "--recipe", "resnet50_dcn", "-o", tmp_path / "w.safetensors")
    assert result.exit_code == 0, result.output

    converted = load_weights(tmp_path / "w.safetensors")
    for key, value in trained.state_dict().items():
        assert torch.equal(converted[key], value), key

    onnx_path = tmp_path / "resnet50_dcn.onnx"
    result = invoke("export", "--recipe", "resnet50_dcn", "--weights", tmp_path / "w.safetensors",
                    "--shape", "1x3x96x128", "-o", onnx_path)
    assert result.exit_code == 0, result.output
    result = invoke("validate", onnx_path, "-n", "1", "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["passed"] and max(o["max_rel"] for o in report["outputs"]) < 1e-5
