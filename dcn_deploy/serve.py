"""``dcn-deploy serve``: the KServe v2 (Open Inference Protocol) HTTP/REST API over a :class:`Runtime`.

Endpoints (the protocol's, as NVIDIA Triton Inference Server answers them, so that a client moves
between the two unchanged)::

    GET  /v2/health/live, /v2/health/ready                  200 while up / once the model is loaded
    GET  /v2                                                server metadata (name, version, extensions)
    GET  /v2/models/{model}[/versions/{v}]                  model metadata (inputs, outputs, -1 = dynamic)
    GET  /v2/models/{model}[/versions/{v}]/ready            200 / 404
    POST /v2/models/{model}[/versions/{v}]/infer            inference
    POST /v2/repository/index                               the model's name (Triton's repository extension)

Inference takes tensors as JSON (``"data"``: a flat or nested row-major list) or through the binary
tensor data extension: the body is the JSON header (``Inference-Header-Content-Length`` bytes) followed
by each input's raw little-endian bytes in order (``"parameters": {"binary_data_size": n}``). Outputs
come back as JSON unless the request asks ``"binary_data": true`` per output or
``"binary_data_output": true`` for all; then they follow the JSON header the same way. A request
with a ``Content-Encoding`` of gzip or deflate is decompressed first. Every error is answered
``{"error": "..."}`` with a 4xx status for the client's mistakes (400: malformed body, wrong input
name, datatype or shape; 404: no such model or version) and 500 for a failure of the model run; the
server keeps serving.

Dynamic batching (:class:`DynamicBatcher`): when axis 0 of every output is the batch axis (proven by
the graph's shapes, or by a probe on the first request where the graph cannot tell:
:mod:`dcn_deploy.batch_axis`), concurrent requests whose other axes and datatypes agree are stacked
along axis 0 into one run of at most ``max_batch_size`` rows, waiting at most ``max_delay_ms`` for more
after the first, and the outputs are split back by rows; otherwise requests run one each, up to
``workers`` at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .batch_axis import ALONE, PROBE, STACK, BatchAxis, batch_axis_from_graph, probe_batch_axis
from .runtime import InputError, Runtime, TensorSpec, numpy_dtype

__all__ = ["BadRequest", "DynamicBatcher", "ServerHandle", "build_app", "parse_infer_request", "serve",
           "start_server", "SERVER_NAME", "MODEL_VERSION"]

LOG = logging.getLogger("dcn_deploy.serve")
SERVER_NAME = "dcn-deploy"
MODEL_VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]


class BadRequest(ValueError):
    """The client's request is wrong; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Dynamic batching


@dataclass
class _Pending:
    arrays: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    outputs: list[str] = field(default_factory=list)


class DynamicBatcher:
    """Runs requests on ``runtime`` from an asyncio server, stacking concurrent ones along axis 0.

    ``await batcher.infer(arrays, output_names)`` returns that request's outputs, what ``runtime.run``
    returns for it alone. Requests are stacked only while ``batch_axis`` says ``stack``: from the graph,
    or, when it says ``probe``, after the first request small enough to probe with (run alone as
    usual, then checked by :func:`~dcn_deploy.batch_axis.probe_batch_axis`); until then, and for good
    when the probe fails, requests run alone. ``workers`` threads run batches; while they are busy,
    new requests queue and make up the next batches. Counters: ``runs``, ``requests``,
    ``batched_requests`` (requests that shared a run), ``probe_runs``.
    """

    def __init__(self, runtime: Runtime, max_batch_size: int = 8, max_delay_ms: float = 1.0, workers: int = 2):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.runtime = runtime
        limit = runtime.max_batch if runtime.max_batch is not None else max_batch_size
        self.max_batch_size = min(max_batch_size, limit)
        self.batch_axis: BatchAxis = batch_axis_from_graph(runtime.inputs, runtime.outputs, runtime.max_batch)
        if self.max_batch_size <= 1 and self.batch_axis.verdict != ALONE:
            self.batch_axis = BatchAxis(ALONE, f"max batch size {self.max_batch_size}")
        self.max_delay = max_delay_ms / 1000.0
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dcn-deploy-run")
        self.runs = self.requests = self.batched_requests = self.probe_runs = 0
        self._probing = False
        self._queue: asyncio.Queue | None = None
        self._held: deque[_Pending] = deque()  # taken from the queue but not fitting the batch it met
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start the batching tasks on the running event loop."""
        self._queue = asyncio.Queue()
        if self.batch_axis.verdict in (STACK, PROBE):
            self._tasks = [asyncio.get_running_loop().create_task(self._batch_loop()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.executor.shutdown(wait=True)

    def describe(self) -> str:
        """How requests are run, in words (the reason included)."""
        how = {STACK: "stacks requests", PROBE: "stacks requests once a probe on the first request confirms the "
               "batch axis", ALONE: "runs requests one by one"}[self.batch_axis.verdict]
        return f"{how}: {self.batch_axis.reason}"

    def _stack_key(self, arrays: dict[str, np.ndarray]) -> tuple:
        return tuple((name, array.dtype.str, array.shape[1:]) for name, array in arrays.items())

    async def infer(self, arrays: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """The outputs of one request whose inputs :meth:`Runtime.check_inputs` has accepted."""
        self.requests += 1
        loop = asyncio.get_running_loop()
        rows = next(iter(arrays.values())).shape[0] if arrays else 0
        if self.batch_axis.verdict == PROBE and not self._probing and 0 < 2 * rows <= self.max_batch_size:
            return await self._answer_and_probe(arrays, output_names)
        if not self.batch_axis.stack or rows >= self.max_batch_size or rows == 0:
            self.runs += 1
            return await loop.run_in_executor(self.executor, self.runtime.run_checked, arrays, output_names)
        future = loop.create_future()
        await self._queue.put(_Pending(arrays, rows, self._stack_key(arrays), future, output_names))
        return await future

    async def _answer_and_probe(self, arrays: dict[str, np.ndarray], output_names: list[str]
                                ) -> dict[str, np.ndarray]:
        """Run this request alone (its answer), then probe the batch axis with its inputs; one probe at a
        time, the other requests meanwhile run alone."""
        loop = asyncio.get_running_loop()
        self._probing = True
        try:
            names = list(dict.fromkeys([*output_names, *self.batch_axis.unproven]))
            self.runs += 1
            alone = await loop.run_in_executor(self.executor, self.runtime.run_checked, arrays, names)
            try:
                verdict = await loop.run_in_executor(self.executor, probe_batch_axis, self.runtime.run_checked,
                                                     arrays, self.batch_axis.unproven, alone)
            except Exception as error:  # noqa: BLE001 - the model failed on the varied input: do not stack
                verdict = BatchAxis(ALONE, f"the batch-axis probe failed ({type(error).__name__}: {error})")
            self.probe_runs += 2
            self.batch_axis = verdict
            # a refusal is worth the operator's attention: the server runs slower than configured
            (LOG.info if verdict.stack else LOG.warning)("batching: %s", self.describe())
            return {name: alone[name] for name in output_names}
        finally:
            self._probing = False

    async def _next(self) -> _Pending:
        if self._held:
            return self._held.popleft()
        return await self._queue.get()

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next()
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_delay
            while rows < self.max_batch_size:
                if self._held:
                    candidate = self._held.popleft()
                else:
                    remaining = deadline - loop.time()
                    try:
                        if remaining > 0:
                            candidate = await asyncio.wait_for(self._queue.get(), remaining)
                        else:
                            candidate = self._queue.get_nowait()
                    except (asyncio.TimeoutError, asyncio.QueueEmpty):
                        break
                if candidate.key != first.key or rows + candidate.rows > self.max_batch_size:
                    self._held.appendleft(candidate)  # first in line for the next batch
                    break
                batch.append(candidate)
                rows += candidate.rows
            try:
                await self._run_batch(batch)
            except Exception as error:  # noqa: BLE001 - answer the batch's callers, keep batching
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        batch = [p for p in batch if not p.future.done()]  # a client that went away was cancelled
        if not batch:
            return
        names = list(dict.fromkeys(n for p in batch for n in p.outputs))
        self.runs += 1
        if len(batch) == 1:
            results = [await self._run_one(batch[0])]
        else:
            try:
                stacked = {name: np.concatenate([p.arrays[name] for p in batch]) for name in batch[0].arrays}
                outputs = await loop.run_in_executor(self.executor, self.runtime.run_checked, stacked, names)
                results = self._split(batch, outputs)
            except Exception:  # noqa: BLE001 - one request's failure must not fail the others: run each alone
                results = None
            if results is None:
                results = [await self._run_one(p) for p in batch]
            else:
                self.batched_requests += len(batch)
        for pending, result in zip(batch, results):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result({n: result[n] for n in pending.outputs})

    async def _run_one(self, pending: _Pending):
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, self.runtime.run_checked, pending.arrays, pending.outputs)
        except Exception as error:  # noqa: BLE001 - handed to that request's caller
            return error

    @staticmethod
    def _split(batch: list[_Pending], outputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]] | None:
        """Each request's rows of the stacked outputs; None when an output's axis 0 is not the rows'
        sum (a model that does not keep rows apart: run the requests one by one instead)."""
        total = sum(p.rows for p in batch)
        if any(value.ndim == 0 or value.shape[0] != total for value in outputs.values()):
            return None
        results, start = [], 0
        for pending in batch:
            stop = start + pending.rows
            results.append({name: value[start:stop] for name, value in outputs.items()})
            start = stop
        return results


# --------------------------------------------------------------------------------------------
# The protocol's request and response bodies


@dataclass
class InferRequest:
    id: str | None
    arrays: dict[str, np.ndarray]
    outputs: list[str]
    binary_outputs: set[str]


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"malformed JSON in the {what}: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the {what} must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(entry: dict, where: str) -> dict:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be a JSON object")
    if "shared_memory_region" in parameters:
        raise BadRequest(f"{where}: the shared-memory extension is not supported by this server")
    return parameters


def _input_array(entry: Any, index: int, binary: memoryview, offset: int, runtime: Runtime
                 ) -> tuple[str, np.ndarray, int]:
    """One request input as an array (its datatype and shape checked against the model), and the
    offset after its binary data."""
    if not isinstance(entry, dict):
        raise BadRequest(f"inputs[{index}] must be a JSON object with name, shape, datatype and data")
    name = entry.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{index}] has no 'name' string")
    where = f"input '{name}'"
    spec: TensorSpec = runtime.input_spec(name)
    shape, datatype = entry.get("shape"), entry.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {json.dumps(shape)}")
    if not isinstance(datatype, str):
        raise BadRequest(f"{where}: 'datatype' must be a string such as \"FP32\", got {json.dumps(datatype)}")
    if datatype == "BYTES":
        raise BadRequest(f"{where}: BYTES (string) tensors are not supported; the model takes {spec.datatype}")
    dtype = numpy_dtype(datatype)
    if datatype != spec.datatype:
        raise BadRequest(f"{where} must be {spec.datatype}, got {datatype}")
    count = int(np.prod(shape, dtype=np.int64))
    parameters = _parameters(entry, where)
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in entry:
            raise BadRequest(f"{where} has both 'data' and binary_data_size: send one")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{where}: binary_data_size must be a non-negative integer, got {json.dumps(size)}")
        if size != count * dtype.itemsize:
            raise BadRequest(f"{where}: binary_data_size is {size} bytes, but shape {shape} of {datatype} takes "
                             f"{count * dtype.itemsize}")
        if offset + size > len(binary):
            raise BadRequest(f"{where}: binary_data_size {size} runs past the end of the body "
                             f"({len(binary) - offset} bytes left after the JSON header)")
        array = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
        return name, array.reshape(shape), offset + size
    if "data" not in entry:
        raise BadRequest(f"{where} has neither 'data' nor parameters.binary_data_size")
    try:
        array = np.asarray(entry["data"], dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise BadRequest(f"{where}: 'data' is not a list of {datatype} numbers ({error})") from None
    if array.size != count:
        raise BadRequest(f"{where}: 'data' holds {array.size} values, but shape {shape} takes {count}")
    return name, array.reshape(shape), offset


def parse_infer_request(body: bytes, header_length: str | None, runtime: Runtime) -> InferRequest:
    """An inference request body (and its ``Inference-Header-Content-Length``) as checked arrays.

    Raises :class:`BadRequest` naming what is wrong; the arrays have passed
    :meth:`Runtime.check_inputs` (names, datatypes, ranks, fixed sizes)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got '{header_length}'") from None
        if not 0 <= length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]
    else:
        header, binary = body, memoryview(b"")
    request = _json_object(header, "request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the request needs 'inputs': a non-empty list of tensors")
    request_parameters = _parameters(request, "the request")
    arrays, offset = {}, 0
    for index, entry in enumerate(inputs):
        name, array, offset = _input_array(entry, index, binary, offset, runtime)
        if name in arrays:
            raise BadRequest(f"input '{name}' is given twice")
        arrays[name] = array
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes of binary data that no input's "
                         f"binary_data_size accounts for")
    checked, _ = runtime.check_inputs(arrays)
    rows = {array.shape[0] for array in checked.values() if array.ndim}
    if runtime.batchable and len(rows) > 1:
        raise BadRequest(f"the inputs disagree on the batch size (axis 0): {sorted(rows)}")

    all_binary = bool(request_parameters.get("binary_data_output", False))
    wanted = request.get("outputs")
    if wanted is None:
        names = [s.name for s in runtime.outputs]
        binary_outputs = set(names) if all_binary else set()
    else:
        if not isinstance(wanted, list):
            raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
        names, binary_outputs = [], set()
        for index, entry in enumerate(wanted):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise BadRequest(f"outputs[{index}] must be a JSON object with a 'name' string")
            name = runtime.output_spec(entry["name"]).name
            parameters = _parameters(entry, f"output '{name}'")
            if "classification" in parameters:
                raise BadRequest(f"output '{name}': the classification extension is not supported by this server")
            names.append(name)
            if parameters.get("binary_data", all_binary):
                binary_outputs.add(name)
    request_id = request.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, checked, names, binary_outputs)


def infer_response(model_name: str, request: InferRequest, results: dict[str, np.ndarray]
                   ) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs, chunks = [], []
    for name in request.outputs:
        array = np.ascontiguousarray(results[name])
        entry = {"name": name, "datatype": _datatype(array), "shape": list(array.shape)}
        if name in request.binary_outputs:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    response = {"model_name": model_name, "model_version": MODEL_VERSION, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _datatype(array: np.ndarray) -> str:
    from .runtime import datatype_of

    return datatype_of(array.dtype)


def _decoded_body(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as error:
        raise BadRequest(f"the body is not valid {encoding} data: {error}") from None
    raise BadRequest(f"Content-Encoding '{encoding}' is not supported (gzip, deflate or none)", status=415)


# --------------------------------------------------------------------------------------------
# The ASGI app


def build_app(runtime: Runtime, model_name: str, batcher: DynamicBatcher, platform: str | None = None):
    """The Starlette app of the protocol for one model (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from . import __version__

    platform = platform or ("onnxruntime_onnx" if runtime.backend.startswith("onnxruntime") else "tensorrt_plan")

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def find_model(request: Request) -> None:
        name = request.path_params["model"]
        if name != model_name:
            raise BadRequest(f"no model '{name}'; this server serves '{model_name}'", status=404)
        version = request.path_params.get("version")
        if version is not None and version != MODEL_VERSION:
            raise BadRequest(f"model '{model_name}' has no version '{version}'; its versions are "
                             f"['{MODEL_VERSION}']", status=404)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def repository_index(request: Request) -> Response:
        # Triton's model repository extension, read-only: lets a client find the model's name
        return JSONResponse([{"name": model_name, "version": MODEL_VERSION, "state": "READY"}])

    async def model_metadata(request: Request) -> Response:
        try:
            find_model(request)
        except BadRequest as problem:
            return error(str(problem), problem.status)
        return JSONResponse({
            "name": model_name, "versions": [MODEL_VERSION], "platform": platform,
            "inputs": [s.to_dict() for s in runtime.inputs], "outputs": [s.to_dict() for s in runtime.outputs],
        })

    async def model_ready(request: Request) -> Response:
        try:
            find_model(request)
        except BadRequest as problem:
            return error(str(problem), problem.status)
        return JSONResponse({"name": model_name, "ready": True})

    async def infer(request: Request) -> Response:
        try:
            find_model(request)
            body = _decoded_body(await request.body(), request.headers.get("content-encoding"))
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH.lower()), runtime)
        except (BadRequest, InputError) as problem:
            return error(str(problem), getattr(problem, "status", 400))
        try:
            results = await batcher.infer(parsed.arrays, parsed.outputs)
        except InputError as problem:  # e.g. a shape outside a TensorRT engine's profile
            return error(str(problem))
        except Exception as failure:  # noqa: BLE001 - the model run failed; the server stays up
            return error(f"inference failed: {type(failure).__name__}: {failure}", 500)
        content, header_length = infer_response(model_name, parsed, results)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(header_length)})

    async def not_found(request: Request, exc) -> Response:
        return error(f"no endpoint {request.method} {request.url.path} (KServe v2: /v2, /v2/health/live, "
                     f"/v2/models/{model_name}, /v2/models/{model_name}/infer, ...)", 404)

    async def method_not_allowed(request: Request, exc) -> Response:
        return error(f"{request.method} is not allowed on {request.url.path}", 405)

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        *(Route(base, model_metadata) for base in (model, versioned)),
        *(Route(base + "/ready", model_ready) for base in (model, versioned)),
        *(Route(base + "/infer", infer, methods=["POST"]) for base in (model, versioned)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: method_not_allowed})


# --------------------------------------------------------------------------------------------
# Running it


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: a free one, read back from the socket), so the URL is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it Nagle + delayed ACKs
    # hold every response ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class ServerHandle:
    """A server running in a background thread (:func:`start_server`): ``url``, ``batcher``, ``stop()``."""

    def __init__(self, server, thread: threading.Thread, url: str, batcher: DynamicBatcher):
        self.server, self.thread, self.url, self.batcher = server, thread, url, batcher

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _uvicorn_server(runtime: Runtime, model_name: str, max_batch_size: int, max_delay_ms: float, workers: int,
                    on_ready: Callable[[], None] | None, log_level: str):
    import uvicorn

    batcher = DynamicBatcher(runtime, max_batch_size, max_delay_ms, workers)
    app = build_app(runtime, model_name, batcher)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.should_exit and on_ready is not None:
                on_ready()

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    return Server(config), batcher


def serve(runtime: Runtime, model_name: str, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 8,
          max_delay_ms: float = 1.0, workers: int = 2, on_ready: Callable[[str, DynamicBatcher], None] | None = None,
          log_level: str = "warning") -> None:
    """Serve ``runtime`` until interrupted (SIGINT/SIGTERM); ``on_ready(url, batcher)`` once it accepts
    connections."""
    sock = _listening_socket(host, port)
    url = _url(host, sock.getsockname()[1])
    holder: list[DynamicBatcher] = []
    server, batcher = _uvicorn_server(runtime, model_name, max_batch_size, max_delay_ms, workers,
                                      (lambda: on_ready(url, holder[0])) if on_ready else None, log_level)
    holder.append(batcher)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def start_server(runtime: Runtime, model_name: str, host: str = "127.0.0.1", port: int = 0, max_batch_size: int = 8,
                 max_delay_ms: float = 1.0, workers: int = 2, log_level: str = "warning",
                 timeout: float = 30.0) -> ServerHandle:
    """Serve ``runtime`` from a background thread of this process; returns once it accepts connections."""
    sock = _listening_socket(host, port)
    url = _url(host, sock.getsockname()[1])
    started = threading.Event()
    server, batcher = _uvicorn_server(runtime, model_name, max_batch_size, max_delay_ms, workers, started.set,
                                      log_level)
    # uvicorn installs signal handlers only in the main thread; this one is stopped through stop()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dcn-deploy-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not started.wait(0.05):
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server at {url} did not start")
    return ServerHandle(server, thread, url, batcher)
