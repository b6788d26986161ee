"""``dcn-deploy quantize`` given bad calibration data or a model it cannot quantize: one error line naming
the file and what is wrong, exit code 2."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from bad_inputs.cli_result import cli_error
from onnx import TensorProto, helper
from serving import INPUT_SHAPE

pytestmark = pytest.mark.bad_input

GOOD = np.zeros(INPUT_SHAPE, np.float32)


def _relu_model(path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(INPUT_SHAPE))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


# (id, writes the calibration folder's files (None: no folder), message)
CASES = [
    ("folder_missing", None, "calibration folder .* does not exist"),
    ("folder_without_samples", lambda d: (d / "notes.txt").write_text("no samples"), "holds no .npy, .npz or image"),
    ("npz_wrong_input_name", lambda d: np.savez(d / "s.npz", y=GOOD), "s.npz: holds inputs \\['y'\\], the model takes"),
    ("npy_integer_dtype", lambda d: np.save(d / "s.npy", GOOD.astype(np.int64)), "s.npy: input 'x' has dtype int64, expected floating point"),
    ("npy_wrong_channels", lambda d: np.save(d / "s.npy", np.zeros((1, 4, 32, 40), np.float32)), "s.npy: input 'x' has shape \\(1, 4, 32, 40\\), the model expects"),
    ("npy_with_nan", lambda d: np.save(d / "s.npy", np.full(INPUT_SHAPE, np.nan, np.float32)), "s.npy: input 'x' holds Inf or NaN"),
    ("npy_not_numpy", lambda d: (d / "s.npy").write_bytes(b"not a numpy file"), "s.npy: cannot be read"),
    ("npy_object_array", lambda d: np.save(d / "s.npy", np.array([{}], dtype=object)), "s.npy: cannot be read .*allow_pickle"),
    ("image_not_an_image", lambda d: (d / "s.png").write_bytes(b"\x89PNG broken"), "s.png: not a readable image"),
]


@pytest.mark.custom_op
@pytest.mark.parametrize("bad", CASES, ids=lambda b: b[0])
def test_quantize_rejects_bad_calibration(bad, serving_onnx, tmp_path):
    _, write, message = bad
    folder = tmp_path / "calib"
    if write is not None:
        folder.mkdir()
        write(folder)
    line = cli_error(["quantize", str(serving_onnx), "--calib", str(folder), "-o", str(tmp_path / "q.onnx")])
    assert re.search(message, line), line
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_rejects_a_model_without_deform_conv(tmp_path):
    _relu_model(tmp_path / "relu.onnx")
    line = cli_error(["quantize", str(tmp_path / "relu.onnx"), "--synthetic", "1", "-o", str(tmp_path / "q.onnx")])
    assert "the model has no Conv, MatMul, Gemm or DeformConv node to quantize" in line, line
