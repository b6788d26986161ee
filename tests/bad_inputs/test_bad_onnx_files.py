"""The ONNX tools (rewrite, quantize, validate) given files that are not valid models: a one-line error
naming the file and what is wrong, exit code 2, no traceback."""
from __future__ import annotations

import re

import onnx
import pytest
from bad_inputs.cli_result import cli_error

pytestmark = pytest.mark.bad_input


def _truncated(model: onnx.ModelProto) -> bytes:
    raw = model.SerializeToString()
    return raw[: len(raw) // 2]


def _old_opset(model: onnx.ModelProto) -> bytes:
    for opset in model.opset_import:
        if opset.domain == "":
            opset.version = 7
    return model.SerializeToString()


def _no_initializers(model: onnx.ModelProto) -> bytes:
    del model.graph.initializer[:]
    return model.SerializeToString()


def _cycle(model: onnx.ModelProto) -> bytes:
    model.graph.node[0].input[0] = model.graph.node[-1].output[0]
    return model.SerializeToString()


# (id, the file's bytes from the good model (None: no file), message)
FILES = [
    ("missing_file", None, "no ONNX file at"),
    ("empty_file", lambda m: b"", "holds no ONNX graph \\(0 bytes: empty or not an ONNX file\\)"),
    ("not_onnx", lambda m: b"\x00\xffthis is not a protobuf", "is not a readable ONNX model \\(truncated or corrupt\\?\\)"),
    ("truncated", _truncated, "is not a readable ONNX model \\(truncated or corrupt\\?\\)"),
    # rewrite names the opset its standard node needs (it checks the model it writes, not the input)
    ("old_opset", _old_opset, "is not a valid ONNX model: Node\\(.*\\) with schema\\(::Slice:1\\)|imports ai.onnx opset 7; "
     "standard DeformConv needs opset >= 19"),
    ("missing_initializers", _no_initializers, "is not a valid ONNX model: .*input 'stem.0.weight' of node"),
    ("cycle", _cycle, "is not a valid ONNX model: Nodes in a graph must be topologically sorted"),
]
TOOLS = {
    "rewrite": lambda path, out: ["rewrite", str(path), "-o", str(out / "r.onnx"), "--to", "standard"],
    "quantize": lambda path, out: ["quantize", str(path), "--synthetic", "1", "-o", str(out / "q.onnx")],
    "validate": lambda path, out: ["validate", str(path), "-n", "1"],
}


@pytest.mark.custom_op
@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("bad", FILES, ids=lambda b: b[0])
def test_onnx_tool_rejects_bad_file(bad, tool, serving_onnx, tmp_path):
    name, make, message = bad
    path = tmp_path / f"{name}.onnx"
    if make is not None:
        path.write_bytes(make(onnx.load(str(serving_onnx))))
    line = cli_error(TOOLS[tool](path, tmp_path))
    assert str(path) in line and re.search(message, line), line
    assert not (tmp_path / "r.onnx").exists() and not (tmp_path / "q.onnx").exists()
