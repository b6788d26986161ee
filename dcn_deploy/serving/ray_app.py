"""``dcn-deploy serve --engine ray``: the model as a Ray Serve application, the same KServe v2 HTTP API.

One deployment (``DcnModel``); each replica is one Ray actor holding one runtime (ONNX Runtime on CPU
with this project's custom-op library, or ONNX Runtime CUDA / TensorRT with ``num_gpus``) and serving
the Starlette app of ``dcn-deploy serve`` itself (:func:`dcn_deploy.serving.server.build_app`, through
``@serve.ingress``): the protocol, limits and body handling exist once, and ``tritonclient`` talks to
Ray's HTTP proxy as it talks to ``dcn-deploy serve`` or Triton. Ray's proxy routes each request to a
replica; inside it, :class:`~dcn_deploy.serving.batcher.DynamicBatcher` stacks concurrent requests
under the rules of :mod:`dcn_deploy.serving.batch_axis` (so answers are never mixed).

| | ``dcn-deploy serve`` | ``--engine ray`` |
|---|---|---|
| processes | one, ``workers`` threads run the model | one Ray actor per replica, on any node of the cluster |
| routing | uvicorn | Ray's HTTP proxy (on the head node, ``--proxy-location``) |
| batching | one batcher | one batcher per replica (it sees the requests Ray sends it: ``max_ongoing_requests``) |
| ``max_queue`` (503) | the server's | per replica; Ray queues before that |
| scaling | none | ``replicas``, or autoscaling between ``min_replicas`` and ``max_replicas`` |
| extra response headers | none | ``dcn-deploy-replica`` (the replica's Ray actor name), ``dcn-deploy-node`` |
| a replica that dies | n/a | its requests in progress fail: HTTP 500 from Ray's proxy, or 408 after the request |
| | | timeout when the proxy retries one elsewhere without its body; Ray starts a new replica |

Entry points: :func:`app` is an application builder (``serve run dcn_deploy.serving.ray_app:app
model=/models/demo.onnx replicas=2``, or a RayService's ``import_path`` with ``args``; arguments and
``DCN_DEPLOY_RAY_*`` variables: :mod:`dcn_deploy.serving.ray_config`), :func:`run` is the CLI's driver
(every setting explicit, so no variable overrides a flag; the application named after the model or
``--app-name``, on ``--route-prefix``, refused where the cluster runs one of that name or prefix already).
A replica going away (scale-down, redeploy, delete) stops its batcher and closes its runtime (``__del__``,
which Serve calls).
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Callable

import ray
from ray import serve
from ray.serve.config import HTTPOptions
from ray.serve.context import _get_global_client

from dcn_deploy.backends.load import load_runtime, serving_options
from dcn_deploy.backends.runtime import backend_for
from dcn_deploy.serving.batcher import DynamicBatcher
from dcn_deploy.serving.memory import configure_allocator
from dcn_deploy.serving.ray_config import (
    DEPLOYMENT,
    NODE_HEADER,
    PROXY_LOCATIONS,
    REPLICA_HEADER,
    RayServeSettings,
)
from dcn_deploy.serving.server import _listening_socket, _url, build_app

LOG = logging.getLogger("dcn_deploy.serving.ray_app")


class _Headers:
    """ASGI middleware adding fixed headers to every HTTP response (which replica, which node)."""

    def __init__(self, app, headers: list[tuple[bytes, bytes]]):
        self.app, self.headers = app, headers

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class DcnModel:
    """One replica: one runtime, one batcher, the KServe v2 app of ``dcn-deploy serve``."""

    def __init__(self, args: dict):
        self.settings = settings = RayServeSettings.from_args(args, environ={})
        configure_allocator()  # process-wide: memory goes back after large requests (serving/memory.py)
        kind = backend_for(settings.model, settings.backend)
        self.runtime = load_runtime(settings.model, kind, **serving_options(
            kind, settings.device, settings.threads, settings.workers, settings.plugin_lib, settings.cuda_graphs))
        limits = settings.limits.check()
        self.batcher = DynamicBatcher(self.runtime, settings.max_batch_size, settings.max_delay_ms, settings.workers,
                                      max_elements=limits.max_input_elements, run_timeout_s=limits.request_timeout_s)
        replica = serve.get_replica_context().replica_id.to_full_id_str()
        self.headers = [(REPLICA_HEADER.encode(), replica.encode()),
                        (NODE_HEADER.encode(), ray.get_runtime_context().get_node_id().encode())]

    async def __del__(self):
        """Serve calls this when the replica goes (scaled down, redeployed, deleted), after the app's lifespan
        shutdown stopped the batcher: stop it again (idempotent; the lifespan may never have started) and
        release the runtime (its session or engine), which the actor would otherwise hold until it exits."""
        batcher, runtime = getattr(self, "batcher", None), getattr(self, "runtime", None)
        try:
            if batcher is not None:
                await batcher.stop()
        finally:
            if runtime is not None:
                runtime.close()

    def __serve_build_asgi_app__(self):
        starlette_app = build_app(self.runtime, self.settings.name, self.batcher, limits=self.settings.limits)
        starlette_app.add_middleware(_Headers, headers=self.headers)
        return starlette_app


def app(args: dict) -> serve.Application:
    """The Ray Serve application (an application builder: ``serve run dcn_deploy.serving.ray_app:app
    model=...``); ``args`` and ``DCN_DEPLOY_RAY_*`` variables as :mod:`dcn_deploy.serving.ray_config` says."""
    settings = RayServeSettings.from_args(args)
    return DcnModel.options(**settings.deployment_options()).bind(settings.to_args())


def application(settings: RayServeSettings) -> serve.Application:
    """The application of explicit ``settings`` (the CLI's): every argument is passed, so no
    ``DCN_DEPLOY_RAY_*`` variable in this process can replace one (only :func:`app` reads them)."""
    return app(settings.to_args(complete=True))


def check_free(running: dict[str, str | None], name: str, route_prefix: str) -> None:
    """Refuse to deploy over another application: ``running`` maps the cluster's applications to their
    route prefixes. Serve would replace an application of the same name (and deleting ours on exit would
    delete it), and it serves one application per route prefix."""
    if name in running:
        raise ValueError(f"a Ray Serve application named '{name}' runs on this cluster already: pass --app-name "
                         f"(and --route-prefix) to serve beside it, or stop it first")
    taken = {prefix: other for other, prefix in running.items() if prefix is not None}
    if route_prefix in taken:
        raise ValueError(f"route prefix '{route_prefix}' is used by the Ray Serve application '{taken[route_prefix]}' "
                         f"on this cluster: pass another --route-prefix (e.g. /{name})")


def _running_applications() -> dict[str, str | None]:
    """The cluster's Serve applications and their route prefixes (Serve has them in its details only)."""
    details = _get_global_client().get_serve_details()
    return {name: app_details.get("route_prefix") for name, app_details in details.get("applications", {}).items()}


def run(settings: RayServeSettings, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
        proxy_location: str = "HeadOnly", on_ready: Callable[[str], None] | None = None,
        stop: threading.Event | None = None, log_level: str = "warning", app_name: str | None = None,
        route_prefix: str = "/") -> None:
    """Deploy ``settings`` on Ray and serve until SIGTERM/SIGINT (or ``stop`` is set).

    ``address``: an existing Ray cluster (``ray start --head``'s address, or ``auto``); None starts a
    local one for this process. On the way out the application is deleted (and a local Ray stopped),
    whatever happened. ``log_level``: uvicorn's names, for Ray's and Serve's logs. Serve's HTTP options
    apply when this call starts Serve on the cluster; a cluster where Serve runs already keeps its own
    (``on_ready`` gets the real address). ``app_name`` (default: the model's name) and ``route_prefix``:
    the application on the cluster; a cluster that runs an application of that name or prefix already is
    refused (:func:`check_free`), so one CLI never replaces or deletes another's application."""
    settings.check()
    name = app_name or settings.name
    if not name or not route_prefix.startswith("/") or (route_prefix != "/" and route_prefix.endswith("/")):
        raise ValueError(f"--app-name must not be empty and --route-prefix must start with '/' and not end with it "
                         f"(except '/' itself), got '{name}' and '{route_prefix}'")
    if proxy_location not in PROXY_LOCATIONS:
        raise ValueError(f"--proxy-location must be one of {list(PROXY_LOCATIONS)}, got '{proxy_location}'")
    backend_for(settings.model, settings.backend)
    if not Path(settings.model).is_file():
        raise FileNotFoundError(f"no model file at {settings.model}")
    if port == 0:  # Ray Serve takes a fixed port: find a free one
        sock = _listening_socket(host, 0)
        port = sock.getsockname()[1]
        sock.close()
    else:
        _listening_socket(host, port).close()  # a clear error for a port that is taken or out of range
    # the settings travel to the replicas as absolute paths: a replica's working directory is Ray's
    settings = _absolute(settings)
    stop = stop or threading.Event()
    # Ray's and Serve's own logs at the CLI's level; no access log line per request (it costs CPU at load)
    level = {"trace": "DEBUG", "critical": "CRITICAL"}.get(log_level, log_level.upper())
    logs = {"log_level": level, "enable_access_log": level == "DEBUG"}
    # "local": always a new Ray for this process, never a cluster that happens to run on this machine
    ray.init(address=address or "local", include_dashboard=False if address is None else None,
             logging_level=getattr(logging, level))
    handlers = _stop_on_signals(stop)  # after ray.init, which installs its own SIGTERM handler
    deployed = False
    try:
        serve.start(proxy_location=proxy_location, http_options=HTTPOptions(host=host, port=port),
                    logging_config=logs)
        check_free(_running_applications(), name, route_prefix)
        deployed = True
        serve.run(application(settings), name=name, route_prefix=route_prefix, logging_config=logs)
        if on_ready is not None:
            on_ready(_url(*_http_address(host, port)) + route_prefix.rstrip("/"))
        stop.wait()
    finally:
        try:
            if address is None:
                serve.shutdown()
            elif deployed:  # only our own application: never one that check_free refused to replace
                serve.delete(name)
        finally:
            ray.shutdown()
            for number, handler in handlers.items():
                signal.signal(number, handler)


def _http_address(host: str, port: int) -> tuple[str, int]:
    """Where Serve's HTTP proxy listens: a cluster where Serve ran already keeps its own host and port.
    Serve has no public getter for them; its client's ``http_config`` is read, else the requested ones."""
    try:
        config = _get_global_client().http_config
        return config.host, config.port
    except Exception:  # noqa: BLE001 - a private API that may change: fall back to what was asked
        return host, port


def _absolute(settings: RayServeSettings) -> RayServeSettings:
    args = settings.to_args()
    args["model"] = str(Path(settings.model).resolve())
    if settings.plugin_lib:
        args["plugin_lib"] = str(Path(settings.plugin_lib).resolve())
    return RayServeSettings.from_args(args, environ={})


def _stop_on_signals(stop: threading.Event) -> dict:
    """SIGTERM and SIGINT set ``stop`` (main thread only); the previous handlers, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous[number] = signal.signal(number, lambda *_: stop.set())
    return previous
