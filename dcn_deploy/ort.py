"""ONNX Runtime with this project's custom-op library registered."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence
from .native import native_library

__all__ = ["ort_custom_op_library", "ort_session", "LIBRARY_ENV"]

LIBRARY_ENV = "DCN_DEPLOY_ORT_LIB"
LIBRARY_NAME = "libdcn_deploy_ort.so"


def ort_custom_op_library() -> str:
    """Path of the custom-op library: ``$DCN_DEPLOY_ORT_LIB``, else the repository's build."""
    return native_library(LIBRARY_NAME, LIBRARY_ENV, "run ./scripts/build_plugins.sh")


def ort_session(
    model_path: str | os.PathLike | bytes,
    providers: Sequence[str] | None = None,
    sess_options=None,
    intra_op_threads: int | None = None,
):
    """An ``onnxruntime.InferenceSession`` with the custom op registered.

    ``model_path`` may be a path or serialized model bytes; ``providers`` defaults to CPU.
    """
    import onnxruntime as ort

    options = sess_options or ort.SessionOptions()
    options.register_custom_ops_library(ort_custom_op_library())
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if not isinstance(model_path, bytes):
        model_path = str(model_path)
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"no ONNX model at {model_path}")
    return ort.InferenceSession(model_path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))
