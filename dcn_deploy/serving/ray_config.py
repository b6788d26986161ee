"""The settings of the Ray Serve application (:mod:`dcn_deploy.serving.ray_app`): one home for its
arguments, their defaults and checks, read by ``dcn-deploy serve --engine ray``, by ``serve run
dcn_deploy.serving.ray_app:app key=value ...``, by a RayService's ``serveConfigV2`` (``args:``) and by
``dcn-deploy k8s``. Standard library only, so that the CLI and the manifest writer need no Ray.

Every argument may also come from the environment as ``DCN_DEPLOY_RAY_<NAME>`` (e.g.
``DCN_DEPLOY_RAY_MODEL=/models/demo.onnx``); an argument given explicitly wins. Values may be
strings (``serve run`` passes ``key=value`` text) and are converted to the field's type.

| argument | default | meaning |
|---|---|---|
| ``model`` | (required) | model.onnx or a TensorRT engine, at a path every node can read |
| ``model_name`` | the file's stem | the name in the URLs |
| ``backend``, ``device``, ``threads``, ``plugin_lib``, ``cuda_graphs`` | as ``dcn-deploy serve`` | the runtime each replica loads |
| ``max_batch_size``, ``max_delay_ms``, ``workers`` | 8, 1.0, 2 | each replica's dynamic batcher (``dcn-deploy serve``'s) |
| ``replicas`` | 1 | a fixed number of replicas (without ``max_replicas``) |
| ``min_replicas``, ``max_replicas`` | 1, none | autoscaling between them (given ``max_replicas``) |
| ``target_ongoing_requests`` | 2 | autoscaling: requests in progress per replica it aims at |
| ``upscale_delay_s``, ``downscale_delay_s`` | 2, 60 | autoscaling: how long a need lasts before scaling |
| ``max_ongoing_requests`` | 16 | requests Ray sends one replica at once (its batcher stacks them) |
| ``num_cpus``, ``num_gpus`` | 1, 0 (1 for ``device=cuda`` or a TensorRT engine) | Ray resources per replica |
| ``max_request_bytes``, ``max_input_elements``, ``max_queue``, ``request_timeout_s`` | :mod:`~dcn_deploy.serving.limits` | each replica's limits |
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dcn_deploy.serving.limits import DEFAULT_LIMITS, ServeLimits
from dcn_deploy.words import cli_flag, parse_bool

APP_NAME = "dcn-deploy"  # the Ray Serve application's name in a RayService (one application per cluster)
DEPLOYMENT = "DcnModel"  # its deployment (one replica: one runtime)
IMPORT_PATH = "dcn_deploy.serving.ray_app:app"  # the application builder, for serve run and RayService
ENV_PREFIX = "DCN_DEPLOY_RAY_"
PROXY_LOCATIONS = ("HeadOnly", "EveryNode")  # where Serve runs its HTTP proxy (serve --engine ray); first: default
RAY_VERSION = "2.60.0"  # the version pinned in requirements.txt ("#ray " extra), and the RayService's rayVersion
DEFAULT_RAY_IMAGE = f"dcn-deploy-ray:{RAY_VERSION}"  # dcn-deploy k8s: the RayService's image unless --ray-image
# response headers naming the replica (its Ray actor name) and the Ray node that answered
REPLICA_HEADER = "dcn-deploy-replica"
NODE_HEADER = "dcn-deploy-node"


class RaySettingsError(ValueError):
    """A bad argument of the Ray Serve application; the message names it."""


@dataclass(frozen=True)
class RayServeSettings:
    """The application's arguments (module table); :meth:`check` raises :class:`RaySettingsError`."""

    model: str
    model_name: str | None = None
    backend: str | None = None
    device: str = "cpu"
    threads: int | None = None
    plugin_lib: str | None = None
    cuda_graphs: bool = True
    max_batch_size: int = 8
    max_delay_ms: float = 1.0
    workers: int = 2
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 2.0
    downscale_delay_s: float = 60.0
    max_ongoing_requests: int = 16
    num_cpus: float = 1.0
    num_gpus: float | None = None
    max_request_bytes: int = DEFAULT_LIMITS.max_request_bytes
    max_input_elements: int = DEFAULT_LIMITS.max_input_elements
    max_queue: int = DEFAULT_LIMITS.max_queue
    request_timeout_s: float = DEFAULT_LIMITS.request_timeout_s
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.model_name or Path(self.model).stem

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    @property
    def limits(self) -> ServeLimits:
        return ServeLimits(self.max_request_bytes, self.max_input_elements, self.max_queue, self.request_timeout_s)

    @property
    def gpus(self) -> float:
        """GPUs per replica: ``num_gpus``, else 1 where the runtime needs one (CUDA, TensorRT), else 0."""
        if self.num_gpus is not None:
            return self.num_gpus
        engine = Path(self.model).suffix.lower() != ".onnx" and self.backend != "onnxruntime"
        return 1.0 if self.device == "cuda" or self.backend == "tensorrt" or engine else 0.0

    def check(self) -> RayServeSettings:
        if self.extra:
            known = ", ".join(f.name for f in dataclasses.fields(self) if f.name != "extra")
            raise RaySettingsError(f"unknown argument(s) {sorted(self.extra)} of the Ray Serve application; "
                                   f"it takes {known}")
        if not self.model:
            raise RaySettingsError(f"the Ray Serve application needs 'model' (or ${ENV_PREFIX}MODEL): the path "
                                   f"of model.onnx or a TensorRT engine on every node")
        positive = ("max_batch_size", "workers", "replicas", "min_replicas", "max_ongoing_requests")
        for name in positive:
            if getattr(self, name) < 1:
                raise RaySettingsError(f"{cli_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise RaySettingsError(f"--threads must be at least 1, got {self.threads}")
        for name in ("max_delay_ms", "upscale_delay_s", "downscale_delay_s", "num_cpus"):
            if not getattr(self, name) >= 0:
                raise RaySettingsError(f"{cli_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.num_gpus is not None and not self.num_gpus >= 0:
            raise RaySettingsError(f"--num-gpus must be >= 0, got {self.num_gpus}")
        if not self.target_ongoing_requests > 0:
            raise RaySettingsError(f"--target-ongoing-requests must be > 0, got {self.target_ongoing_requests}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise RaySettingsError(f"device must be cpu, cuda or auto, got '{self.device}'")
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise RaySettingsError(f"--max-replicas ({self.max_replicas}) must be at least --min-replicas "
                                   f"({self.min_replicas})")
        if self.max_replicas is None and self.min_replicas != 1:
            raise RaySettingsError("--min-replicas needs --max-replicas (autoscaling); for a fixed count use "
                                   "--replicas")
        try:
            self.limits.check()
        except ValueError as error:
            raise RaySettingsError(str(error)) from None
        return self

    def deployment_options(self) -> dict:
        """The options of the Ray Serve deployment (``Deployment.options``): replicas or autoscaling,
        resources per replica, requests per replica."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.gpus:
            actor["num_gpus"] = self.gpus
        options: dict[str, Any] = {"ray_actor_options": actor, "max_ongoing_requests": self.max_ongoing_requests}
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "initial_replicas": self.min_replicas,
                "max_replicas": self.max_replicas, "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s, "downscale_delay_s": self.downscale_delay_s}
        else:
            options["num_replicas"] = self.replicas
        return options

    def to_args(self, complete: bool = False) -> dict:
        """The arguments that differ from the defaults, JSON-ready (``serveConfigV2``'s ``args``);
        ``complete``: every argument, defaults included, so that no ``DCN_DEPLOY_RAY_*`` variable read by
        :meth:`from_args` can replace a value chosen explicitly (``serve --engine ray``)."""
        args = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if complete or f.name == "model" or value != f.default:
                args[f.name] = value
        return args

    @classmethod
    def from_args(cls, args: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
                  ) -> RayServeSettings:
        """The settings from ``args`` (values or their text), then ``DCN_DEPLOY_RAY_*`` variables, then the
        defaults; checked."""
        environ = os.environ if environ is None else environ
        args = dict(args or {})
        hints = typing.get_type_hints(cls)
        values, extra = {}, {}
        for key, value in args.items():
            if key in hints and key != "extra":
                values[key] = _convert(key, value, hints[key])
            else:
                extra[key] = value
        for f in dataclasses.fields(cls):
            variable = ENV_PREFIX + f.name.upper()
            if f.name not in values and f.name != "extra" and variable in environ:
                values[f.name] = _convert(variable, environ[variable], hints[f.name])
        values.setdefault("model", "")
        return cls(**values, extra=extra).check()


def _convert(key: str, value: Any, hint) -> Any:
    """``value`` (or its text) as the field's type: int, float, bool, str, or None for optional ones."""
    options = typing.get_args(hint) or (hint,)
    if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null") and type(None) in options):
        if type(None) in options:
            return None
        raise RaySettingsError(f"{key} needs a value")
    kind = next(t for t in options if t is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        flag = parse_bool(value)
        if flag is not None:
            return flag
        raise RaySettingsError(f"{key} must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise RaySettingsError(f"{key} must be a number, got {value!r}")
        try:
            number = kind(value) if not (kind is int and isinstance(value, float)) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise RaySettingsError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        return number
    return str(value)


DEFAULTS = RayServeSettings(model="")  # the defaults, for the CLI's flags (not a usable setting: no model)
