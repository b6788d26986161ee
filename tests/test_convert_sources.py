"""Converters never silently do nothing: a source that recognises no layer is an error naming the sources
that would, --source auto and several sources in one run, a model without DCN layers, and mmdetection
checkpoints with numpy values loaded without unpickling anything else."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sources import charlesshang, paddle
from test_convert import randomize
from torch import nn
from typer.testing import CliRunner

from dcn_deploy import DeformConv2d, NoDCNLayerError, convert_checkpoint, convert_model, convert_state_dict
from dcn_deploy.cli import app
from dcn_deploy.convert import recognize_checkpoint
from dcn_deploy.convert.checkpoints import load_weights

C, M = 4, 6


def centernet_state(prefix: str = "") -> dict:
    source = charlesshang.DCN(C, M, 3, 1, 1, deformable_groups=2)
    randomize(source, 0, 2.0)
    return {prefix + k: v for k, v in source.state_dict().items()}


def paddle_arrays(prefix: str = "") -> dict:
    source = paddle.DeformableConvV2(C, M, 3, stride=1, dilation=2)
    randomize(source, 2, 2.0)
    return {prefix + k: v for k, v in paddle.paddle_state_dict(source).items()}


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_source_that_matches_nothing_is_an_error_naming_the_ones_that_would():
    state = centernet_state("head.")
    with pytest.raises(ValueError, match=r"source mmcv matches no layer.*sources that match: charlesshang \(1: head\)"):
        convert_state_dict(state, source="mmdet")
    with pytest.raises(ValueError, match="no DCN layer of any known source"):
        convert_state_dict({"fc.weight": torch.zeros(2, 2)}, source="auto")
    with pytest.raises(ValueError, match="strip prefix 'backbone.' begins no key"):
        convert_state_dict(state, source="centernet", strip_prefix="backbone.")


def test_auto_and_several_sources_in_one_run():
    state = {**centernet_state("head."), **paddle_arrays("neck.")}
    assert set(recognize_checkpoint(state)) >= {"charlesshang", "chengdazhi", "paddle"}
    auto = convert_checkpoint(state, "auto")
    assert auto.layers == {"charlesshang": ["head"], "paddle": ["neck"]}  # chengdazhi's same layout not counted twice
    named = convert_checkpoint(state, "centernet,paddle")
    separately = {**convert_state_dict(centernet_state("head."), "centernet"),
                  **convert_state_dict(paddle_arrays("neck."), "paddle")}
    for result in (auto.state, named.state):
        assert set(result) == set(separately)
        assert all(torch.equal(result[k], separately[k]) for k in separately)
    assert "head.conv_offset.weight" in auto.state and "neck.conv_dcn.weight" not in auto.state
    assert auto.summary() == "charlesshang: 1 DCN layer (head); paddle: 1 DCN layer (neck)"
    with pytest.raises(ValueError, match="give it alone"):
        convert_checkpoint(state, "auto,mmcv")


def test_cli_convert_prints_what_it_recognised_and_refuses_a_wrong_source(tmp_path):
    torch.save({"state_dict": centernet_state("head.")}, tmp_path / "ctdet.pth")
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(tmp_path / "ctdet.pth"), "--source", "mmcv", "-o",
                                 str(tmp_path / "w.safetensors")], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    assert "source mmcv matches no layer" in one_line(result.output) and "charlesshang (1: head)" in result.output
    assert not (tmp_path / "w.safetensors").exists()
    result = runner.invoke(app, ["convert", str(tmp_path / "ctdet.pth"), "-o", str(tmp_path / "w.safetensors")],
                           env={"COLUMNS": "300"})  # --source auto by default
    assert result.exit_code == 0, result.output
    assert "recognised charlesshang: 1 DCN layer (head)" in one_line(result.output)
    assert "head.conv_offset.weight" in load_weights(tmp_path / "w.safetensors")


def test_a_model_without_dcn_layers_is_an_error_and_a_canonical_one_says_so():
    with pytest.raises(NoDCNLayerError, match="no DCN layer in Sequential: nothing converted"):
        convert_model(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()))
    report = convert_model(nn.Sequential(DeformConv2d(3, 4, 3, padding=1)))
    assert len(report) == 0 and "already" in report.summary() and "all exact" not in report.summary()


def test_mmdetection_meta_with_numpy_values_loads(tmp_path):
    weights = {"backbone.conv1.weight": torch.randn(2, 3, 1, 1)}
    meta = {"epoch_np": np.int64(3), "arr": np.zeros(2), "lr": np.float32(0.02), "dtype": np.dtype("float64")}
    torch.save({"meta": meta, "state_dict": weights}, tmp_path / "epoch_3.pth")
    loaded = load_weights(tmp_path / "epoch_3.pth")
    assert set(loaded) == set(weights) and torch.equal(loaded["backbone.conv1.weight"], weights["backbone.conv1.weight"])


def test_a_malicious_pickle_is_still_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"meta": {"epoch_np": np.int64(3), "evil": Evil()}, "state_dict": {"w": torch.zeros(1)}},
               tmp_path / "evil.pth")
    marker.unlink(missing_ok=True)  # torch.save does not run it, but be sure
    with pytest.raises(ValueError, match="not loadable as plain weights"):
        load_weights(tmp_path / "evil.pth")
    assert not marker.exists()
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(tmp_path / "evil.pth"), "-o", str(tmp_path / "w.safetensors")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "evil.pth: not loadable as plain weights" in one_line(result.output)
    assert len(result.output.strip().splitlines()) <= 2 and not marker.exists(), result.output
