""":func:`load_runtime`: open a model file with the backend its suffix (or the caller) names."""
from __future__ import annotations

import os
from pathlib import Path

from dcn_deploy.backends.onnxruntime import OnnxRuntimeBackend
from dcn_deploy.backends.runtime import Runtime, backend_for
from dcn_deploy.backends.tensorrt.runtime import TensorRTBackend


def load_runtime(model: str | os.PathLike, backend: str | None = None, **options) -> Runtime:
    """Open ``model`` for in-process inference.

    ``backend``: ``onnxruntime`` | ``tensorrt`` | None (by suffix: ``.onnx`` -> ONNX Runtime,
    ``.engine``/``.plan``/``.trt`` -> TensorRT). ``options`` go to :class:`OnnxRuntimeBackend`
    (``device``, ``threads``) or :class:`TensorRTBackend` (``plugin_lib``, ``contexts``, ``cuda_graphs``).
    """
    kind = backend_for(model, backend)
    if not Path(str(model)).is_file():
        raise FileNotFoundError(f"no model file at {model}")
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(model, **options)
    return TensorRTBackend(model, **options)


def serving_options(kind: str, device: str = "cpu", threads: int | None = None, workers: int = 2,
                    plugin_lib: str | os.PathLike | None = None, cuda_graphs: bool = True, console=None) -> dict:
    """The options ``dcn-deploy serve`` and each Ray Serve replica open their runtime with (``kind``: the
    backend :func:`backend_for` names). ONNX Runtime's memory arena is off: memory goes back to the system
    after a large request (serving/memory.py); TensorRT gets one execution context per worker."""
    if kind == "onnxruntime":
        return {"device": device, "threads": threads, "memory_arena": False}
    return {"plugin_lib": plugin_lib, "contexts": workers, "cuda_graphs": cuda_graphs, "console": console}
