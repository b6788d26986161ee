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
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "BACKENDS", "DATATYPES", "ContextPool", "InputError", "OnnxRuntimeBackend", "Runtime", "TensorRTBackend",
    "TensorSpec", "datatype_of", "load_runtime", "numpy_dtype",
]

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

# ONNX Runtime's type strings -> KServe v2 datatype
_ORT_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(int8)": "INT8", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES", "tensor(bfloat16)": "BF16",
}


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
        (:mod:`dcn_deploy.batch_axis` decides whether axis 0 is the batch)."""
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
            import torch

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


# --------------------------------------------------------------------------------------------
# ONNX Runtime


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
    """

    backend = "onnxruntime"

    def __init__(self, model: str | os.PathLike | bytes, device: str = "cpu", threads: int | None = None,
                 sess_options=None):
        super().__init__()
        import onnxruntime as ort

        from .ort import ort_session

        available = ort.get_available_providers()
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, got '{device}'")
        use_cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in available)
        if use_cuda and "CUDAExecutionProvider" not in available:
            raise ValueError(f"--device cuda: this onnxruntime has no CUDAExecutionProvider (it has {available}); "
                             f"install onnxruntime-gpu on a machine with an NVIDIA GPU")
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        self.session = ort_session(model, providers=providers, sess_options=sess_options, intra_op_threads=threads)
        self.providers = self.session.get_providers()
        self.inputs = [_ort_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_ort_spec(a) for a in self.session.get_outputs()]
        self.backend = f"onnxruntime-{ort.__version__} ({self.providers[0]})"

    def _run(self, arrays, output_names):
        return dict(zip(output_names, self.session.run(output_names, arrays)))

    def close(self) -> None:
        super().close()
        self.session = None


# --------------------------------------------------------------------------------------------
# TensorRT


class ContextPool:
    """At most ``size`` items made by ``factory`` on demand, each lent to one caller at a time.

    ``with pool.lease() as item:`` blocks while all ``size`` items are out. TensorRT execution
    contexts are not thread-safe, so each concurrent caller gets its own context (and stream and
    buffers); a caller that finds all taken waits for the first one back.
    """

    def __init__(self, factory: Callable[[int], Any], size: int):
        if size < 1:
            raise ValueError(f"a pool needs at least one item, got size {size}")
        self.factory, self.size = factory, size
        self._free: list = []
        self._created: list = []
        self._condition = threading.Condition()

    @property
    def created(self) -> int:
        return len(self._created)

    def acquire(self, timeout: float | None = None):
        with self._condition:
            while not self._free and len(self._created) >= self.size:
                if not self._condition.wait(timeout):
                    raise TimeoutError(f"no execution context came free within {timeout} s")
            if self._free:
                return self._free.pop()
            index = len(self._created)
            self._created.append(None)  # reserve the slot before making it outside the lock
        try:
            item = self.factory(index)
        except BaseException:
            with self._condition:
                self._created.pop()
                self._condition.notify()
            raise
        self._created[index] = item
        return item

    def release(self, item) -> None:
        with self._condition:
            self._free.append(item)
            self._condition.notify()

    def lease(self, timeout: float | None = None):
        pool = self

        class _Lease:
            def __enter__(self_inner):
                self_inner.item = pool.acquire(timeout)
                return self_inner.item

            def __exit__(self_inner, *exc):
                pool.release(self_inner.item)

        return _Lease()

    def items(self) -> list:
        return [item for item in self._created if item is not None]


def check_profile(name: str, shape: Sequence[int], low: Sequence[int], high: Sequence[int]) -> None:
    """:class:`InputError` unless ``low <= shape <= high`` axis by axis (an optimization profile)."""
    if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
        raise InputError(
            f"input '{name}' shape {_shape_text(shape)} does not fit the engine; the engine takes "
            f"{'x'.join(map(str, low))} to {'x'.join(map(str, high))} (build it with --shapes covering this shape)"
        )


class _Binding:
    """One shape key's device buffers, pinned host staging buffers and (once captured) CUDA graph."""

    def __init__(self, cuda, shapes: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self.shapes = shapes
        self.device = {name: cuda.device_buffer(shape, dtype) for name, (shape, dtype) in shapes.items()}
        self.host = {name: cuda.pinned_buffer(shape, dtype) for name, (shape, dtype) in shapes.items()}
        self.runs = 0
        self.graph = None
        self.graph_failed: str | None = None


class _Slot:
    """An execution context with its own stream and bindings; used by one caller at a time."""

    def __init__(self, context, stream, profile: int):
        self.context, self.stream, self.profile = context, stream, profile
        self.bindings: OrderedDict[tuple, _Binding] = OrderedDict()
        self.active_key: tuple | None = None


class TensorRTBackend(Runtime):
    """A serialized TensorRT engine with this project's plugin (see :func:`dcn_deploy.tensorrt_engine.load_engine`).

    - Concurrency: a :class:`ContextPool` of up to ``contexts`` execution contexts, each with its own
      CUDA stream. An engine with dynamic inputs needs one optimization profile per context in use at
      once, so the pool is capped at the engine's profile count there (``dcn-deploy build`` makes one).
    - Buffers: per context and per input-shape key, device buffers and pinned host buffers, kept for
      the last ``shapes_per_context`` keys (least recently used dropped), so a repeated shape costs no
      allocation and its buffer addresses stay fixed.
    - CUDA graphs (``cuda_graphs=True``): the first run of a shape key is a plain ``execute_async_v3``
      (TensorRT sets itself up for the shapes there); the second captures one into a graph, and every
      later run of that key replays it. A capture TensorRT refuses leaves that key on plain enqueues.

    ``cuda``/``loaded`` are for tests: a fake CUDA memory API and a fake loaded engine.
    """

    GRAPH_AFTER_RUNS = 1

    def __init__(self, engine_path: str | os.PathLike | None = None, plugin_lib: str | os.PathLike | None = None,
                 contexts: int = 2, cuda_graphs: bool = True, shapes_per_context: int = 4, console=None,
                 verbose: bool = False, *, loaded=None, cuda=None):
        super().__init__()
        from .tensorrt_engine import device_buffers, load_engine, numpy_dtype_of

        if loaded is None:
            loaded = load_engine(engine_path, plugin_lib, console=console, verbose=verbose)
        self.loaded = loaded
        self.trt, self.engine = loaded.trt, loaded.engine
        self.plugin_library = loaded.plugin_library
        self.cuda = cuda if cuda is not None else device_buffers()
        self.cuda_graphs = cuda_graphs
        self.shapes_per_context = max(1, int(shapes_per_context))
        trt, engine = self.trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._dtypes = {n: numpy_dtype_of(trt, engine.get_tensor_dtype(n)) for n in names}
        specs = {n: TensorSpec(n, datatype_of(self._dtypes[n]), tuple(int(d) for d in engine.get_tensor_shape(n)))
                 for n in names}
        self.inputs = [specs[n] for n in input_names]
        self.outputs = [specs[n] for n in names if n not in input_names]
        self.profiles = max(1, int(getattr(engine, "num_optimization_profiles", 1)))
        dynamic = any(d < 0 for s in self.inputs for d in s.shape)
        self.contexts = max(1, min(int(contexts), self.profiles)) if dynamic else max(1, int(contexts))
        self._ranges = {}
        if dynamic:
            for profile in range(self.profiles):
                self._ranges[profile] = {
                    s.name: tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(s.name, profile))
                    for s in self.inputs
                }
            first = [self._ranges[p][s.name][2][0] for p in self._ranges for s in self.inputs if s.batch_dynamic]
            self.max_batch = min(first) if first else None
        self.pool = ContextPool(self._make_slot, self.contexts)
        self.backend = f"tensorrt-{getattr(trt, '__version__', '?')} ({self.cuda.name})"
        self.graph_launches = 0

    def _make_slot(self, index: int) -> _Slot:
        context = self.engine.create_execution_context()
        if context is None:
            from .tensorrt_engine import TensorRTError

            raise TensorRTError("TensorRT could not create another execution context (out of GPU memory?)")
        stream = self.cuda.stream()
        profile = index % self.profiles
        if profile and hasattr(context, "set_optimization_profile_async"):
            context.set_optimization_profile_async(profile, stream.handle)
        return _Slot(context, stream, profile)

    def profile_range(self, name: str, profile: int = 0) -> tuple[tuple[int, ...], ...] | None:
        """(min, opt, max) of dynamic input ``name`` in ``profile``, None for a static engine."""
        return self._ranges.get(profile, {}).get(name)

    def _run(self, arrays, output_names):
        for spec in self.inputs:
            shape_range = self.profile_range(spec.name)
            if shape_range is not None:
                check_profile(spec.name, arrays[spec.name].shape, shape_range[0], shape_range[2])
        with self.pool.lease() as slot:
            return self._run_on(slot, arrays, output_names)

    def _binding(self, slot: _Slot, arrays: dict[str, np.ndarray]) -> _Binding:
        """The slot's binding for these input shapes, made (and TensorRT's shapes set) when new."""
        from .tensorrt_engine import TensorRTError

        key = tuple((spec.name, arrays[spec.name].shape) for spec in self.inputs)
        context = slot.context
        binding = slot.bindings.get(key)
        if binding is not None and slot.active_key == key:
            slot.bindings.move_to_end(key)
            return binding
        for spec in self.inputs:
            if not context.set_input_shape(spec.name, tuple(int(d) for d in arrays[spec.name].shape)):
                raise InputError(f"TensorRT refused input '{spec.name}' shape {_shape_text(arrays[spec.name].shape)}")
        if binding is None:
            shapes = {spec.name: (tuple(arrays[spec.name].shape), self._dtypes[spec.name]) for spec in self.inputs}
            for spec in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise TensorRTError(f"output '{spec.name}' shape {shape} is unresolved after setting the inputs")
                shapes[spec.name] = (shape, self._dtypes[spec.name])
            binding = _Binding(self.cuda, shapes)
            slot.bindings[key] = binding
            while len(slot.bindings) > self.shapes_per_context:
                slot.bindings.popitem(last=False)  # its buffers and graph go with it
        slot.bindings.move_to_end(key)
        for name, buffer in binding.device.items():
            context.set_tensor_address(name, buffer.ptr)
        slot.active_key = key
        return binding

    def _run_on(self, slot: _Slot, arrays, output_names):
        from .tensorrt_engine import TensorRTError

        cuda, stream, context = self.cuda, slot.stream, slot.context
        binding = self._binding(slot, arrays)
        for spec in self.inputs:
            np.copyto(binding.host[spec.name].array, arrays[spec.name])
            cuda.upload(binding.device[spec.name], binding.host[spec.name], stream)

        def enqueue():
            if not context.execute_async_v3(stream.handle):
                raise TensorRTError("execute_async_v3 failed (see TensorRT's messages)")

        if binding.graph is None and self.cuda_graphs and binding.graph_failed is None \
                and binding.runs >= self.GRAPH_AFTER_RUNS:
            try:
                binding.graph = cuda.capture(stream, enqueue)
            except Exception as error:  # noqa: BLE001 - a capture TensorRT refuses falls back to enqueues
                binding.graph_failed = str(error) or type(error).__name__
        if binding.graph is not None:
            binding.graph.launch(stream)
            self.graph_launches += 1
        else:
            enqueue()
        binding.runs += 1
        for name in output_names:
            cuda.download(binding.host[name], binding.device[name], stream)
        cuda.synchronize(stream)
        # copies: the pinned buffers are overwritten by the next run of this shape
        return {name: binding.host[name].array.copy() for name in output_names}

    def close(self) -> None:
        super().close()
        for slot in self.pool.items():
            slot.bindings.clear()
        self.pool = None
        self.engine = None


# --------------------------------------------------------------------------------------------


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
