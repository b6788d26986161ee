"""validate against the user's own model (Python dcn_deploy.validate, CLI --reference file.py:factory),
recipe paths recorded so validate works from any directory, several shapes for dynamic models, and the
error that names shape specialisation."""
from __future__ import annotations

import json
import shutil
import textwrap

import onnx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from typer.testing import CliRunner

import dcn_deploy
from dcn_deploy.cli import app
from dcn_deploy.onnx.model_info import get_metadata
from dcn_deploy.onnx.recipes import RECIPE_DIR

pytestmark = pytest.mark.custom_op
SHAPE = (1, 3, 16, 16)

MODEL_FILE = textwrap.dedent('''
    import torch
    import dcn_deploy

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = dcn_deploy.DeformConv2d(3, 4, 3, padding=1)
            torch.nn.init.normal_(self.dcn.conv_offset.weight, std=0.1)

        def forward(self, x):
            return torch.relu(self.dcn(x))

    def make():
        torch.manual_seed(0)
        return Net().eval()

    def not_a_model():
        return 42
''')


class Specialised(torch.nn.Module):
    """Doubles small inputs: a Python branch on the size, decided once at export."""

    def __init__(self):
        super().__init__()
        self.dcn = dcn_deploy.DeformConv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.dcn(x)
        if x.shape[-1] < 32:
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return y


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    (folder / "mymodel.py").write_text(MODEL_FILE)
    namespace: dict = {}
    exec(MODEL_FILE, namespace)
    model = namespace["make"]()
    with torch.no_grad():
        model.dcn.weight.mul_(3.0)  # "trained": different from what make() returns
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))
    path = folder / "net.onnx"
    dcn_deploy.export_onnx(model, (torch.randn(SHAPE),), path)
    return folder, model, path


def test_python_validate_checks_the_export_shape_and_a_second_one(own):
    _, model, path = own
    report = dcn_deploy.validate(path, model, torch.randn(SHAPE), num_inputs=1)
    assert report.passed and report.precision == "fp32"
    assert report.input_shapes == [list(SHAPE)]
    assert report.more_shapes == [[[2, 3, 48, 48]]]  # batch + 1, H and W + 32
    assert dcn_deploy.validate(path, model, (torch.randn(SHAPE),), num_inputs=1, more_shapes=False).more_shapes == []
    other = type(model)().eval()  # untrained weights: not the exported model
    assert not dcn_deploy.validate(path, other, torch.randn(SHAPE), num_inputs=1).passed


def test_shape_specialisation_is_named(tmp_path):
    torch.manual_seed(0)
    model = Specialised().eval()
    path = tmp_path / "specialised.onnx"
    dcn_deploy.export_onnx(model, (torch.randn(1, 3, 8, 16),), path)
    report = dcn_deploy.validate(path, model, torch.randn(1, 3, 8, 16), num_inputs=1, more_shapes=False)
    assert report.passed  # at the export shape both branches agree
    with pytest.raises(ValueError, match="shape specialisation") as error:
        dcn_deploy.validate(path, model, torch.randn(1, 3, 8, 16), num_inputs=1)
    assert "in PyTorch" in str(error.value) and "2x3x40x48" in str(error.value)


def test_cli_reference_factory_and_weights(own):
    folder, _, path = own
    runner = CliRunner()
    spec = f"{folder / 'mymodel.py'}:make"
    result = runner.invoke(app, ["validate", str(path), "--reference", spec, "-n", "1", "--json",
                                 str(folder / "p.json")], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "FAIL" in result.output, result.output  # make() alone lacks the weights
    result = runner.invoke(app, ["validate", str(path), "--reference", spec, "--weights", str(folder / "w.safetensors"),
                                 "-n", "1", "--json", str(folder / "p.json")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "p.json").read_text())
    assert report["passed"] and report["more_shapes"] == [[[2, 3, 48, 48]]]
    for args, message in (
        (["--reference", f"{folder / 'mymodel.py'}:not_a_model"], "returned a int, not a torch.nn.Module"),
        (["--reference", f"{folder / 'mymodel.py'}:missing"], "defines no callable 'missing'"),
        (["--reference", f"{folder / 'nothere.py'}:make"], "no Python file at"),
        (["--reference", spec, "--recipe", "demo"], "--reference replaces --recipe"),
        (["--weights", str(folder / "w.safetensors")], "--weights goes with --reference"),
    ):
        result = runner.invoke(app, ["validate", str(path), *args], env={"COLUMNS": "300"})
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
    torch.save({"other.weight": torch.zeros(1)}, folder / "bad.pth")
    result = runner.invoke(app, ["validate", str(path), "--reference", spec, "--weights", str(folder / "bad.pth")],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "does not fit" in result.output and "missing" in result.output, result.output


def test_an_onnx_without_a_recipe_points_to_reference(own):
    """Issue 19: validate refused an ONNX that no recipe exported ("records no recipe") with no way on."""
    _, _, path = own
    result = CliRunner().invoke(app, ["validate", str(path), "-n", "1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "records no recipe" in result.output, result.output
    assert "--reference file.py:factory" in result.output


def test_a_recipe_path_is_recorded_absolute_and_validate_works_from_elsewhere(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    shutil.copy(RECIPE_DIR / "demo.py", work / "my_recipe.py")
    runner = CliRunner()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["export", "--recipe", "my_recipe.py", "--shape", "1x3x32x32", "-o", "m.onnx"])
    assert result.exit_code == 0, result.output
    assert get_metadata(onnx.load(str(work / "m.onnx")))["recipe"] == str(work / "my_recipe.py")
    result = runner.invoke(app, ["export", "--recipe", str(RECIPE_DIR / "demo.py"), "--shape", "1x3x32x32",
                                 "-o", "builtin.onnx"])
    assert result.exit_code == 0 and get_metadata(onnx.load("builtin.onnx"))["recipe"] == "demo", result.output
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["validate", str(work / "m.onnx"), "-n", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "pass" in result.output, result.output
    assert "[[2, 3, 64, 64]]" in " ".join(result.output.split())  # the second shape set, reported


def test_an_old_relative_recipe_path_is_found_beside_the_onnx(tmp_path, monkeypatch):
    shutil.copy(RECIPE_DIR / "demo.py", tmp_path / "my_recipe.py")
    from dcn_deploy.onnx.model_info import set_metadata
    from dcn_deploy.onnx.recipes import export_recipe

    proto = export_recipe(str(tmp_path / "my_recipe.py"), tmp_path / "m.onnx", input_shape=(1, 3, 32, 32))
    set_metadata(proto, {"recipe": "my_recipe.py"})  # as exports before this change recorded it
    onnx.save(proto, str(tmp_path / "m.onnx"))
    monkeypatch.chdir(tmp_path.parent)
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(tmp_path / "m.onnx"), "-n", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (tmp_path / "my_recipe.py").unlink()
    result = runner.invoke(app, ["validate", str(tmp_path / "m.onnx"), "-n", "1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "records recipe my_recipe.py, which is not there" in " ".join(
        result.output.split()), result.output
