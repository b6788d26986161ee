"""Bad requests to ``dcn-deploy serve`` (in-process, the demo model): a 4xx with ``{"error": ...}`` naming
what is wrong, never a 5xx, no exception in the server's log; after each one a good request still succeeds."""
from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import socket

import numpy as np
import pytest
from serving import INPUT_SHAPE

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.serving.server import start_server

pytestmark = pytest.mark.custom_op

X = np.random.default_rng(0).standard_normal(INPUT_SHAPE, dtype=np.float32)
GOOD = {"name": "x", "shape": list(INPUT_SHAPE), "datatype": "FP32", "data": X.ravel().tolist()}
HEADER = json.dumps({"inputs": [{"name": "x", "shape": list(INPUT_SHAPE), "datatype": "FP32",
                                 "parameters": {"binary_data_size": X.nbytes}}]}).encode()
BINARY = {"Inference-Header-Content-Length": str(len(HEADER))}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def server(serving_onnx):
    records = _Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(records)
    with load_runtime(serving_onnx, threads=1) as runtime, start_server(runtime, "demo", max_delay_ms=0) as handle:
        host, port = handle.url.removeprefix("http://").split(":")
        yield host, int(port), records
    logger.removeHandler(records)


def _post(server, body: bytes, headers=None, path="/v2/models/demo/infer", method="POST"):
    host, port, _ = server
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _inputs(**change) -> bytes:
    return _json({"inputs": [dict(GOOD, **change)]})


# (id, body, headers, path, status, message)
CASES = [
    ("malformed_json", b"{not json", None, None, 400, "malformed JSON in the request: Expecting property name"),
    ("json_array_body", b"[1, 2]", None, None, 400, "the request must be a JSON object, got list"),
    ("json_nested_too_deeply", b"[" * 100000 + b"]" * 100000, None, None, 400, "the request is JSON nested too deeply"),
    ("no_inputs", _json({}), None, None, 400, "the request needs 'inputs': a non-empty list of tensors"),
    ("inputs_not_a_list", _json({"inputs": "x"}), None, None, 400, "the request needs 'inputs'"),
    ("input_not_an_object", _json({"inputs": [3]}), None, None, 400, "inputs\\[0\\] must be a JSON object"),
    ("input_without_name", _json({"inputs": [{"shape": [1]}]}), None, None, 400, "inputs\\[0\\] has no 'name' string"),
    ("unknown_input", _inputs(name="nope"), None, None, 400, "the model has no input 'nope'; its inputs are \\['x'\\]"),
    ("too_many_inputs", _json({"inputs": [GOOD, dict(GOOD, name="extra")]}), None, None, 400, "the model has no input 'extra'"),
    ("input_twice", _json({"inputs": [GOOD, GOOD]}), None, None, 400, "input 'x' is given twice"),
    ("wrong_datatype", _inputs(datatype="INT64"), None, None, 400, "input 'x' must be FP32, got INT64"),
    ("unknown_datatype", _inputs(datatype="FP99"), None, None, 400, "datatype 'FP99' is not supported"),
    ("bytes_datatype", _inputs(datatype="BYTES"), None, None, 400, "BYTES \\(string\\) tensors are not supported"),
    ("datatype_not_a_string", _inputs(datatype=32), None, None, 400, "'datatype' must be a string"),
    ("wrong_rank", _inputs(shape=[3, 32, 40]), None, None, 400, "input 'x' has shape \\[3, 32, 40\\], the model takes \\[-1, 3, -1, -1\\]"),
    ("wrong_channels", _inputs(shape=[1, 4, 32, 30]), None, None, 400, "the model takes \\[-1, 3, -1, -1\\]"),
    ("negative_dimension", _inputs(shape=[1, 3, -32, 40]), None, None, 400, "'shape' must be a list of non-negative integers"),
    ("shape_overflows_int64", _inputs(shape=[1 << 40, 3, 1 << 20, 1 << 20], data=[]), None, None, 413,
     "has 3626777458843887524118528 elements, more than this server's limit"),
    ("data_count", _inputs(data=[1.0, 2.0]), None, None, 400, "'data' holds 2 values, but shape \\[1, 3, 32, 40\\] takes 3840"),
    ("data_strings", _inputs(data=["a"] * X.size), None, None, 400, "'data' is not a list of FP32 numbers"),
    ("data_ragged", _inputs(data=[[1.0], [1.0, 2.0]]), None, None, 400, "'data' is not a list of FP32 numbers"),
    ("data_and_binary", _inputs(parameters={"binary_data_size": 4}), None, None, 400, "has both 'data' and binary_data_size"),
    ("image_too_small_for_model", _inputs(shape=[1, 3, 1, 1], data=[0.0] * 3), None, None, 400, "the model rejected the inputs: .*Invalid input shape"),
    ("binary_too_short", HEADER + X.tobytes()[:-4], BINARY, None, 400, "binary_data_size 15360 runs past the end of the body"),
    ("binary_too_long", HEADER + X.tobytes() + b"1234", BINARY, None, 400, "the body has 4 bytes of binary data that no input's binary_data_size accounts for"),
    ("binary_size_vs_shape", HEADER.replace(b"15360", b"7") + b"\0" * 7, {"Inference-Header-Content-Length": str(len(HEADER) - 4)}, None, 400,
     "binary_data_size is 7 bytes, but shape \\[1, 3, 32, 40\\] of FP32 takes 15360"),
    ("header_length_past_body", HEADER + X.tobytes(), {"Inference-Header-Content-Length": "1000000"}, None, 400, "Inference-Header-Content-Length is 1000000, but the body has"),
    ("header_length_negative", HEADER + X.tobytes(), {"Inference-Header-Content-Length": "-5"}, None, 400, "Inference-Header-Content-Length is -5"),
    ("header_length_text", HEADER + X.tobytes(), {"Inference-Header-Content-Length": "abc"}, None, 400, "Inference-Header-Content-Length must be an integer, got 'abc'"),
    ("binary_without_header", X.tobytes(), None, None, 400, "malformed JSON in the request"),
    ("gzip_not_gzip", b"not gzip", {"Content-Encoding": "gzip"}, None, 400, "the body is not valid gzip data"),
    ("deflate_not_deflate", b"not deflate", {"Content-Encoding": "deflate"}, None, 400, "the body is not valid deflate data"),
    ("unknown_encoding", _json({"inputs": [GOOD]}), {"Content-Encoding": "br"}, None, 415, "Content-Encoding 'br' is not supported"),
    ("unknown_model", _json({"inputs": [GOOD]}), None, "/v2/models/other/infer", 404, "no model 'other'; this server serves 'demo'"),
    ("unknown_version", _json({"inputs": [GOOD]}), None, "/v2/models/demo/versions/7/infer", 404, "model 'demo' has no version '7'"),
    ("unknown_output", _json({"inputs": [GOOD], "outputs": [{"name": "nope"}]}), None, None, 400, "the model has no output 'nope'"),
    ("outputs_not_a_list", _json({"inputs": [GOOD], "outputs": "x"}), None, None, 400, "'outputs' must be a list"),
    ("parameters_not_an_object", _json({"inputs": [GOOD], "parameters": [1]}), None, None, 400, "'parameters' must be a JSON object"),
    ("shared_memory", _inputs(parameters={"shared_memory_region": "r"}), None, None, 400, "the shared-memory extension is not supported"),
    ("classification", _json({"inputs": [GOOD], "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}), None, None, 400,
     "the classification extension is not supported"),
    ("unknown_endpoint", b"", None, "/v2/models/demo/train", 404, "no endpoint POST /v2/models/demo/train"),
]


# GET on the model's other endpoints: (id, path, status, message)
GETS = [
    ("metadata_unknown_model", "/v2/models/other", 404, "no model 'other'; this server serves 'demo'"),
    ("metadata_unknown_version", "/v2/models/demo/versions/2", 404, "model 'demo' has no version '2'"),
    ("ready_unknown_model", "/v2/models/other/ready", 404, "no model 'other'"),
    ("ready_unknown_version", "/v2/models/demo/versions/0/ready", 404, "model 'demo' has no version '0'"),
    ("infer_by_get", "/v2/models/demo/infer", 405, "GET is not allowed on /v2/models/demo/infer"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("bad", GETS, ids=lambda b: b[0])
def test_server_rejects_bad_get(bad, server):
    _, path, status, message = bad
    got, answer = _post(server, b"", path=path, method="GET")
    assert got == status, answer
    assert re.search(message, json.loads(answer)["error"]), answer
    _good_request_succeeds(server)


def _good_request_succeeds(server):
    status, body = _post(server, _json({"inputs": [GOOD]}))
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["shape"][:2] == [1, 5]


@pytest.mark.bad_input
@pytest.mark.parametrize("bad", CASES, ids=lambda b: b[0])
def test_server_rejects_bad_request(bad, server):
    _, body, headers, path, status, message = bad
    got, answer = _post(server, body, headers, path or "/v2/models/demo/infer")
    assert got == status, answer
    assert re.search(message, json.loads(answer)["error"]), answer
    _good_request_succeeds(server)
    assert not server[2].records, [r.getMessage() for r in server[2].records]


def _raw(server, payload: bytes) -> bytes:
    """Send ``payload`` as is, close our sending side, read what comes back."""
    host, port, _ = server
    with socket.create_connection((host, port), timeout=60) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


BODY = _json({"inputs": [GOOD]})
REQUEST = b"POST /v2/models/demo/infer HTTP/1.1\r\nHost: test\r\nContent-Length: %s\r\n\r\n"
# Content-Length that does not match the body: (id, payload, the status line that comes back, or None
# when the body ends before its length: the client has gone, nothing to answer)
LYING = [
    # the bytes after the declared length are a malformed pipelined request: uvicorn may close the
    # connection before the 400 for the first one is written
    ("content_length_too_small", REQUEST % b"10" + BODY, None),
    ("content_length_too_large", REQUEST % str(len(BODY) + 100).encode() + BODY, None),
    ("content_length_negative", REQUEST % b"-1" + BODY, b"HTTP/1.1 400 "),
    ("content_length_text", REQUEST % b"abc" + BODY, b"HTTP/1.1 400 "),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("bad", LYING, ids=lambda b: b[0])
def test_server_survives_lying_content_length(bad, server):
    _, payload, status_line = bad
    answer = _raw(server, payload)
    if status_line is None:
        assert not answer.startswith(b"HTTP/1.1 200"), answer
    else:
        assert answer.startswith(status_line), answer
    _good_request_succeeds(server)
    logged = [r.getMessage() for r in server[2].records if "Exception in ASGI application" in r.getMessage()]
    assert not logged, logged
    server[2].records.clear()  # uvicorn's "Invalid HTTP request received." warning is expected here


def test_gzip_body_is_accepted(server):
    """The encodings that are supported work (the cases above are rejections, not a broken decoder)."""
    status, body = _post(server, gzip.compress(BODY), {"Content-Encoding": "gzip"})
    assert status == 200, body
