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
name, datatype or shape; 404: no such model or version; 413: a body or input past the limits) and
500 for a failure of the model run; the server keeps serving.

Limits (:mod:`dcn_deploy.serving.limits`, one :class:`ServeLimits`): request bytes (413 from
``Content-Length`` before reading, or while reading, or after decompressing), elements per input
(413 from the declared shape), requests in the server at once (beyond: 503 with ``Retry-After``),
and the request timeout (408 for a body that does not arrive, 504 for an answer that does not; a
model run that long is abandoned on its thread, :mod:`dcn_deploy.serving.runner`). After a request
with large inputs the allocator's free memory goes back to the system
(:mod:`dcn_deploy.serving.memory`). On SIGTERM/SIGINT the server stops accepting connections,
finishes the requests it has (for at most the request timeout) and exits.

Dynamic batching (:class:`DynamicBatcher`): when axis 0 of every output is the batch axis (proven by
the graph's shapes, or by a probe on the first request where the graph cannot tell:
:mod:`dcn_deploy.serving.batch_axis`), concurrent requests whose other axes and datatypes agree are stacked
along axis 0 into one run of at most ``max_batch_size`` rows, waiting at most ``max_delay_ms`` for more
after the first, and the outputs are split back by rows; otherwise requests run one each, up to
``workers`` at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dcn_deploy import __version__
from dcn_deploy.backends.runtime import InputError, Runtime
from dcn_deploy.serving.batcher import DynamicBatcher
from dcn_deploy.serving.body import decode_body, read_body
from dcn_deploy.serving.limits import DEFAULT_LIMITS, ServeLimits
from dcn_deploy.serving.memory import LARGE_REQUEST_BYTES, configure_allocator, release_memory
from dcn_deploy.serving.protocol import (
    EXTENSIONS,
    HEADER_LENGTH,
    MODEL_VERSION,
    SERVER_NAME,
    BadRequest,
    infer_response,
    parse_infer_request,
)
from dcn_deploy.serving.runner import RunTimeout

LOG = logging.getLogger("dcn_deploy.serving.server")
RETRY_AFTER_S = 1  # what a client told 503 (too many requests) waits before trying again


@dataclass
class ServerStats:
    """What the server refused and how busy it is: ``in_flight`` inference requests (reading, queued or
    running), ``busy`` (503), ``too_large`` (413), ``timed_out`` (408/504), ``failed`` (500)."""

    in_flight: int = 0
    busy: int = 0
    too_large: int = 0
    timed_out: int = 0
    failed: int = 0


def build_app(runtime: Runtime, model_name: str, batcher: DynamicBatcher, platform: str | None = None,
              limits: ServeLimits = DEFAULT_LIMITS):
    """The Starlette app of the protocol for one model (see the module docstring); ``app.state.stats``
    is its :class:`ServerStats`."""

    platform = platform or ("onnxruntime_onnx" if runtime.backend.startswith("onnxruntime") else "tensorrt_plan")
    limits = limits.check()
    stats = ServerStats()
    timeout = limits.request_timeout_s

    def error(message: str, status: int = 400, headers: dict | None = None,
              background: BackgroundTask | None = None) -> JSONResponse:
        if status == 413:
            stats.too_large += 1
        elif status in (408, 504):
            stats.timed_out += 1
        elif status == 500:
            stats.failed += 1
        return JSONResponse({"error": message}, status_code=status, headers=headers, background=background)

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
        stuck = batcher.pool.stuck
        if stuck >= batcher.workers:  # every worker's place is held by a hung run's thread
            return JSONResponse({"ready": False, "error": f"{stuck} model runs passed the request timeout and have "
                                 f"not returned"}, status_code=503)
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
        if stats.in_flight >= limits.max_queue:  # answered before reading the body: costs nothing
            stats.busy += 1
            return error(f"the server is busy: {stats.in_flight} requests in progress, its limit (--max-queue); "
                         f"retry after {RETRY_AFTER_S} s", 503, headers={"Retry-After": str(RETRY_AFTER_S)})
        stats.in_flight += 1
        try:
            return await answer(request)
        finally:
            stats.in_flight -= 1

    async def answer(request: Request) -> Response:
        deadline = time.monotonic() + timeout
        try:
            find_model(request)
            try:
                raw = await asyncio.wait_for(read_body(request.stream(), request.headers.get("content-length"),
                                                       limits.max_request_bytes), timeout)
            except asyncio.TimeoutError:
                return error(f"the request body did not arrive within the request timeout of {timeout:g} s", 408)
            except ClientDisconnect:  # nobody reads this answer; it only keeps the log free of tracebacks
                return error("the client closed the connection before sending the whole body")
            body = decode_body(raw, request.headers.get("content-encoding"), limits.max_request_bytes)
            del raw
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH.lower()), runtime,
                                         limits.max_input_elements)
            del body
        except (BadRequest, InputError) as problem:
            return error(str(problem), getattr(problem, "status", 400))
        large = sum(array.nbytes for array in parsed.arrays.values()) >= LARGE_REQUEST_BYTES
        # after the reply is sent (and the request's arrays are gone): give the memory back
        after = BackgroundTask(release_memory) if large else None
        try:
            results = await asyncio.wait_for(batcher.infer(parsed.arrays, parsed.outputs),
                                             max(0.0, deadline - time.monotonic()))
            content, header_length = infer_response(model_name, parsed, results)
        except InputError as problem:  # e.g. a shape outside a TensorRT engine's profile
            return error(str(problem), background=after)
        except (asyncio.TimeoutError, RunTimeout):
            return error(f"no answer within the request timeout of {timeout:g} s (--request-timeout-s)", 504,
                         background=after)
        except Exception as failure:  # noqa: BLE001 - the model run failed; the server stays up
            return error(f"inference failed: {type(failure).__name__}: {failure}", 500, background=after)
        del parsed, results
        if header_length is None:
            return Response(content, media_type="application/json", background=after)
        return Response(content, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(header_length)}, background=after)

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

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: method_not_allowed})
    app.state.stats = stats
    return app


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: a free one, read back from the socket), so the URL is known before serving."""
    if not 0 <= port <= 65535:
        raise ValueError(f"cannot listen on {host}:{port}: the port must be 0-65535 (0: a free one)")
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
    """A server running in a background thread (:func:`start_server`): ``url``, ``batcher``, ``stats``
    (:class:`ServerStats`), ``stop()`` (graceful, as on SIGTERM: requests in progress are answered)."""
    def __init__(self, server, thread: threading.Thread, url: str, batcher: DynamicBatcher):
        self.server, self.thread, self.url, self.batcher = server, thread, url, batcher
        self.stats: ServerStats = server.config.app.state.stats

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _uvicorn_server(runtime: Runtime, model_name: str, max_batch_size: int, max_delay_ms: float, workers: int,
                    limits: ServeLimits, on_ready: Callable[[], None] | None, log_level: str):
    limits = limits.check()
    configure_allocator()  # process-wide: memory goes back after large requests (serving/memory.py)
    batcher = DynamicBatcher(runtime, max_batch_size, max_delay_ms, workers, max_elements=limits.max_input_elements,
                             run_timeout_s=limits.request_timeout_s)
    app = build_app(runtime, model_name, batcher, limits=limits)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.should_exit and on_ready is not None:
                on_ready()

    # on SIGTERM/SIGINT uvicorn stops accepting, then waits for the requests in progress: each ends
    # within the request timeout, so that is the grace period
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=max(1, int(limits.request_timeout_s + 1)))
    return Server(config), batcher


def serve(runtime: Runtime, model_name: str, host: str = "127.0.0.1", port: int = 8000, max_batch_size: int = 8,
          max_delay_ms: float = 1.0, workers: int = 2, on_ready: Callable[[str, DynamicBatcher], None] | None = None,
          log_level: str = "warning", limits: ServeLimits = DEFAULT_LIMITS) -> None:
    """Serve ``runtime`` until interrupted (SIGINT/SIGTERM: requests in progress are answered first);
    ``on_ready(url, batcher)`` once it accepts connections; ``limits``: :class:`ServeLimits`."""
    sock = _listening_socket(host, port)
    url = _url(host, sock.getsockname()[1])
    holder: list[DynamicBatcher] = []
    try:
        server, batcher = _uvicorn_server(runtime, model_name, max_batch_size, max_delay_ms, workers, limits,
                                          (lambda: on_ready(url, holder[0])) if on_ready else None, log_level)
        holder.append(batcher)
        server.run(sockets=[sock])
    finally:
        sock.close()


def start_server(runtime: Runtime, model_name: str, host: str = "127.0.0.1", port: int = 0, max_batch_size: int = 8,
                 max_delay_ms: float = 1.0, workers: int = 2, log_level: str = "warning",
                 timeout: float = 30.0, limits: ServeLimits = DEFAULT_LIMITS) -> ServerHandle:
    """Serve ``runtime`` from a background thread of this process; returns once it accepts connections."""
    sock = _listening_socket(host, port)
    url = _url(host, sock.getsockname()[1])
    started = threading.Event()
    try:
        server, batcher = _uvicorn_server(runtime, model_name, max_batch_size, max_delay_ms, workers, limits,
                                          started.set, log_level)
    except ValueError:
        sock.close()
        raise
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
