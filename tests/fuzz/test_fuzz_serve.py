"""Random request bodies against ``dcn-deploy serve`` (in-process, the demo model): every one is answered,
never with a 5xx, and never by a dropped connection; a good request still succeeds afterwards."""
from __future__ import annotations

import gzip
import http.client
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from serving import INPUT_SHAPE

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.serving.server import start_server

pytestmark = [pytest.mark.fuzz, pytest.mark.custom_op]

X = np.random.default_rng(1).standard_normal(INPUT_SHAPE, dtype=np.float32)
GOOD = {"name": "x", "shape": list(INPUT_SHAPE), "datatype": "FP32", "data": X.ravel().tolist()}


@pytest.fixture(scope="module")
def address(serving_onnx):
    with load_runtime(serving_onnx, threads=1) as runtime, start_server(runtime, "demo", max_delay_ms=0) as handle:
        host, port = handle.url.removeprefix("http://").split(":")
        yield host, int(port)


def _post(address, body: bytes, headers: dict) -> tuple[int, bytes]:
    """The status and body; a dropped connection raises (http.client.RemoteDisconnected and the like)."""
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        connection.request("POST", "/v2/models/demo/infer", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)

# Fields of an input entry, each either valid-looking or random.
entries = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["x", "y", ""]) | json_values,
    "shape": st.lists(st.integers(-2, 70), max_size=5) | st.just(list(INPUT_SHAPE)) | json_values,
    "datatype": st.sampled_from(["FP32", "FP16", "INT8", "BYTES", "BOOL", "fp32"]) | json_values,
    "data": st.lists(st.floats(width=32) | st.integers(-300, 300), max_size=64) | st.just(GOOD["data"]) | json_values,
    "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-5, 20000) | json_values})
    | json_values,
})
requests = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(entries, max_size=3) | json_values,
    "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["logits", "nope"]) | json_values},
                                              optional={"parameters": json_values}), max_size=2) | json_values,
    "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": json_values}) | json_values,
    "id": json_values,
})


@st.composite
def bodies(draw) -> tuple[bytes, dict]:
    """A request body and its headers: random JSON of the protocol's shape, maybe with binary data and an
    Inference-Header-Content-Length (honest or not), maybe compressed (or claiming to be), or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256)), {}
    header = json.dumps(draw(requests)).encode()
    headers = {}
    body = header
    if draw(st.booleans()):
        body = header + draw(st.binary(max_size=64) | st.just(X.tobytes()))
        length = draw(st.sampled_from([len(header), len(body), 0, len(body) + 1]) | st.integers(-5, 10**6))
        headers["Inference-Header-Content-Length"] = str(length)
    encoding = draw(st.sampled_from([None, None, "gzip", "gzip-lie", "deflate", "identity", "zstd"]))
    if encoding == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding == "gzip-lie":
        headers["Content-Encoding"] = "gzip"
    elif encoding is not None:
        headers["Content-Encoding"] = encoding
    return body, headers


@given(bodies())
def test_random_request_bodies_never_get_a_5xx(address, request_body):
    body, headers = request_body
    status, answer = _post(address, body, headers)
    assert status < 500, (status, answer)
    if status >= 400:
        assert "error" in json.loads(answer), answer


def test_good_request_after_the_fuzzing(address):
    status, answer = _post(address, json.dumps({"inputs": [GOOD]}).encode(), {})
    assert status == 200, answer
