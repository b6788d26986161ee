"""dcn-deploy serve against a client this project did not write: tritonclient's HTTP client.

The server runs as ``python -m dcn_deploy.cli serve demo.onnx --port 0`` on 127.0.0.1 (the CLI end
to end), on the demo model at 1x3x32x40. Every answer is compared bitwise with the direct
:func:`dcn_deploy.load_runtime` result for the same input. Bad requests are sent raw
(urllib3), since a well-behaved client cannot send most of them. The dynamic batcher is also tested
in-process with a recording runtime, where the batches it forms are deterministic.
"""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
import tritonclient.http as httpclient
import urllib3
from serving import INPUT_SHAPE, ServeProcess, demo_inputs, export_demo, run_threads
from tritonclient.utils import InferenceServerException

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.backends.runtime import InputError, Runtime, TensorSpec
from dcn_deploy.serving.batcher import DynamicBatcher
from dcn_deploy.serving.server import start_server

INPUTS = demo_inputs(8, seed=11)


@pytest.fixture(scope="module")
def expected(serving_onnx):
    with load_runtime(serving_onnx) as runtime:
        return [runtime.run({"x": x})["logits"] for x in INPUTS]


@pytest.fixture(scope="module")
def server(serving_onnx):
    served = ServeProcess(serving_onnx, "--max-batch-size", "8", "--max-delay-ms", "2", "--threads", "1")
    yield served
    assert served.stop(), "".join(served.output)


def client(server, **options):
    return httpclient.InferenceServerClient(server.address, **options)


def infer(connection, x, binary: bool, output_binary: bool | None = None, model: str = "demo"):
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = None if output_binary is None else [httpclient.InferRequestedOutput("logits", binary_data=output_binary)]
    return connection.infer(model, [tensor], outputs=outputs)


def test_health_and_metadata(server):
    connection = client(server)
    assert connection.is_server_live() and connection.is_server_ready()
    assert connection.is_model_ready("demo") and connection.is_model_ready("demo", "1")
    assert not connection.is_model_ready("other")
    metadata = connection.get_server_metadata()
    assert metadata["name"] == "dcn-deploy" and "binary_tensor_data" in metadata["extensions"]
    model = connection.get_model_metadata("demo")
    assert model == {"name": "demo", "versions": ["1"], "platform": "onnxruntime_onnx",
                     "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}],
                     "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 5, -1, -1]}]}
    assert connection.get_model_repository_index() == [{"name": "demo", "version": "1", "state": "READY"}]
    with pytest.raises(InferenceServerException, match="no model 'other'"):
        connection.get_model_metadata("other")
    with pytest.raises(InferenceServerException, match="has no version '2'"):
        connection.get_model_metadata("demo", "2")


@pytest.mark.parametrize("binary_in, binary_out", [(False, False), (True, True), (False, True), (True, None)])
def test_single_inference_equals_the_direct_result(server, expected, binary_in, binary_out):
    result = infer(client(server), INPUTS[0], binary_in, binary_out)
    output = result.get_output("logits")
    assert output["datatype"] == "FP32" and output["shape"] == [1, 5, 8, 10]
    # binary_out None: no outputs named, tritonclient asks for all of them in binary
    assert ("parameters" in output) == (binary_out is not False)
    np.testing.assert_array_equal(result.as_numpy("logits"), expected[0])


def test_a_request_of_several_rows(server, expected):
    result = infer(client(server), np.concatenate(INPUTS[:3]), binary=True)
    np.testing.assert_array_equal(result.as_numpy("logits"), np.concatenate(expected[:3]))


def test_2000_requests_at_concurrency_16(server, expected):
    """16 threads, each its own tritonclient client, 125 requests each over the 8 inputs: zero errors and
    every answer bitwise the direct result of its own input (so stacking and splitting kept rows apart)."""
    problems, answered = [], [0]
    lock = threading.Lock()

    def work(index: int) -> None:
        connection = client(server, network_timeout=120.0)
        try:
            for request in range(125):
                which = (index + request) % len(INPUTS)
                try:
                    got = infer(connection, INPUTS[which], binary=request % 4 != 0, output_binary=request % 3 != 0)
                    ok = np.array_equal(got.as_numpy("logits"), expected[which])
                except Exception as error:  # noqa: BLE001 - counted, the test fails below
                    ok, got = False, error
                with lock:
                    answered[0] += 1
                    if not ok:
                        problems.append((index, request, repr(got)[:200]))
        finally:
            connection.close()

    run_threads(work, 16)
    assert answered[0] == 2000 and problems == []


def raw_post(http, server, body: bytes, headers: dict | None = None, path: str = "/v2/models/demo/infer"):
    return http.request("POST", server.url + path, body=body, headers=headers or {})


def json_body(x=None, **override) -> bytes:
    x = INPUTS[0] if x is None else x
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    tensor.update(override)
    return json.dumps({"inputs": [tensor]}).encode()


def binary_body(x, size=None, extra=b"", header_length=None):
    header = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes if size is None else size}}]}).encode()
    length = len(header) if header_length is None else header_length
    return header + x.tobytes() + extra, {"Inference-Header-Content-Length": str(length)}


BAD_REQUESTS = [
    # (what, body, headers, path, status, words in the error)
    ("not JSON", b"{inputs: nope", None, None, 400, "malformed JSON"),
    ("a JSON list", b"[1, 2]", None, None, 400, "must be a JSON object"),
    ("no inputs", b"{}", None, None, 400, "needs 'inputs'"),
    ("wrong input name", json_body(name="y"), None, None, 400, "no input 'y'; its inputs are ['x']"),
    ("wrong datatype", json_body(datatype="FP64"), None, None, 400, "input 'x' must be FP32, got FP64"),
    ("unknown datatype", json_body(datatype="FLOAT"), None, None, 400, "datatype 'FLOAT' is not supported"),
    ("BYTES", json_body(datatype="BYTES"), None, None, 400, "BYTES (string) tensors are not supported"),
    ("wrong shape", json_body(shape=[1, 4, 32, 30]), None, None, 400,
     "input 'x' has shape [1, 4, 32, 30], the model takes [-1, 3, -1, -1]"),
    ("shape not ints", json_body(shape=[1, "3", 32, 40]), None, None, 400, "'shape' must be a list of non-negative"),
    ("data count", json_body(shape=[1, 3, 32, 41]), None, None, 400, "'data' holds 3840 values, but shape"),
    ("data not numbers", json_body(data=["a"] * 3840), None, None, 400, "'data' is not a list of FP32 numbers"),
    ("binary size off", *binary_body(INPUTS[0], size=100), None, 400, "binary_data_size is 100 bytes"),
    ("binary past the end", binary_body(INPUTS[0])[0][:-8], binary_body(INPUTS[0])[1], None, 400,
     "runs past the end of the body"),
    ("header length not a number", binary_body(INPUTS[0])[0], {"Inference-Header-Content-Length": "ten"}, None, 400,
     "Inference-Header-Content-Length must be an integer"),
    ("header length too long", binary_body(INPUTS[0])[0], {"Inference-Header-Content-Length": "999999"}, None, 400,
     "Inference-Header-Content-Length is 999999"),
    ("bytes left over", *binary_body(INPUTS[0], extra=b"1234"), None, 400, "4 bytes of binary data"),
    ("unknown output", json.dumps({"inputs": json.loads(json_body())["inputs"], "outputs": [{"name": "probs"}]}).encode(),
     None, None, 400, "no output 'probs'"),
    ("unknown model", json_body(), None, "/v2/models/other/infer", 404, "no model 'other'"),
    ("unknown version", json_body(), None, "/v2/models/demo/versions/7/infer", 404, "has no version '7'"),
    ("unknown endpoint", b"{}", None, "/v2/models/demo/explain", 404, "no endpoint POST /v2/models/demo/explain"),
    ("bad gzip", b"not gzip", {"Content-Encoding": "gzip"}, None, 400, "not valid gzip data"),
    ("unknown encoding", b"{}", {"Content-Encoding": "br"}, None, 415, "Content-Encoding 'br' is not supported"),
]


def test_bad_requests_get_4xx_while_good_requests_succeed(server, expected):
    stop, good, wrong = threading.Event(), [0], []

    def keep_asking() -> None:
        connection = client(server)
        try:
            while not stop.is_set() or good[0] < 20:
                got = infer(connection, INPUTS[1], binary=True)
                if np.array_equal(got.as_numpy("logits"), expected[1]):
                    good[0] += 1
                else:
                    wrong.append("wrong answer")
        except Exception as error:  # noqa: BLE001 - fails the test below
            wrong.append(repr(error))
        finally:
            connection.close()

    workers = [threading.Thread(target=keep_asking) for _ in range(3)]
    for worker in workers:
        worker.start()
    http = urllib3.PoolManager()
    answers = {}
    try:
        for _ in range(2):  # twice: the server must still be in shape after the first round
            for what, body, headers, path, status, words in BAD_REQUESTS:
                response = raw_post(http, server, body, headers, path or "/v2/models/demo/infer")
                answers[what] = (response.status, response.data[:300])
                assert response.status == status, (what, response.status, response.data[:300])
                if words is not None:
                    assert response.headers["content-type"].startswith("application/json"), what
                    assert words in json.loads(response.data)["error"], (what, response.data[:300])
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert wrong == [] and good[0] >= 20
    assert client(server).is_server_live()


def test_wrong_datatype_through_tritonclient(server):
    tensor = httpclient.InferInput("x", list(INPUT_SHAPE), "FP64")
    tensor.set_data_from_numpy(INPUTS[0].astype(np.float64))
    with pytest.raises(InferenceServerException) as error:
        client(server).infer("demo", [tensor])
    assert error.value.status() == "400" and "input 'x' must be FP32, got FP64" in error.value.message()


def test_compressed_requests(server, expected):
    result = client(server).infer("demo", [httpclient.InferInput("x", list(INPUT_SHAPE), "FP32").set_data_from_numpy(
        INPUTS[2])], request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("logits"), expected[2])


def test_static_model_runs_requests_one_by_one(tmp_path):
    static = export_demo(tmp_path / "static.onnx", dynamic=False)
    served = ServeProcess(static)
    try:
        assert "runs requests one by one" in "".join(served.output)
        connection = client(served)
        assert connection.get_model_metadata("static")["inputs"][0]["shape"] == list(INPUT_SHAPE)
        with load_runtime(static) as runtime:
            np.testing.assert_array_equal(infer(connection, INPUTS[3], binary=True, model="static").as_numpy("logits"),
                                          runtime.run({"x": INPUTS[3]})["logits"])
        with pytest.raises(InferenceServerException, match=r"the model takes \[1, 3, 32, 40\]"):
            infer(connection, np.concatenate(INPUTS[:2]), binary=True, model="static")
    finally:
        assert served.stop(), "".join(served.output)


def test_serve_argument_errors(tmp_path, serving_onnx):
    from typer.testing import CliRunner

    from dcn_deploy.cli import app

    runner = CliRunner()
    for args, words in ((["serve", str(tmp_path / "nowhere.onnx")], "no model file at"),
                        (["serve", str(serving_onnx), "--backend", "tvm"], "backend must be one of"),
                        (["serve", str(serving_onnx), "--device", "tpu"], "device must be cpu, cuda or auto")):
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output


# ---------------------------------------------------------------------------------------------
# The dynamic batcher, in-process


class RecordingRuntime(Runtime):
    """y = x + row index within the run: stacking is visible in the results, and each run is recorded."""

    backend = "recording"

    def __init__(self, batchable: bool = True, fail_on: float | None = None):
        super().__init__()
        axis0 = -1 if batchable else 1
        # axis 0 named "batch" in and out: proven by the graph, so the batcher stacks without a probe
        self.inputs = [TensorSpec("x", "FP32", (axis0, 2), ("batch", None))]
        self.outputs = [TensorSpec("y", "FP32", (axis0, 2), ("batch", None))]
        self.runs: list[int] = []
        self.fail_on = fail_on

    def _run(self, arrays, output_names):
        x = arrays["x"]
        self.runs.append(x.shape[0])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise InputError("this request's values are refused")
        return {"y": x + np.arange(x.shape[0], dtype=np.float32)[:, None] * 1000}


def run_requests(batcher: DynamicBatcher, values: list[float], rows: int = 1):
    async def main():
        batcher.start()
        try:
            requests = [batcher.infer({"x": np.full((rows, 2), v, np.float32)}, ["y"]) for v in values]
            return await asyncio.gather(*requests, return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_batcher_stacks_up_to_the_limit_and_splits_exactly():
    runtime = RecordingRuntime()
    results = run_requests(DynamicBatcher(runtime, max_batch_size=4, max_delay_ms=1000, workers=1), list(range(8)))
    assert runtime.runs == [4, 4]  # the limit, not the 1 s delay, closed each batch
    for index, result in enumerate(results):
        row = index % 4  # its row in the stacked run
        np.testing.assert_array_equal(result["y"], np.full((1, 2), index + row * 1000, np.float32))


def test_batcher_does_not_stack_a_model_without_a_batch_axis():
    runtime = RecordingRuntime(batchable=False)
    results = run_requests(DynamicBatcher(runtime, max_batch_size=8, max_delay_ms=50, workers=2), [1.0, 2.0, 3.0])
    assert runtime.runs == [1, 1, 1]
    assert [float(r["y"][0, 0]) for r in results] == [1.0, 2.0, 3.0]


def test_batcher_isolates_a_failing_request():
    runtime = RecordingRuntime(fail_on=2.0)
    results = run_requests(DynamicBatcher(runtime, max_batch_size=4, max_delay_ms=1000, workers=1), [1.0, 2.0, 3.0, 4.0])
    assert runtime.runs[0] == 4 and runtime.runs[1:] == [1, 1, 1, 1]  # the stacked run failed: each alone
    assert isinstance(results[1], InputError)
    assert [float(results[i]["y"][0, 0]) for i in (0, 2, 3)] == [1.0, 3.0, 4.0]


def test_in_process_server_and_bench_serve(serving_onnx, tmp_path):
    """start_server (a thread of this process) and `dcn-deploy bench --serve` against it: structure only."""
    from typer.testing import CliRunner

    from dcn_deploy.cli import app

    with load_runtime(serving_onnx, threads=1) as runtime, start_server(runtime, "demo", max_delay_ms=0) as handle:
        report = tmp_path / "serve.json"
        result = CliRunner().invoke(app, ["bench", "--serve", handle.url, "--input-shape", "1x3x32x40", "--requests",
                                          "40", "--concurrency", "1", "--concurrency", "3", "--warmup", "1",
                                          "--json", str(report)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "p99 ms" in result.output
        data = json.loads(report.read_text())
        assert data["model"] == "demo" and data["input_shapes"] == {"x": [1, 3, 32, 40]}
        assert [level["concurrency"] for level in data["levels"]] == [1, 3]
        for level in data["levels"]:
            assert level["ok"] == 40 and level["errors"] == 0 and level["warmup_errors"] == 0
            assert 0 < level["min_ms"] <= level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"] <= level["max_ms"]
            assert level["throughput_rps"] == pytest.approx(40 / level["seconds"])
        assert handle.batcher.requests == 2 * 40 + 1 + 3  # timed requests and one warm-up per thread
        missing = CliRunner().invoke(app, ["bench", "--serve", handle.url], env={"COLUMNS": "200"})
        assert missing.exit_code == 2 and "give --input-shape" in " ".join(missing.output.split())


def test_bench_serve_counts_requests_that_fail_below_http(serving_onnx):
    """The server goes away in the middle of a level: the requests after it fail with connection errors (not HTTP
    answers), and each one is still counted, none lost (ok + errors == requests)."""
    from dcn_deploy.serving.load_test import ServeBenchConfig, run_serve_benchmark

    with load_runtime(serving_onnx, threads=1) as runtime, start_server(runtime, "demo", max_delay_ms=0) as handle:
        def progress(text: str, done: int, total: int) -> None:
            if done == 40:  # warm-up (2) and 38 timed requests done: stop serving, without waiting here
                handle.server.should_exit = True

        config = ServeBenchConfig(handle.url, "demo", (1, 3, 32, 40), concurrency=[2], requests=200, warmup=1,
                                  timeout_s=10.0)
        level = run_serve_benchmark(config, progress)["levels"][0]
    assert level["ok"] + level["errors"] == 200
    assert 30 <= level["ok"] < 200 and level["errors"] > 0 and level["warmup_errors"] == 0, level
    assert not any(text.startswith("[") for text in level["first_errors"]), level  # not HTTP status errors


def test_bench_serve_counts_failed_warm_up_requests_apart(serving_onnx):
    """The server goes away during the warm-up: the failed warm-up requests are counted as warm-up errors, not
    as errors of the level, whose timed requests still add up (ok + errors == requests)."""
    from dcn_deploy.serving.load_test import ServeBenchConfig, run_serve_benchmark

    with load_runtime(serving_onnx, threads=1) as runtime, start_server(runtime, "demo", max_delay_ms=0) as handle:
        def progress(text: str, done: int, total: int) -> None:
            if done == 2:  # 2 of the 2 x 200 warm-up requests done: stop serving (uvicorn sees it within 0.1 s)
                handle.server.should_exit = True

        config = ServeBenchConfig(handle.url, "demo", (1, 3, 32, 40), concurrency=[2], requests=10, warmup=200,
                                  timeout_s=10.0)
        level = run_serve_benchmark(config, progress)["levels"][0]
    assert level["ok"] + level["errors"] == 10, level
    assert 0 < level["warmup_errors"] <= 398 and level["errors"] > 0, level
    assert any(text.startswith("warm-up: ") for text in level["first_errors"]), level
