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
