"""The dcn-deploy command end to end: export, validate (table, JSON, JUnit, exit codes), rewrite."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from dcn_deploy.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet") / "resnet50_dcn.onnx"
    result = invoke("export", "--recipe", "resnet50_dcn", "-o", path, "--shape", "1x3x160x192")
    assert result.exit_code == 0, result.output
    assert "13 custom DcnDeformConv nodes" in result.output
    return path


def test_recipes_lists_the_recipes():
    result = invoke("recipes")
    assert result.exit_code == 0
    assert "resnet50_dcn" in result.output and "demo" in result.output


def test_resnet_dcn_export_then_validate_float32(resnet_onnx, tmp_path):
    report_path, junit_path = tmp_path / "parity.json", tmp_path / "parity.xml"
    result = invoke("validate", resnet_onnx, "-n", "2", "--json", report_path, "--junit", junit_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] and [o["name"] for o in report["outputs"]] == ["c3", "c4", "c5"]
    for output in report["outputs"]:
        assert output["max_rel"] < 1e-5 and output["rel_l2"] < 1e-5, output
        assert output["max_abs"] > 0  # float32 against float64 cannot be bit-exact: the comparison ran
    suite = ET.parse(junit_path).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"


def test_validate_other_shape_of_the_dynamic_export(resnet_onnx):
    result = invoke("validate", resnet_onnx, "-n", "1", "--shape", "2x3x96x128")
    assert result.exit_code == 0, result.output
    assert "2x512x12x16" in result.output


def test_validate_fails_against_other_weights(resnet_onnx, tmp_path):
    junit_path = tmp_path / "parity.xml"
    result = invoke("validate", resnet_onnx, "-n", "1", "--seed", "7", "--junit", junit_path)
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    assert ET.parse(junit_path).getroot().get("failures") == "3"


def test_rewrite_command_round_trip(tmp_path):
    custom = tmp_path / "demo.onnx"
    assert invoke("export", "-o", custom, "--recipe", "demo").exit_code == 0
    result = invoke("rewrite", custom, "-o", tmp_path / "std.onnx", "--to", "standard")
    assert result.exit_code == 0 and "3 nodes rewritten to standard" in result.output
    result = invoke("export", "-o", tmp_path / "demo_std.onnx", "--standard")
    assert result.exit_code == 0 and "3 standard DeformConv nodes" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("validate", "nowhere.onnx"), "no ONNX file at nowhere.onnx"),
        (("export", "-o", "x.onnx", "--recipe", "resnet_9000"), "no recipe 'resnet_9000'"),
        (("export", "-o", "x.onnx", "--shape", "1x3x64"), "four positive sizes"),
        (("rewrite", "nowhere.onnx", "-o", "y.onnx"), "no ONNX file"),
    ],
)
def test_bad_arguments_get_clear_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output
