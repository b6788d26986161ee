"""Requests are stacked only when axis 0 of every output is the batch (dcn_deploy.serving.batch_axis).

The defect this guards against: a model whose output has a dynamic axis 0 that is not the batch
(NMS-style ``(num_selected, k)``, ``torch.nonzero`` rows) was stacked and its outputs cut by request
rows, so concurrent clients got each other's answers without any error.
"""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import text_format
from serving import ServeProcess, export_rows_model, run_threads
from tritonclient.grpc import model_config_pb2

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.backends.runtime import Runtime, TensorSpec
from dcn_deploy.serving.batch_axis import (
    ALONE,
    PROBE,
    STACK,
    batch_axis_from_graph,
    probe_batch_axis,
)
from dcn_deploy.serving.batcher import DynamicBatcher
from dcn_deploy.serving.triton_repo import write_triton_repo

ROWS_SHAPE = (1, 3, 8, 8)


@pytest.fixture(scope="module")
def rows_onnx(tmp_path_factory):
    return export_rows_model(tmp_path_factory.mktemp("rows") / "rows.onnx")


def test_graph_verdicts(serving_onnx, rows_onnx):
    with load_runtime(serving_onnx) as demo:
        verdict = batch_axis_from_graph(demo.inputs, demo.outputs)
        assert verdict.verdict == STACK and "batch axis" in verdict.reason
    with load_runtime(rows_onnx) as rows:
        verdict = batch_axis_from_graph(rows.inputs, rows.outputs)
        assert verdict.verdict == PROBE and verdict.unproven == ("rows",) and "'rows'" in verdict.reason
    fixed = [TensorSpec("x", "FP32", (1, 3))]
    assert batch_axis_from_graph(fixed, fixed).verdict == ALONE
    dynamic = [TensorSpec("x", "FP32", (-1, 3), ("n", None)), TensorSpec("z", "FP32", (-1, 3), ("m", None))]
    assert batch_axis_from_graph(dynamic, dynamic[:1]).verdict == ALONE  # two different batch symbols
    assert batch_axis_from_graph(dynamic[:1], dynamic[:1], max_batch=1).verdict == ALONE


def test_probe_rejects_nonzero_rows_and_accepts_a_row_wise_output(rows_onnx):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(ROWS_SHAPE, dtype=np.float32)
    with load_runtime(rows_onnx) as runtime:
        verdict = probe_batch_axis(runtime.run_checked, {"x": x}, ["rows"])
        assert verdict.verdict == ALONE and "output 'rows'" in verdict.reason and "not the batch" in verdict.reason
        assert probe_batch_axis(runtime.run_checked, {"x": x}, ["scores"]).verdict == STACK


class FunctionRuntime(Runtime):
    """y = function(x) with every axis 0 dynamic and unnamed (as a TensorRT engine reports them)."""

    backend = "function"

    def __init__(self, function):
        super().__init__()
        self.inputs = [TensorSpec("x", "FP32", (-1, 3))]
        self.outputs = [TensorSpec("y", "FP32", (-1, 3))]
        self.function, self.runs = function, []

    def _run(self, arrays, output_names):
        self.runs.append(arrays["x"].shape[0])
        return {"y": self.function(arrays["x"])}


def concurrent(batcher: DynamicBatcher, inputs: list[np.ndarray], waves: int = 2):
    """Send the inputs concurrently, ``waves`` times one after another; all answers in order."""
    async def main():
        batcher.start()
        try:
            answers = []
            for _ in range(waves):
                answers += await asyncio.gather(*(batcher.infer({"x": x}, ["y"]) for x in inputs))
            return answers
        finally:
            await batcher.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("function, stacks", [
    (lambda x: 2 * x + 1, True),                                       # row-wise: stacked after the probe
    (lambda x: x - x.mean(axis=0, keepdims=True), False),              # mixes rows: the probe refuses
    (lambda x: np.argwhere(x > 0).astype(np.float32)[:, :3], False),   # data-dependent axis 0
])
def test_batcher_probes_an_unnamed_batch_axis(function, stacks):
    runtime = FunctionRuntime(function)
    batcher = DynamicBatcher(runtime, max_batch_size=8, max_delay_ms=200, workers=1)
    assert batcher.batch_axis.verdict == PROBE
    inputs = [np.random.default_rng(i).standard_normal((1, 3)).astype(np.float32) for i in range(6)]
    answers = concurrent(batcher, inputs)
    assert batcher.batch_axis.verdict == (STACK if stacks else ALONE), batcher.batch_axis.reason
    for x, got in zip(inputs * 2, answers):
        np.testing.assert_allclose(got["y"], function(x), rtol=1e-6)  # each answer is its own alone
    assert (batcher.batched_requests > 0) == stacks and batcher.probe_runs == 2


def test_nms_style_model_at_concurrency_16_gets_no_wrong_answer(rows_onnx):
    """The issue's trial: default serve settings, 16 tritonclient clients, 400 requests of distinct inputs;
    every answer equal to the request run alone."""
    inputs = [np.random.default_rng(100 + i).standard_normal(ROWS_SHAPE, dtype=np.float32) for i in range(40)]
    with load_runtime(rows_onnx) as runtime:
        expected = [runtime.run({"x": x}) for x in inputs]
    served = ServeProcess(rows_onnx)
    wrong, errors, answered = [], [], [0]
    lock = threading.Lock()

    def work(index: int) -> None:
        connection = httpclient.InferenceServerClient(served.address, network_timeout=120.0)
        try:
            for request in range(25):
                which = (index * 25 + request) % len(inputs)
                tensor = httpclient.InferInput("x", list(ROWS_SHAPE), "FP32")
                tensor.set_data_from_numpy(inputs[which], binary_data=True)
                try:
                    result = connection.infer("rows", [tensor])
                    same = all(np.array_equal(result.as_numpy(name), expected[which][name]) for name in ("scores", "rows"))
                except Exception as error:  # noqa: BLE001 - counted, the test fails below
                    with lock:
                        errors.append(repr(error)[:200])
                    continue
                with lock:
                    answered[0] += 1
                    if not same:
                        wrong.append(which)
        finally:
            connection.close()

    try:
        run_threads(work, 16)
    finally:
        assert served.stop(), "".join(served.output)
    assert errors == [] and answered[0] == 400 and wrong == [], (len(wrong), errors[:3])
    output = "".join(served.output)
    assert "once a probe on the first request confirms the batch axis" in output  # at start-up
    assert "batching: runs requests one by one: output 'rows'" in output      # after the probe


def parse_config(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_does_not_batch_a_rows_output(rows_onnx, tmp_path):
    repo = write_triton_repo(rows_onnx, tmp_path / "repo")
    config = parse_config(repo.config)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert any("'rows'" in note and "max_batch_size 0" in note for note in repo.notes), repo.notes


def test_triton_repository_probes_an_unnamed_batch_axis(serving_onnx, tmp_path):
    """The demo model with its output's batch symbol removed: the graph cannot tell, the probe at the
    recorded input shape shows axis 0 follows the batch, so Triton may batch it."""
    import onnx

    model = onnx.load(str(serving_onnx))
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "unrelated"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))
    repo = write_triton_repo(renamed, tmp_path / "repo")
    assert parse_config(repo.config).max_batch_size == 8, repo.notes
    del model.metadata_props[:]  # no recorded input shape: nothing to probe with
    onnx.save(model, str(renamed))
    repo = write_triton_repo(renamed, tmp_path / "repo", force=True)
    assert parse_config(repo.config).max_batch_size == 0
    assert any("records no input shape" in note for note in repo.notes), repo.notes
