"""ONNX Runtime with this project's custom-op library registered."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from dcn_deploy.backends.native import native_library
from dcn_deploy.backends.runtime import InputError, Runtime, TensorSpec

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
    library: str | os.PathLike | None = None,
):
    """An ``onnxruntime.InferenceSession`` with the custom op registered.

    ``model_path`` may be a path or serialized model bytes; ``providers`` defaults to CPU;
    ``library``: the custom-op library (default :func:`ort_custom_op_library`).
    """

    if library is not None and not Path(library).is_file():
        raise FileNotFoundError(f"no custom-op library at {library}")
    options = sess_options or ort.SessionOptions()
    options.register_custom_ops_library(str(library) if library is not None else ort_custom_op_library())
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if not isinstance(model_path, bytes):
        model_path = str(model_path)
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"no ONNX model at {model_path}")
    return ort.InferenceSession(model_path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))


# ONNX Runtime's type strings -> KServe v2 datatype
_ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}


def _ort_spec(node_arg) -> TensorSpec:
    dims = node_arg.shape or ()
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
    names = tuple(d if isinstance(d, str) and d else None for d in dims)
    return TensorSpec(node_arg.name, _ORT_TYPES.get(node_arg.type, node_arg.type), shape, names)


class OnnxRuntimeBackend(Runtime):
    """ONNX Runtime with the custom-op library registered (:func:`dcn_deploy.ort_session`).

    ``device``: ``"cpu"`` (default), ``"cuda"`` (the CUDA execution provider, an error when this
    onnxruntime has none) or ``"auto"`` (CUDA when available). The custom op itself has a CPU kernel
    only, so under CUDA ONNX Runtime runs its nodes on the CPU and the rest on the GPU.
    ``InferenceSession.run`` is thread-safe, so concurrent callers share one session.
    ``memory_arena=False`` turns ONNX Runtime's CPU memory arena off: each run's buffers are freed
    when it ends instead of being kept for the next runs, so that a server's memory can go back to
    the system after a large request (``dcn-deploy serve`` does; no slower on this project's models).
    ``library``: the custom-op library to register (default :func:`ort_custom_op_library`).
    """

    backend = "onnxruntime"

    def __init__(self, model: str | os.PathLike | bytes, device: str = "cpu", threads: int | None = None,
                 sess_options=None, memory_arena: bool = True, library: str | os.PathLike | None = None):
        super().__init__()
        if not memory_arena:
            sess_options = sess_options or ort.SessionOptions()
            sess_options.enable_cpu_mem_arena = False

        available = ort.get_available_providers()
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, got '{device}'")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads} (leave it out for all cores)")
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        if use_cuda and "CUDAExecutionProvider" not in available:
            raise ValueError(f"--device cuda: this onnxruntime has no CUDAExecutionProvider (it has {available}); "
                             f"install onnxruntime-gpu on a machine with an NVIDIA GPU")
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        self.session = ort_session(model, providers=providers, sess_options=sess_options, intra_op_threads=threads,
                                   library=library)
        self.providers = self.session.get_providers()
        self.inputs = [_ort_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_ort_spec(a) for a in self.session.get_outputs()]
        self.backend = f"onnxruntime-{ort.__version__} ({self.providers[0]})"

    def _run(self, arrays, output_names):
        try:
            return dict(zip(output_names, self.session.run(output_names, arrays)))
        except InvalidArgument as error:  # ONNX Runtime's (or a custom op's) verdict on the inputs, e.g. too small
            raise InputError(f"the model rejected the inputs: {error}") from None

    def close(self) -> None:
        super().close()
        self.session = None
