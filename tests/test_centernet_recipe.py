"""export/centernet_dla34_dcn.py: CenterNet's exact key set loads strictly (wrapped, module.-prefixed,
conv_offset_mask names, as released), exports, and runs in ONNX Runtime like PyTorch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from key_lists import read_key_shapes

from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.onnx.recipes import export_recipe, load_recipe, reference_for

pytestmark = pytest.mark.custom_op

KEYS = Path(__file__).parent / "data" / "centernet_dla34_ctdet_keys.txt"
RECIPE = "centernet_dla34_dcn"


def centernet_reference_keys() -> dict[str, tuple[int, ...]]:
    """xingyizhou/CenterNet's DLASeg state_dict keys and shapes (tests/data, derived from its source)."""
    return read_key_shapes(KEYS)


def centernet_checkpoint(seed: int = 3) -> dict:
    """A checkpoint as CenterNet's training writes it: {'epoch', 'state_dict'} with DataParallel's
    ``module.`` prefixes, ``conv_offset_mask`` names and the unused ImageNet ``base.fc``; the values
    are the recipe's seeded weights scaled, so a load that does not happen shows."""
    model = load_recipe(RECIPE).build(seed=seed)
    state = {}
    for key, value in model.state_dict().items():
        value = value * 0.95 if value.is_floating_point() and "running_var" not in key else value
        state["module." + key.replace(".conv_offset.", ".conv_offset_mask.")] = value.clone()
    state["module.base.fc.weight"] = torch.zeros(1000, 512, 1, 1)
    state["module.base.fc.bias"] = torch.zeros(1000)
    return {"epoch": 140, "state_dict": state}


def test_recipe_has_exactly_centernets_keys_and_shapes():
    reference = centernet_reference_keys()
    assert len(reference) == 398 and sum(".conv_offset_mask." in k for k in reference) == 32
    model = load_recipe(RECIPE).build(seed=0)
    ours = {k.replace(".conv_offset.", ".conv_offset_mask."): tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == reference


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("centernet") / "ctdet_coco_dla_2x.pth"
    torch.save(centernet_checkpoint(), path)
    return path


def test_released_checkpoint_loads_strictly_exports_and_matches(checkpoint, tmp_path):
    onnx_path = tmp_path / "centernet.onnx"
    export_recipe(RECIPE, onnx_path, weights=str(checkpoint), input_shape=(1, 3, 128, 128), dynamic=False)
    model, shapes = reference_for(onnx.load(str(onnx_path)))
    released = torch.load(checkpoint, weights_only=True)["state_dict"]
    loaded = model.state_dict()
    assert torch.equal(loaded["dla_up.ida_0.proj_1.conv.conv_offset.weight"],
                       released["module.dla_up.ida_0.proj_1.conv.conv_offset_mask.weight"])
    assert torch.equal(loaded["hm.2.bias"], released["module.hm.2.bias"])
    x = torch.randn(*shapes[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [t.numpy() for t in model.double()(x.double())]
    got = ort_session(onnx_path).run(None, {"x": x.numpy()})
    assert [g.shape for g in got] == [(1, 80, 32, 32), (1, 2, 32, 32), (1, 2, 32, 32)]
    for name, g, e in zip(("hm", "wh", "reg"), got, expected):
        scale = np.abs(e).max()
        assert scale > 1e-3, name  # the heads see real activations, not zeros
        assert np.abs(g - e).max() / scale < 1e-4, (name, np.abs(g - e).max(), scale)


def test_a_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    data = centernet_checkpoint()
    state = data["state_dict"]
    del state["module.hm.0.weight"]
    state["module.hm.9.weight"] = torch.zeros(1)
    state["module.wh.2.weight"] = torch.zeros(3, 256, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(data, path)
    result = CliRunner().invoke(app, ["export", "--recipe", RECIPE, "--weights", str(path), "-o",
                                      str(tmp_path / "x.onnx")], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "does not fit recipe centernet_dla34_dcn" in text
    assert "1 missing: ['hm.0.weight']" in text and "1 unexpected: ['hm.9.weight']" in text
    assert "wh.2.weight (3, 256, 1, 1) (model: (2, 256, 1, 1))" in text
