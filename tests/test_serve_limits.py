"""dcn-deploy serve under abuse and faults: its limits, timeouts, NaN in JSON, shutdown, and a soak.

In-process (:func:`start_server`) with :class:`FaultRuntime`, whose behaviour the request's first
value picks (sleep, raise, hang, NaN), where timing matters; the CLI in a subprocess for the memory,
SIGTERM and soak tests on the demo model. Requests that a well-behaved client cannot send go raw
(a socket or urllib3).
"""
from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
import urllib3
from serving import ServeProcess, demo_inputs, memory_mib, run_threads

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.backends.runtime import Runtime, TensorSpec
from dcn_deploy.serving.limits import DEFAULT_LIMITS, ServeLimits
from dcn_deploy.serving.server import start_server

SLEEP, FAIL, HANG, NON_FINITE = 1.0, 2.0, 3.0, 4.0


class FaultRuntime(Runtime):
    """y = 2x for x of shape (N, K); by x[0, 0]: SLEEP sleeps ``sleep_s``, FAIL raises, HANG waits for
    ``release``, NON_FINITE answers NaN, Inf and -Inf first."""

    backend = "fault"

    def __init__(self, sleep_s: float = 3.0):
        super().__init__()
        self.inputs = [TensorSpec("x", "FP32", (-1, -1), ("batch", None))]
        self.outputs = [TensorSpec("y", "FP32", (-1, -1), ("batch", None))]
        self.sleep_s, self.release = sleep_s, threading.Event()
        self.started = threading.Semaphore(0)  # one release per run that started

    def _run(self, arrays, output_names):
        x = arrays["x"]
        self.started.release()
        first = float(x.flat[0]) if x.size else 0.0
        if first == SLEEP:
            time.sleep(self.sleep_s)
        elif first == FAIL:
            raise RuntimeError("the model fails on this value")
        elif first == HANG:
            self.release.wait()
        y = 2 * x
        if first == NON_FINITE:
            y.flat[:3] = [np.nan, np.inf, -np.inf]
        return {"y": y}


def fault_server(runtime: FaultRuntime, **limits):
    """One run at a time, never stacked: each request meets the model alone."""
    return start_server(runtime, "fault", max_batch_size=1, workers=1, limits=ServeLimits(**limits))


def body(values, shape=None) -> bytes:
    values = np.asarray(values, np.float32)
    shape = list(values.shape) if shape is None else shape
    return json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                   "data": values.ravel().tolist()}]}).encode()


def post(url: str, data: bytes, headers: dict | None = None, timeout: float = 30.0):
    http = urllib3.PoolManager(retries=False, timeout=timeout)
    return http.request("POST", url + "/v2/models/fault/infer", body=data, headers=headers or {})


def error_of(response) -> str:
    assert response.headers["content-type"].startswith("application/json")
    return json.loads(response.data)["error"]


def raw_exchange(url: str, head: bytes, parts: list[bytes] = (), timeout: float = 10.0) -> tuple[int, dict]:
    """Send ``head`` (request line and headers) and ``parts`` on a socket, then read the reply: its
    status and JSON body; a server that never answers fails by the timeout."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        for part in parts:
            sock.sendall(part)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _length(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.partition(b"\r\n\r\n")[2])


def _length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


# --- request size --------------------------------------------------------------------------------

def test_a_content_length_past_the_limit_is_refused_from_the_header():
    """Content-Length: 4000000000 and no body: once the connection just waited for 4 GB."""
    with fault_server(FaultRuntime()) as handle:  # the default limit
        head = (b"POST /v2/models/fault/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4000000000\r\n\r\n")
        status, reply = raw_exchange(handle.url, head)
        assert status == 413
        assert reply["error"] == (f"the body is 4000000000 bytes (Content-Length), more than this server's limit of "
                                  f"{DEFAULT_LIMITS.max_request_bytes} bytes (--max-request-bytes)")
        assert post(handle.url, body([[5.0, 6.0]])).status == 200  # still serving


def test_a_chunked_body_is_cut_at_the_limit():
    with fault_server(FaultRuntime(), max_request_bytes=1000) as handle:
        head = (b"POST /v2/models/fault/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        part = b"258\r\n" + b" " * 600 + b"\r\n"  # two chunks of 600 bytes, no end: the server must not wait for it
        status, reply = raw_exchange(handle.url, head, [part, part])
        assert status == 413 and reply["error"].startswith("the body runs past 1000 bytes")
        small = body([[5.0, 6.0]])
        response = urllib3.PoolManager().request("POST", handle.url + "/v2/models/fault/infer",
                                                 body=iter([small[:10], small[10:]]), chunked=True)
        assert response.status == 200 and json.loads(response.data)["outputs"][0]["data"] == [10.0, 12.0]
        assert handle.stats.too_large == 1


def test_a_body_that_does_not_arrive_gets_408():
    with fault_server(FaultRuntime(), request_timeout_s=0.5) as handle:
        head = (b"POST /v2/models/fault/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n")
        status, reply = raw_exchange(handle.url, head, [b'{"inputs": '])  # 11 of the 100 bytes, then silence
        assert status == 408 and reply["error"] == "the request body did not arrive within the request timeout of 0.5 s"
        assert handle.stats.in_flight == 0 and post(handle.url, body([[5.0, 6.0]])).status == 200


def test_compressed_bodies_are_bounded_once_inflated():
    """A zip bomb (64 MiB of zeros in 64 KiB of gzip) gets 413 after at most the limit is inflated."""
    limit = 1 << 20
    with fault_server(FaultRuntime(), max_request_bytes=limit) as handle:
        bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
        assert len(bomb) < limit
        response = post(handle.url, bomb, {"Content-Encoding": "gzip"})
        assert response.status == 413 and error_of(response) == (
            f"the gzip body inflates past {limit} bytes, more than this server's limit of {limit} bytes "
            f"(--max-request-bytes)")
        deflated = zlib.compress(b" " * (2 * limit))
        response = post(handle.url, deflated, {"Content-Encoding": "deflate"})
        assert response.status == 413 and "deflate body inflates past" in error_of(response)
        good = body([[5.0, 6.0]])
        # two gzip members in a row (allowed by gzip), and deflate, within the limit
        for data, encoding in ((gzip.compress(good[:20]) + gzip.compress(good[20:]), "gzip"),
                               (zlib.compress(good), "deflate")):
            response = post(handle.url, data, {"Content-Encoding": encoding})
            assert response.status == 200, response.data
            assert json.loads(response.data)["outputs"][0]["data"] == [10.0, 12.0]
        response = post(handle.url, gzip.compress(good)[:-12], {"Content-Encoding": "gzip"})
        assert response.status == 400 and "ends before the compressed stream does" in error_of(response)


def test_inputs_past_the_element_limit_are_refused_from_their_declared_shape():
    """No data behind the shape: the refusal must come before anything is allocated for it."""
    with fault_server(FaultRuntime(), max_input_elements=1000) as handle:
        header = json.dumps({"inputs": [{"name": "x", "shape": [3, 4000 * 4000], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 4 * 3 * 4000 * 4000}}]}).encode()
        response = post(handle.url, header, {"Inference-Header-Content-Length": str(len(header))})
        assert response.status == 413
        assert error_of(response) == ("input 'x': shape [3, 16000000] has 48000000 elements, more than this "
                                      "server's limit of 1000 per input (--max-input-elements)")
        response = post(handle.url, body(np.full((10, 100), 5.0)))  # exactly the limit
        assert response.status == 200


def test_stacked_runs_stay_within_the_element_limit():
    import asyncio

    from dcn_deploy.serving.batcher import DynamicBatcher

    runtime = FaultRuntime()
    runs = []
    runtime._run, plain = (lambda arrays, names: runs.append(arrays["x"].shape) or plain(arrays, names)), runtime._run
    batcher = DynamicBatcher(runtime, max_batch_size=8, max_delay_ms=500, workers=1, max_elements=12)

    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.infer({"x": np.full((1, 4), v, np.float32)}, ["y"])
                                          for v in (5, 6, 7, 8, 9)))
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert runs == [(3, 4), (2, 4)]  # 3 x 4 = 12 elements, not 8 rows
    assert [float(r["y"][0, 0]) for r in results] == [10.0, 12.0, 14.0, 16.0, 18.0]


# --- replies ---------------------------------------------------------------------------------------

def strict_json(data: bytes):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(data, parse_constant=refuse)


def test_non_finite_outputs_are_valid_json():
    with fault_server(FaultRuntime()) as handle:
        response = post(handle.url, body([[NON_FINITE, 1.0, 2.0, 3.0]]))
        assert response.status == 200
        assert b"NaN," not in response.data.replace(b'"NaN"', b"")  # no bare literal
        output = strict_json(response.data)["outputs"][0]
        assert output["data"] == ["NaN", "Infinity", "-Infinity", 6.0]
        x = httpclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(
            np.array([[NON_FINITE, 1, 2, 3]], np.float32), binary_data=False)
        for binary in (False, True):
            result = httpclient.InferenceServerClient(handle.url.removeprefix("http://")).infer(
                "fault", [x], outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)])
            np.testing.assert_array_equal(result.as_numpy("y"), np.array([[np.nan, np.inf, -np.inf, 6]], np.float32))


# --- overload, faults, timeouts ------------------------------------------------------------------

def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def in_thread(function, *args) -> tuple[list, threading.Thread]:
    """Start ``function(*args)`` in a thread: (a list that gets its result, the thread)."""
    box = []
    thread = threading.Thread(target=lambda: box.append(function(*args)), daemon=True)
    thread.start()
    return box, thread


def test_past_max_queue_requests_get_503_with_retry_after_at_once():
    runtime = FaultRuntime()
    with fault_server(runtime, max_queue=2) as handle:
        held = [in_thread(post, handle.url, body([[HANG, 0.0]])) for _ in range(2)]
        wait_for(lambda: handle.stats.in_flight == 2)
        started = time.monotonic()
        response = post(handle.url, body([[5.0, 6.0]]))
        assert time.monotonic() - started < 5  # a refusal, not a wait for the runs (which never end unreleased)
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert "the server is busy: 2 requests in progress" in error_of(response)
        runtime.release.set()
        for box, thread in held:
            thread.join(30)
            assert box[0].status == 200
        assert post(handle.url, body([[5.0, 6.0]])).status == 200
        assert handle.stats.busy == 1 and handle.stats.in_flight == 0


def test_a_slow_failing_or_hung_run_fails_its_request_alone():
    """One worker: each stuck run's thread is replaced, so the requests after it are still answered."""
    runtime = FaultRuntime(sleep_s=4.0)
    with fault_server(runtime, request_timeout_s=1.0) as handle:
        pool, http = handle.batcher.pool, urllib3.PoolManager()
        hung = in_thread(post, handle.url, body([[HANG, 0.0]]))
        assert runtime.started.acquire(timeout=10)
        hung[1].join(30)
        assert hung[0][0].status == 504
        assert error_of(hung[0][0]) == "no answer within the request timeout of 1 s (--request-timeout-s)"
        wait_for(lambda: pool.stuck == 1)
        slow = post(handle.url, body([[SLEEP, 0.0]]))
        assert slow.status == 504
        wait_for(lambda: pool.stuck == 2)
        failing = post(handle.url, body([[FAIL, 0.0]]))
        assert failing.status == 500
        assert error_of(failing) == "inference failed: RuntimeError: the model fails on this value"
        # both threads the server started are stuck, and yet:
        for value in (5.0, 6.0, 7.0):
            response = post(handle.url, body([[value, 1.0]]))
            assert response.status == 200 and json.loads(response.data)["outputs"][0]["data"] == [2 * value, 2.0]
        ready = http.request("GET", handle.url + "/v2/health/ready")
        assert ready.status == 503 and json.loads(ready.data)["error"] == (
            "2 model runs passed the request timeout and have not returned")
        runtime.release.set()
        wait_for(lambda: pool.stuck == 0)  # the hung run returns now, the slow one after its 4 s
        assert http.request("GET", handle.url + "/v2/health/ready").status == 200
        assert pool.abandoned == 2 and handle.stats.timed_out == 2 and handle.stats.failed == 1


def test_shutdown_answers_the_requests_in_progress():
    """What SIGTERM does (uvicorn sets should_exit): stop accepting, answer what is in progress, end."""
    runtime = FaultRuntime()
    handle = fault_server(runtime)
    held = in_thread(post, handle.url, body([[HANG, 0.0]]))
    assert runtime.started.acquire(timeout=10)
    stopping = threading.Thread(target=handle.stop)
    stopping.start()
    host, port = handle.url.removeprefix("http://").split(":")

    def refused() -> bool:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return False
        except OSError:
            return True

    wait_for(refused)
    assert handle.thread.is_alive()  # still waiting for the request in progress
    runtime.release.set()
    held[1].join(30)
    stopping.join(30)
    assert held[0][0].status == 200 and json.loads(held[0][0].data)["outputs"][0]["data"] == [6.0, 0.0]
    assert not handle.thread.is_alive()


def test_serve_refuses_bad_limits(serving_onnx):
    from typer.testing import CliRunner

    from dcn_deploy.cli import app

    for args, words in ((["--max-queue", "0"], "--max-queue must be a positive integer, got 0"),
                        (["--request-timeout-s", "0"], "--request-timeout-s must be a positive number"),
                        (["--max-request-bytes", "-5"], "--max-request-bytes must be a positive integer")):
        result = CliRunner().invoke(app, ["serve", str(serving_onnx), *args], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output
    with pytest.raises(ValueError, match="--max-input-elements must be a positive integer"):
        start_server(FaultRuntime(), "fault", limits=ServeLimits(max_input_elements=0))


# --- the CLI on the demo model: memory, SIGTERM, soak ------------------------------------------------

LARGE = (1, 3, 1024, 1024)  # 3.1 M elements, 12 MiB: within the default limits, ~1 s on these 2 cores


def infer_demo(connection, x):
    tensor = httpclient.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x, binary_data=True)
    return connection.infer("demo", [tensor]).as_numpy("logits")


def settled_rss(pid: int, seconds: float = 1.0) -> float:
    """Resident MiB once the reply's background memory release has had time to run."""
    time.sleep(seconds)
    return memory_mib(pid)["VmRSS"]


def test_memory_goes_back_after_a_large_request_and_huge_shapes_are_refused(serving_onnx, report_figure):
    served = ServeProcess(serving_onnx, "--threads", "1")
    try:
        connection = httpclient.InferenceServerClient(served.address, network_timeout=120.0)
        small = demo_inputs(1, seed=3)[0]
        for _ in range(20):
            infer_demo(connection, small)
        before = settled_rss(served.process.pid)
        x = np.random.default_rng(0).standard_normal(LARGE, dtype=np.float32)
        with load_runtime(serving_onnx, threads=1) as runtime:
            want = runtime.run({"x": x})["logits"]
        np.testing.assert_array_equal(infer_demo(connection, x), want)
        peak = memory_mib(served.process.pid)["VmHWM"]
        after = settled_rss(served.process.pid)
        report_figure(f"serve memory: a {'x'.join(map(str, LARGE))} request took RSS {before:.0f} -> peak "
                      f"{peak:.0f} -> {after:.0f} MiB once answered")
        assert peak - before > 40  # the request was large enough to tell
        assert after - before < 0.25 * (peak - before), (before, peak, after)

        # 1x3x4000x4000 (once served in 17 s, leaving 2.1 GB resident): refused from its header alone
        header = json.dumps({"inputs": [{"name": "x", "shape": [1, 3, 4000, 4000], "datatype": "FP32",
                                         "parameters": {"binary_data_size": 4 * 48_000_000}}]}).encode()
        response = urllib3.PoolManager().request("POST", served.url + "/v2/models/demo/infer", body=header,
                                                 headers={"Inference-Header-Content-Length": str(len(header))})
        assert response.status == 413 and json.loads(response.data)["error"] == (
            f"input 'x': shape [1, 3, 4000, 4000] has 48000000 elements, more than this server's limit of "
            f"{DEFAULT_LIMITS.max_input_elements} per input (--max-input-elements)")

        # SIGTERM while a large request runs: it is answered, then the server exits cleanly
        answer = in_thread(infer_demo, httpclient.InferenceServerClient(served.address, network_timeout=120.0), x)
        wait_for(lambda: memory_mib(served.process.pid)["VmRSS"] > before + 20, timeout=30)  # it is running
    finally:
        clean = served.stop()
    answer[1].join(60)
    assert clean, "".join(served.output)
    assert answer[0] and np.array_equal(answer[0][0], want)


SOAK_REQUESTS, SOAK_CLIENTS = 10_000, 16


def test_soak_10000_requests_at_concurrency_16(serving_onnx, report_figure):
    """Every answer compared with the direct run of its input; errors, wrong answers and memory growth
    counted and reported."""
    inputs = demo_inputs(8, seed=29)
    with load_runtime(serving_onnx, threads=1) as runtime:
        expected = [runtime.run({"x": x})["logits"] for x in inputs]
    served = ServeProcess(serving_onnx, "--threads", "1", "--max-delay-ms", "2")
    wrong, errors, done = [], [], [0]
    lock = threading.Lock()

    def work(index: int, count: int) -> None:
        connection = httpclient.InferenceServerClient(served.address, network_timeout=120.0)
        try:
            for request in range(count):
                which = (index + request) % len(inputs)
                try:
                    ok = np.array_equal(infer_demo(connection, inputs[which]), expected[which])
                except Exception as error:  # noqa: BLE001 - counted
                    with lock:
                        errors.append(repr(error)[:200])
                    continue
                with lock:
                    done[0] += 1
                    if not ok:
                        wrong.append((index, request))
        finally:
            connection.close()

    try:
        run_threads(lambda index: work(index, 20), SOAK_CLIENTS)  # warm-up: sessions, threads, allocator
        before = settled_rss(served.process.pid, 0.5)
        done[0] = 0
        started = time.monotonic()
        run_threads(lambda index: work(index, SOAK_REQUESTS // SOAK_CLIENTS), SOAK_CLIENTS)
        seconds = time.monotonic() - started
        after = settled_rss(served.process.pid, 0.5)
    finally:
        clean = served.stop()
    report_figure(f"soak: {SOAK_REQUESTS} requests at concurrency {SOAK_CLIENTS}, {len(wrong)} wrong, {len(errors)} "
                  f"errors, RSS {before:.0f} -> {after:.0f} MiB, {seconds:.0f} s")
    assert clean, "".join(served.output)
    assert errors == [] and wrong == [] and done[0] == SOAK_REQUESTS
    assert after - before < 32, (before, after)
