"""``dcn-deploy triton-repo --backend python`` against a real tritonserver (the one nvidia-pytriton bundles,
in .venv-triton; skipped with the reason when it is not installed), and the generated model.py on its own
with a stand-in for Triton's ``triton_python_backend_utils``.

Against tritonserver: the demo model through Triton's Python backend with Triton's dynamic batcher on,
2000 requests from 16 threads (tritonclient, HTTP, binary tensors), every one with its own input and its
answer compared with ONNX Runtime run directly on that input; none may fail or differ, and Triton's own
statistics must show requests sharing executions (the dynamic batcher at work).
"""
from __future__ import annotations

import importlib.util
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.model_config_pb2 as model_config
import tritonclient.http as httpclient
from google.protobuf import json_format, text_format
from serving import INPUT_SHAPE, TritonServer, demo_inputs, export_rows_model, run_threads, tritonserver_unavailable
from typer.testing import CliRunner

from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.cli import app
from dcn_deploy.serving.triton_python import THREADS_PARAMETER
from dcn_deploy.serving.triton_repo import TritonRepoError, write_triton_repo

REQUESTS, CONCURRENCY = 2000, 16
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float32: a stacked run may sum in another order than a single one


def _python_repo(model: Path, repo: Path, *args: str) -> Path:
    result = CliRunner().invoke(app, ["triton-repo", str(model), "-o", str(repo), "--backend", "python", *args],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return repo


# --------------------------------------------------------------------------------------
# The generated repository, and model.py driven like Triton's Python backend drives it
# --------------------------------------------------------------------------------------

class _FakeTensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def _fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _FakeTensor
    module.InferenceResponse = _FakeResponse
    module.TritonError = lambda message: ("TritonError", message)
    module.get_input_tensor_by_name = lambda request, name: (
        _FakeTensor(name, request[name]) if name in request else None)
    return module


def _load_model_py(path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location("generated_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()


def test_python_repository_and_its_model_py(serving_onnx, tmp_path, monkeypatch):
    repo = _python_repo(serving_onnx, tmp_path / "repo", "--max-batch-size", "8", "--max-delay-ms", "2")
    config_text = (repo / "demo" / "config.pbtxt").read_text()
    config = text_format.Parse(config_text, model_config.ModelConfig())
    assert (config.backend, config.platform, config.max_batch_size) == ("python", "", 8)
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.KIND_CPU
    assert not config.model_operations.op_library_filename  # model.py loads the library beside it
    assert (repo / "demo" / "1" / "model.onnx").read_bytes() == serving_onnx.read_bytes()
    assert (repo / "demo" / "libdcn_deploy_ort.so").is_file()
    assert "--no-deps" in (repo / "README.md").read_text()

    model = _load_model_py(repo / "demo" / "1" / "model.py", monkeypatch)
    # what the Python backend passes: the config as JSON, the model's directory and version
    model.initialize({"model_config": '{"max_batch_size": 8, "output": [{"name": "logits"}]}',
                      "model_repository": str(repo / "demo"), "model_version": "1"})
    session = ort_session(serving_onnx)
    a, b, c = demo_inputs(3, seed=5)
    wide = np.random.default_rng(6).standard_normal((2, 3, 40, 48), dtype=np.float32)
    requests = [{"x": a}, {"x": wide}, {"x": b.astype(np.float64)}, {"y": c}, {"x": c}]
    responses = model.execute(requests)
    assert len(responses) == 5
    for index, x in ((0, a), (1, wide), (4, c)):  # a and c were stacked into one run, wide ran apart
        response = responses[index]
        assert response.error is None and [t.name() for t in response.output_tensors] == ["logits"]
        np.testing.assert_allclose(response.output_tensors[0].as_numpy(), session.run(None, {"x": x})[0],
                                   **TOLERANCE)
    assert responses[2].error == ("TritonError", "input 'x' must be FP32, got FP64")
    assert responses[3].error[1].startswith("missing input 'x'")

    def fail(arrays, names):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.runtime, "run_checked", fail)  # a failed run answers each of its requests
    assert [r.error for r in model.execute([{"x": a}, {"x": b}])] == [("TritonError", "the run failed: boom")] * 2
    model.finalize()


def test_python_repository_sizes_its_onnx_runtime_threads(serving_onnx, tmp_path, monkeypatch):
    """config.pbtxt carries the ONNX Runtime threads per instance (default 1, so --instances N uses N cores, not
    N x all of them), and model.py reads them from the config Triton hands it (the config as JSON)."""
    for args, threads in (((), "1"), (("--instances", "3", "--threads", "2"), "2")):
        repo = _python_repo(serving_onnx, tmp_path / f"repo{threads}", *args)
        config = text_format.Parse((repo / "demo" / "config.pbtxt").read_text(), model_config.ModelConfig())
        assert config.parameters[THREADS_PARAMETER].string_value == threads
        model = _load_model_py(repo / "demo" / "1" / "model.py", monkeypatch)
        model.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                          "model_repository": str(repo / "demo"),
                          "model_version": "1"})
        assert model.runtime.session.get_session_options().intra_op_num_threads == int(threads)
        model.finalize()
    with pytest.raises(TritonRepoError, match="--threads sets the python backend's ONNX Runtime threads"):
        write_triton_repo(serving_onnx, tmp_path / "ort", threads=2)


def test_python_backend_refuses_an_engine(tmp_path):
    """(An unknown backend and a GPU kind are in the bad-input catalogue, tests/bad_inputs.)"""
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"x")
    with pytest.raises(TritonRepoError, match="--backend python runs an ONNX model, got 'm.plan'"):
        write_triton_repo(engine, tmp_path / "r", backend="python")


def test_python_backend_without_batch_axis_runs_requests_alone(tmp_path, monkeypatch):
    """An output whose axis 0 is not the batch (torch.nonzero rows): max_batch_size 0, never stacked."""
    model_path = export_rows_model(tmp_path / "rows.onnx")
    repo = write_triton_repo(model_path, tmp_path / "repo", backend="python")
    assert repo.max_batch_size == 0 and any("no dynamic batching" in note for note in repo.notes)
    model = _load_model_py(repo.model_file.parent / "model.py", monkeypatch)
    model.initialize({"model_config": '{"max_batch_size": 0, "output": [{"name": "scores"}, {"name": "rows"}]}',
                      "model_repository": str(repo.root / "rows"), "model_version": "1"})
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 8, 8), dtype=np.float32) for i in range(2)]
    responses = model.execute([{"x": x} for x in inputs])
    session = ort_session(model_path)
    for response, x in zip(responses, inputs):
        want = session.run(None, {"x": x})
        for tensor, expected in zip(response.output_tensors, want):
            np.testing.assert_array_equal(tensor.as_numpy(), expected)


# --------------------------------------------------------------------------------------
# The real tritonserver
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tritonserver(serving_onnx, tmp_path_factory):
    reason = tritonserver_unavailable()
    if reason:
        pytest.skip(f"tritonserver cannot run here: {reason}")
    work = tmp_path_factory.mktemp("tritonserver")
    repo = _python_repo(serving_onnx, work / "repo", "--max-batch-size", "8", "--max-delay-ms", "2")
    server = TritonServer(repo, work)
    try:
        yield server
    finally:
        server.stop()


def test_tritonserver_answers_like_onnx_runtime_under_load(tritonserver, serving_onnx):
    inputs = demo_inputs(REQUESTS, seed=11)
    session = ort_session(serving_onnx)
    expected = [session.run(None, {"x": x})[0] for x in inputs]
    errors: list[str] = []
    wrong: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(thread: int) -> None:
        client = httpclient.InferenceServerClient(tritonserver.address, network_timeout=60)
        try:
            for index in range(thread, REQUESTS, CONCURRENCY):
                tensor = httpclient.InferInput("x", list(INPUT_SHAPE), "FP32")
                tensor.set_data_from_numpy(inputs[index], binary_data=True)
                try:
                    got = client.infer("demo", [tensor]).as_numpy("logits")
                except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                    with lock:
                        errors.append(f"request {index}: {error}")
                    continue
                # a shape mismatch is a wrong answer, recorded: np.abs(got - expected) would raise here and
                # end this thread without a word
                if got is None or got.shape != expected[index].shape:
                    shape = None if got is None else got.shape
                    with lock:
                        wrong.append((index, f"shape {shape}, expected {expected[index].shape}"))
                elif not np.allclose(got, expected[index], **TOLERANCE):
                    with lock:
                        wrong.append((index, f"max difference {float(np.abs(got - expected[index]).max())}"))
        finally:
            client.close()

    run_threads(worker, CONCURRENCY)
    assert errors == [], f"{len(errors)} errors, e.g. {errors[:3]}\n{tritonserver.log()}"
    assert wrong == [], f"{len(wrong)} answers differ from ONNX Runtime: {wrong[:5]}"

    client = httpclient.InferenceServerClient(tritonserver.address)
    try:
        (stats,) = client.get_inference_statistics("demo")["model_stats"]
    finally:
        client.close()
    assert stats["inference_count"] == REQUESTS
    # the dynamic batcher stacked requests: fewer executions of model.py than requests
    assert stats["execution_count"] < REQUESTS, stats
    print(f"tritonserver: {REQUESTS} requests at concurrency {CONCURRENCY}, 0 errors, 0 wrong, "
          f"{stats['execution_count']} executions")
