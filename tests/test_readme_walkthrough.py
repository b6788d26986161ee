"""README's "Your own model, end to end" walk-through, run as it stands: the fenced block after the
``<!-- walkthrough: ... -->`` marker is extracted from README.md and run with bash in an empty folder
(so the README and this test cannot drift), then its output and files are checked."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from dcn_deploy.onnx import schema
from dcn_deploy.onnx.model_info import get_metadata
from dcn_deploy.onnx.recipes import _REQUIRED, load_recipe

# Not a custom_op test: the sanitizer run (scripts/sanitize_tests.sh) would run its dozen subprocesses again under
# ASan for no new coverage of the library (tests/test_quantize_layers.py and test_int8.py run the same ops).
ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- walkthrough:"


def walkthrough_script() -> str:
    text = (ROOT / "README.md").read_text()
    assert text.count(MARKER) == 1, "README.md must hold one walk-through marker"
    after = text[text.index(MARKER):].split("\n", 1)[1]
    match = re.match(r"```bash\n(.*?)^```$", after, re.S | re.M)
    assert match, "the walk-through marker must be followed by the ```bash block"
    return match.group(1)


def test_the_readme_names_everything_a_recipe_needs(tmp_path):
    """Issue 19: the README's description of a recipe lacked DESCRIPTION, INPUT_SHAPE and the keyword arguments."""
    text = " ".join((ROOT / "README.md").read_text().split())
    sentence = text[text.index("A recipe is any `.py` file"):].split(". ")[0]
    for name in (*_REQUIRED, "seed=0, random_offsets=True", "batch, height, width, seed"):
        assert name in sentence, name
    (tmp_path / "partial.py").write_text("def build(seed=0, random_offsets=True): pass\nINPUT_SHAPE = (1, 3, 8, 8)\n")
    with pytest.raises(AttributeError, match=r"does not define \['example_inputs', 'DESCRIPTION'\]"):
        load_recipe(str(tmp_path / "partial.py"))


def test_the_block_is_extracted_whole():
    script = walkthrough_script()
    assert script.startswith("set -euo pipefail\n") and script.rstrip().endswith("EOF")
    assert script.count("<<'EOF'") == 3 and "dcn-deploy serve" in script


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    if shutil.which("curl") is None:
        pytest.skip("the walk-through queries the server with curl")
    folder = tmp_path_factory.mktemp("walkthrough")
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1",
               # this checkout's dcn_deploy and the dcn-deploy / python of this interpreter's environment
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               PATH=os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"])))
    # its own process group: on a timeout the server the script started goes too (its trap never runs)
    process = subprocess.Popen(["bash", "-c", walkthrough_script()], cwd=folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail("the walk-through did not finish in 400 s:\n" + stdout[-3000:] + stderr[-3000:])
    output = " ".join((stdout + stderr).split())
    assert process.returncode == 0, stdout[-6000:] + stderr[-6000:]
    return folder, output


def test_conversion_recognises_both_third_party_layers(walkthrough):
    folder, output = walkthrough
    assert "recognised charlesshang: 1 DCN layer (neck); mmcv: 1 DCN layer (backbone.2)" in output
    assert "wrote tinydet.onnx: 2 custom DcnDeformConv nodes" in output
    assert (folder / "tinydet.safetensors").stat().st_size > 0


def test_validate_against_the_users_own_model_passes_in_fp32_and_int8(walkthrough):
    _, output = walkthrough
    tables = re.findall(r"parity of (tinydet(?:\.int8)?\.onnx) \(onnxruntime-custom-op, (\w+)\)(.*?)tolerance", output)
    assert [(name, precision) for name, precision, _ in tables] == [("tinydet.onnx", "fp32"),
                                                                   ("tinydet.int8.onnx", "int8")]
    for _, _, table in tables:
        rows = re.findall(r"│ (hm|wh) +│ 1x2x32x32 │ (\S+) │ (\S+) │ (\S+) │ .*? │ (pass|FAIL)", table)
        assert [r[0] for r in rows] == ["hm", "wh"] and all(r[4] == "pass" for r in rows), table
    fp32_rel_l2 = [float(r[3]) for r in re.findall(r"│ (hm|wh) +│ 1x2x32x32 │ (\S+) │ (\S+) │ (\S+) │", tables[0][2])]
    assert max(fp32_rel_l2) < 1e-5
    assert "│ neck" not in tables[1][2] and re.search(r"│ backbone\.2 +│ \d+ +│ 0 +│", output)  # exact INT8 node


def test_sensitivity_ranks_every_layer_and_suggests_keep_float_flags(walkthrough):
    folder, output = walkthrough
    report = json.loads((folder / "sensitivity.json").read_text())
    layers = {entry["layer"]: entry for entry in report["layers"]}
    assert set(layers) == {"backbone.0", "backbone.2", "neck", "hm", "wh"}
    assert layers["neck"]["op_type"] == layers["backbone.2"]["op_type"] == "DCN"
    worst = [entry["worst_rel_l2"] for entry in report["layers"]]
    assert worst == sorted(worst, reverse=True) and worst[-1] > 0
    assert report["target"] == 1e-3 and max(report["all_quantized"].values()) > 1e-3
    # the suggestion really brings every output under the target (re-measured, not summed)
    assert report["suggested_keep_float"] and max(report["suggested_rel_l2"].values()) <= 1e-3
    flags = " ".join(f"--keep-float {name}" for name in report["suggested_keep_float"])
    assert f"suggestion: keep {len(report['suggested'])} layer(s) float" in output and flags in output


def test_keep_float_by_layer_name_leaves_the_dcn_and_the_conv_float(walkthrough):
    folder, output = walkthrough
    assert re.search(r"kept float: neck, node_conv2d_\d+ \(wh\)", output), output
    model = onnx.load(str(folder / "tinydet.int8.onnx"))
    layers = json.loads(get_metadata(model)["layers"])
    nodes = {n.name: n for n in model.graph.node}
    produced_by = {o: n for n in model.graph.node for o in n.output}
    assert schema.is_custom_node(nodes["neck"])  # float DCN: float input, float weight
    assert produced_by[nodes["neck"].input[0]].op_type == "Relu"
    assert nodes["backbone.2"].op_type == schema.INT8_OP_TYPE
    wh = next(name for name, layer in layers.items() if layer == "wh")
    assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for i in nodes[wh].input)
    hm = next(name for name, layer in layers.items() if layer == "hm")
    assert produced_by[nodes[hm].input[0]].op_type == "DequantizeLinear"


def test_the_served_model_answers_curl_and_tritonclient(walkthrough):
    _, output = walkthrough
    assert '"name":"tinydet"' in output.replace(" ", "") and '"name":"x"' in output.replace(" ", "")
    served = re.findall(r"served (hm|wh) 1x2x32x32: max \|served - local\| = (\S+)", output)
    assert [name for name, _ in served] == ["hm", "wh"]
    assert all(float(diff) == 0.0 for _, diff in served)
