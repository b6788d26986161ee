"""``dcn-deploy k8s``: Kubernetes manifests for the two ways to serve a model on a cluster.

Written into one folder::

    triton-repo/              the Triton model repository (``dcn-deploy triton-repo``, paths as /mnt/models):
                              copy it to the object store that ``--storage-uri`` names
    inferenceservice.yaml     KServe ``InferenceService`` (serving.kserve.io/v1beta1) on the Triton runtime
                              (``kserve-tritonserver``, modelFormat ``triton``): KServe's storage initializer
                              downloads ``--storage-uri`` to /mnt/models, tritonserver serves it
    rayservice.yaml           KubeRay ``RayService`` (ray.io/v1): a Ray cluster (head + a worker group, one
                              worker pod per replica) running :mod:`dcn_deploy.serving.ray_app` through
                              ``serveConfigV2`` (import path and args: :mod:`dcn_deploy.serving.ray_config`)

| | InferenceService (Triton) | RayService (Ray Serve) |
|---|---|---|
| model from | ``--storage-uri`` (s3://, gs://, pvc://, ...) | a path in the image, or ``--model-pvc`` mounted at /mnt/models |
| image | KServe's Triton runtime image | ``--ray-image``: Ray 2.60.0 with this project installed and built |
| scaling | ``minReplicas``/``maxReplicas`` (KServe's autoscaler) | Serve autoscaling + KubeRay's in-tree autoscaler for the pods |
| HTTP | KServe v2 on port 8080 | KServe v2 on Serve's port 8000 (service ``<name>-serve-svc``) |

A TensorRT plan: the InferenceService sets ``LD_PRELOAD`` (TensorRT's library, then the plugin) only when the
plan's ``dcn-deploy build`` record says the plan does not carry the plugin; a plan that carries it (the
default) or has no record gets none (the repository's README.md gives both routes).

Both speak the same KServe v2 protocol as ``dcn-deploy serve``. Both manifests are checked in the tests
against the CRDs' OpenAPI schemas (KServe and KubeRay releases of 2026); never applied to a real cluster.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from dcn_deploy.backends.runtime import backend_for
from dcn_deploy.serving.ray_config import (
    APP_NAME,
    DEFAULT_RAY_IMAGE,
    IMPORT_PATH,
    RAY_VERSION,
    RayServeSettings,
)
from dcn_deploy.serving.triton_repo import TritonRepository, write_triton_repo

MOUNT = "/mnt/models"  # where KServe's storage initializer puts the model, and where the RayService mounts it
TRITON_RUNTIME = "kserve-tritonserver"  # KServe's ClusterServingRuntime for Triton
SERVE_PORT = 8000


class K8sError(ValueError):
    """The manifests cannot be written as asked; the message says why."""


@dataclass(frozen=True)
class PodResources:
    """Per pod (one Triton server, or one Ray worker holding one replica): CPUs, memory, GPUs."""

    cpus: float = 2.0
    memory: str = "4Gi"
    gpus: int = 0

    def check(self) -> PodResources:
        if not self.cpus > 0:
            raise K8sError(f"--cpus must be > 0, got {self.cpus}")
        if self.gpus < 0:
            raise K8sError(f"--gpus must be >= 0, got {self.gpus}")
        if not self.memory or not self.memory[0].isdigit():
            raise K8sError(f"--memory must be a Kubernetes quantity such as 4Gi, got '{self.memory}'")
        return self

    def to_k8s(self) -> dict:
        cpu = f"{int(self.cpus)}" if float(self.cpus).is_integer() else f"{int(self.cpus * 1000)}m"
        amounts = {"cpu": cpu, "memory": self.memory}
        if self.gpus:
            amounts["nvidia.com/gpu"] = str(self.gpus)
        return {"requests": dict(amounts), "limits": dict(amounts)}


@dataclass
class K8sManifests:
    inference_service: Path
    ray_service: Path
    repository: TritonRepository


def _name(text: str) -> str:
    """A DNS-1035 label (what both resources' names must be): lower case, digits, '-', starting with a letter."""
    name = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    if not name or not name[0].isalpha() or len(name) > 45:
        raise K8sError(f"'{text}' does not make a Kubernetes name (a letter first, then letters, digits and '-', "
                       f"at most 45 characters): pass --name")
    return name


def inference_service(name: str, storage_uri: str, settings: RayServeSettings, resources: PodResources,
                      namespace: str | None = None, preload: str | None = None) -> dict:
    """The KServe ``InferenceService`` on the Triton runtime for the repository at ``storage_uri``.
    ``preload``: the ``LD_PRELOAD`` of a plan that does not carry its plugin (TensorRT's library, then the
    plugin: :func:`~dcn_deploy.serving.triton_repo.plugin_loading`); none for a plan that carries it."""
    model: dict = {"modelFormat": {"name": "triton"}, "runtime": TRITON_RUNTIME, "protocolVersion": "v2",
                   "storageUri": storage_uri, "resources": resources.to_k8s()}
    if preload:
        model["env"] = [{"name": "LD_PRELOAD", "value": preload}]
    low, high = (settings.min_replicas, settings.max_replicas) if settings.autoscaling else (settings.replicas,) * 2
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": _metadata(name, namespace),
            "spec": {"predictor": {"minReplicas": low, "maxReplicas": high, "model": model}}}


def serve_config(settings: RayServeSettings) -> dict:
    """Ray Serve's config (what ``serveConfigV2`` holds): the application, its import path and arguments."""
    return {"http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
            "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": IMPORT_PATH,
                              "args": settings.to_args()}]}


def ray_service(name: str, settings: RayServeSettings, image: str, resources: PodResources,
                model_pvc: str | None = None, namespace: str | None = None) -> dict:
    """The KubeRay ``RayService``: a head pod (no replicas: ``num-cpus`` 0) and one worker pod per replica."""
    volumes, mounts = [], []
    if model_pvc:
        volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": model_pvc, "readOnly": True}}]
        mounts = [{"name": "models", "mountPath": MOUNT, "readOnly": True}]

    def pod(container: str, ports: list[dict], pod_resources: dict) -> dict:
        spec: dict = {"containers": [{"name": container, "image": image, "resources": pod_resources}]}
        if ports:
            spec["containers"][0]["ports"] = ports
        if mounts:
            spec["containers"][0]["volumeMounts"] = mounts
            spec["volumes"] = volumes
        return {"spec": spec}

    head_resources = PodResources(cpus=1, memory="2Gi").to_k8s()
    ports = [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}, {"containerPort": SERVE_PORT, "name": "serve"}]
    low, high = (settings.min_replicas, settings.max_replicas) if settings.autoscaling else (settings.replicas,) * 2
    workers = {"groupName": "replicas", "replicas": low, "minReplicas": low, "maxReplicas": high,
               "rayStartParams": {}, "template": pod("ray-worker", [], resources.to_k8s())}
    cluster = {"rayVersion": RAY_VERSION, "enableInTreeAutoscaling": settings.autoscaling,
               "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                                 "template": pod("ray-head", ports, head_resources)},
               "workerGroupSpecs": [workers]}
    text = yaml.safe_dump(serve_config(settings), sort_keys=False)
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": _metadata(name, namespace),
            "spec": {"serveConfigV2": text, "rayClusterConfig": cluster}}


def _metadata(name: str, namespace: str | None) -> dict:
    return {"name": name, **({"namespace": namespace} if namespace else {})}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, readable in the manifest."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def write_manifests(model: str | os.PathLike, output: str | os.PathLike, settings: RayServeSettings,
                    storage_uri: str, name: str | None = None, namespace: str | None = None,
                    ray_image: str = DEFAULT_RAY_IMAGE, model_pvc: str | None = None,
                    resources: PodResources = PodResources(), force: bool = False) -> K8sManifests:
    """Write the Triton repository and both manifests for ``model`` into ``output`` (module docstring).

    ``settings``: the Ray Serve application's (its ``model`` is replaced by the path in the pods,
    ``/mnt/models/<file>``); its replica counts and batching also size the InferenceService and the
    Triton repository."""
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"no model file at {model}")
    backend = backend_for(model, settings.backend)
    if not storage_uri or "://" not in storage_uri:
        raise K8sError(f"--storage-uri must be a URI KServe can download (s3://, gs://, pvc://, https://...), "
                       f"got '{storage_uri}'")
    resources.check()
    resource_name = _name(name or settings.name)
    if backend == "tensorrt" and not resources.gpus:
        raise K8sError("a TensorRT engine runs on a GPU: pass --gpus 1 (or more)")
    out = Path(output)
    written = [out / "inferenceservice.yaml", out / "rayservice.yaml"]
    if not force and any(path.exists() for path in written):
        raise K8sError(f"{out} has manifests already: pass --force to replace them")
    repository = write_triton_repo(model, out / "triton-repo", model_name=settings.name, backend=backend,
                                   max_batch_size=settings.max_batch_size, max_delay_ms=settings.max_delay_ms,
                                   kind="gpu" if resources.gpus else "cpu", mount=MOUNT, force=force)
    # in the pods: the model under the mount, one replica per worker pod using its CPUs and GPUs
    args = {**settings.to_args(), "model": f"{MOUNT}/{model.name}", "num_cpus": resources.cpus}
    args.pop("plugin_lib", None)  # a path on this machine: the image's own build is used
    if resources.gpus:
        args["num_gpus"] = resources.gpus
    pod_settings = RayServeSettings.from_args(args, environ={})
    documents = {
        written[0]: inference_service(resource_name, storage_uri, pod_settings, resources, namespace,
                                      repository.preload),
        written[1]: ray_service(resource_name, pod_settings, ray_image, resources, model_pvc, namespace),
    }
    for path, document in documents.items():
        path.write_text(yaml.dump(document, Dumper=_Dumper, sort_keys=False))
    return K8sManifests(written[0], written[1], repository)
