"""One small interface to run an exported model in-process, the base of ``dcn-deploy serve``.

:func:`load_runtime` opens ``model.onnx`` in ONNX Runtime (this project's custom-op library
registered; CPU by default, the CUDA execution provider on request) or ``model.engine`` in
TensorRT (the plugin library loaded; a pool of execution contexts, pinned host buffers, CUDA
graphs replayed for shapes seen before). Both answer the same calls::

    with load_runtime("model.onnx") as runtime:
        runtime.inputs, runtime.outputs          # [TensorSpec(name, datatype "FP32", shape (-1, 3, -1, -1))]
        outputs = runtime.run({"x": array})      # {"logits": array}; torch tensors in -> torch tensors out

``run`` is thread-safe in both backends and checks every input first: a wrong name, datatype,
rank or fixed size raises :class:`InputError` (a ``ValueError``) that names the input and what
the model takes, which the server turns into a 400 answer.

Datatypes are named as the KServe v2 / Open Inference Protocol names them (``FP32``, ``INT64``,
...), the names Triton's model configuration uses with a ``TYPE_`` prefix.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

BACKENDS = ("onnxruntime", "tensorrt")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


# KServe v2 datatype -> numpy dtype (BYTES has none: strings are not tensors of this project's models)
DATATYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype) for name, dtype in {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
        "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
        "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }.items()
}


_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items()}


class InputError(ValueError):
    """The caller's inputs do not fit the model: the message names the input and what the model takes."""


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a KServe v2 datatype, or :class:`InputError` naming the ones supported."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise InputError(f"datatype {datatype!r} is not supported; use one of {sorted(DATATYPES)}") from None


def datatype_of(dtype) -> str:
    """The KServe v2 datatype of a numpy dtype, or :class:`InputError`."""
    try:
        return _DATATYPE_OF[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise InputError(f"numpy dtype {dtype} has no KServe v2 datatype") from None


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: ``shape`` holds -1 for every dynamic axis (as KServe v2 and Triton write it);
    ``axis_names`` the graph's symbol of each axis where it has one (ONNX ``dim_param``), else empty."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    axis_names: tuple[str | None, ...] = field(default=(), compare=False)

    @property
    def dtype(self) -> np.dtype | None:
        return DATATYPES.get(self.datatype)

    @property
    def batch_dynamic(self) -> bool:
        """Whether axis 0 is dynamic, so that requests can be stacked along it."""
        return len(self.shape) > 0 and self.shape[0] < 0

    def check(self, array: np.ndarray, what: str = "input") -> None:
        """:class:`InputError` unless ``array`` has this tensor's datatype, rank and fixed sizes."""
        dtype = self.dtype
        if dtype is None:
            raise InputError(f"{what} '{self.name}' is {self.datatype}, which this runtime does not carry")
        if array.dtype != dtype:
            got = _DATATYPE_OF.get(array.dtype, str(array.dtype))
            raise InputError(f"{what} '{self.name}' must be {self.datatype}, got {got}")
        if array.ndim != len(self.shape) or any(want >= 0 and got != want for want, got in zip(self.shape, array.shape)):
            raise InputError(f"{what} '{self.name}' has shape {_shape_text(array.shape)}, the model takes "
                             f"{_shape_text(self.shape)} (-1: any size)")

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Runtime(ABC):
    """A loaded model. Subclasses set ``backend``, ``inputs`` and ``outputs`` and implement :meth:`_run`."""

    backend: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: the largest axis 0 the model takes (None: no limit); stacking requests must stay within it
    max_batch: int | None = None

    def __init__(self) -> None:
        self._closed = False

    @property
    def batchable(self) -> bool:
        """Whether every input and output has a dynamic axis 0: needed to stack requests, not enough
        (:mod:`dcn_deploy.serving.batch_axis` decides whether axis 0 is the batch)."""
        return (bool(self.inputs) and all(s.batch_dynamic for s in self.inputs + self.outputs)
                and (self.max_batch is None or self.max_batch > 1))

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise InputError(f"the model has no input '{name}'; its inputs are {[s.name for s in self.inputs]}")

    def output_spec(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise InputError(f"the model has no output '{name}'; its outputs are {[s.name for s in self.outputs]}")

    def check_inputs(self, inputs: Mapping[str, Any] | Sequence[Any]) -> tuple[dict[str, np.ndarray], Any]:
        """The inputs as contiguous numpy arrays by name, checked against the model, and the torch
        device of the first torch tensor among them (None when there is none)."""
        if isinstance(inputs, Mapping):
            named = dict(inputs)
        else:
            inputs = list(inputs)
            if len(inputs) != len(self.inputs):
                raise InputError(f"the model has {len(self.inputs)} inputs {[s.name for s in self.inputs]}, "
                                 f"got {len(inputs)} arrays")
            named = {spec.name: value for spec, value in zip(self.inputs, inputs)}
        for name in named:
            self.input_spec(name)
        missing = [s.name for s in self.inputs if s.name not in named]
        if missing:
            raise InputError(f"missing input(s) {missing}; the model's inputs are {[s.name for s in self.inputs]}")
        torch_device = None
        arrays = {}
        for spec in self.inputs:
            value = named[spec.name]
            if type(value).__module__.startswith("torch"):
                torch_device = torch_device or value.device
                value = value.detach().cpu().numpy()
            array = np.ascontiguousarray(value)
            spec.check(array)
            arrays[spec.name] = array
        return arrays, torch_device

    def run(self, inputs: Mapping[str, Any] | Sequence[Any], outputs: Sequence[str] | None = None
            ) -> dict[str, Any]:
        """Run the model: ``inputs`` by name (or in :attr:`inputs` order), numpy arrays or torch tensors.

        Returns the requested ``outputs`` (default: all) by name, numpy arrays, or torch tensors on the
        first torch input's device when any input was a torch tensor. Thread-safe.
        """
        if self._closed:
            raise RuntimeError(f"this {self.backend} runtime is closed")
        arrays, torch_device = self.check_inputs(inputs)
        names = [s.name for s in self.outputs] if outputs is None else [self.output_spec(n).name for n in outputs]
        results = self._run(arrays, names)
        if torch_device is not None:
            import torch  # optional heavy dependency: only torch inputs need it (Triton's Python backend has none)

            return {name: torch.from_numpy(results[name]).to(torch_device) for name in names}
        return {name: results[name] for name in names}

    def run_checked(self, arrays: dict[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
        """:meth:`run` for arrays :meth:`check_inputs` returned: no checks, numpy out (the server's path)."""
        if self._closed:
            raise RuntimeError(f"this {self.backend} runtime is closed")
        return self._run(arrays, list(output_names))

    @abstractmethod
    def _run(self, arrays: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        """Run checked inputs; return at least ``output_names``."""

    def close(self) -> None:
        """Release the session or engine; :meth:`run` raises afterwards."""
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        return {"backend": self.backend, "inputs": [s.to_dict() for s in self.inputs],
                "outputs": [s.to_dict() for s in self.outputs], "max_batch": self.max_batch,
                "batchable": self.batchable}


def backend_for(model: str | os.PathLike, backend: str | None = None) -> str:
    """``onnxruntime`` or ``tensorrt``: ``backend`` when given, else by the file's suffix."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got '{backend}'")
        return backend
    suffix = Path(str(model)).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise ValueError(f"cannot tell the backend of '{model}' from its suffix: name a .onnx model or a TensorRT "
                     f"engine ({', '.join(ENGINE_SUFFIXES)}), or pass the backend")
