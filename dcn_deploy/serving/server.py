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
:mod:`dcn_deploy.serving.batch_axis`), concurrent requests whose other axes and datatypes agree are stacked
along axis 0 into one run of at most ``max_batch_size`` rows, waiting at most ``max_delay_ms`` for more
after the first, and the outputs are split back by rows; otherwise requests run one each, up to
``workers`` at once.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dcn_deploy import __version__
from dcn_deploy.backends.runtime import InputError, Runtime
from dcn_deploy.serving.batcher import DynamicBatcher
from dcn_deploy.serving.protocol import (
    EXTENSIONS,
    HEADER_LENGTH,
    MODEL_VERSION,
    SERVER_NAME,
    BadRequest,
    _decoded_body,
    infer_response,
    parse_infer_request,
)


def build_app(runtime: Runtime, model_name: str, batcher: DynamicBatcher, platform: str | None = None):
    """The Starlette app of the protocol for one model (see the module docstring)."""

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
        except ClientDisconnect:  # the body ended before its Content-Length: nobody is left to answer
            return error("the client closed the connection before sending the whole body (Content-Length "
                         f"{request.headers.get('content-length')})")
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
