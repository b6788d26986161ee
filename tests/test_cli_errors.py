"""Every command-line error is one or two lines naming the file and the problem, never a traceback
(truncated ONNX and safetensors files included); the global --debug shows the traceback instead."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import dcn_deploy.onnx.inspect
from dcn_deploy.cli import app
from dcn_deploy.onnx.recipes import export_recipe

ENV = {"COLUMNS": "300"}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    export_recipe("demo", folder / "demo.onnx", input_shape=(1, 3, 32, 32))
    data = (folder / "demo.onnx").read_bytes()
    (folder / "truncated.onnx").write_bytes(data[: len(data) // 3])
    save_file({"w": torch.zeros(64, 64)}, str(folder / "w.safetensors"))
    data = (folder / "w.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "header.safetensors").write_bytes(data[:12])
    return folder


def check_one_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    lines = result.output.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error:") and result.output.count("error:") == 1, result.output
    for word in words:
        assert word in result.output, (word, result.output)


@pytest.mark.parametrize("command", [
    ["validate", "{f}/truncated.onnx"],
    ["inspect", "{f}/truncated.onnx"],
    ["quantize", "{f}/truncated.onnx", "--synthetic", "1", "-o", "{f}/q.onnx"],
    ["rewrite", "{f}/truncated.onnx", "-o", "{f}/r.onnx"],
])
def test_a_truncated_onnx_is_one_line(broken, command):
    result = CliRunner().invoke(app, [a.format(f=broken) for a in command], env=ENV)
    check_one_error(result, "truncated.onnx", "not a readable ONNX model")


@pytest.mark.parametrize("name", ["truncated.safetensors", "header.safetensors"])
def test_a_truncated_safetensors_is_one_line(broken, name):
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(broken / name), "-o", str(broken / "out.safetensors")], env=ENV)
    check_one_error(result, name, "not a valid safetensors file")
    result = runner.invoke(app, ["export", "--recipe", "demo", "--weights", str(broken / name), "-o",
                                 str(broken / "x.onnx")], env=ENV)
    check_one_error(result, name, "not a valid safetensors file")


def test_debug_shows_the_traceback(broken):
    result = CliRunner().invoke(app, ["--debug", "inspect", str(broken / "truncated.onnx")], env=ENV)
    assert isinstance(result.exception, ValueError) and "truncated.onnx" in str(result.exception)
    assert result.exit_code == 1 and result.exc_info[2] is not None


def test_an_unexpected_exception_is_one_line_too(broken, monkeypatch):
    def boom(path):
        raise KeyError("a surprise\nover two lines")

    monkeypatch.setattr(dcn_deploy.onnx.inspect, "inspect_onnx", boom)
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(broken / "demo.onnx")], env=ENV)
    check_one_error(result, "KeyError: 'a surprise\\nover two lines'", "--debug")
    result = runner.invoke(app, ["--debug", "inspect", str(broken / "demo.onnx")], env=ENV)
    assert isinstance(result.exception, KeyError)


def test_export_and_convert_show_a_spinner_and_print_their_result(broken, tmp_path, monkeypatch):
    """Issue 19: both were silent for 8-11 s. The spinner (rich's status) is recorded here: CliRunner is no
    terminal, where rich draws nothing."""
    import contextlib

    import dcn_deploy.cli
    from dcn_deploy.onnx.recipes import load_recipe

    shown = []

    @contextlib.contextmanager
    def status(text, **kwargs):
        shown.append(text)
        yield

    monkeypatch.setattr(dcn_deploy.cli.console, "status", status)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--recipe", "demo", "--shape", "1x3x32x32", "-o", str(tmp_path / "d.onnx")],
                           env=ENV)
    assert result.exit_code == 0 and "wrote" in result.output, result.output
    torch.save(load_recipe("demo").build(seed=0).state_dict(), tmp_path / "demo.pth")
    result = runner.invoke(app, ["convert", str(tmp_path / "demo.pth"), "-o", str(tmp_path / "w.safetensors")], env=ENV)
    assert result.exit_code == 0 and "recognised mmcv: 3 DCN layers" in result.output, result.output
    assert shown == ["exporting demo", "converting demo.pth"]
