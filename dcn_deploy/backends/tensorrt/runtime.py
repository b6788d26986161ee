"""A serialized TensorRT engine as a :class:`~dcn_deploy.backends.runtime.Runtime`: a pool of execution
contexts, pinned host buffers and CUDA graphs; and :class:`TensorRTRunner`, the runner ``validate --trt`` uses."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from dcn_deploy.backends.runtime import (
    InputError,
    Runtime,
    TensorSpec,
    _shape_text,
    datatype_of,
)
from dcn_deploy.backends.tensorrt.common import TensorRTError, numpy_dtype_of
from dcn_deploy.backends.tensorrt.engine import load_engine
from dcn_deploy.backends.tensorrt.memory import device_buffers


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
    """A serialized TensorRT engine with this project's plugin (see :func:`dcn_deploy.backends.tensorrt.engine.load_engine`).

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


class TensorRTRunner:  # pragma: no cover - TensorRT only: runs a deserialized engine
    """Runs a serialized engine: ``runner(arrays) -> outputs`` (numpy in, numpy out), the
    ``run_backend`` of :func:`dcn_deploy.parity.validate.validate_onnx`: one execution context of
    :class:`dcn_deploy.backends.runtime.TensorRTBackend`, no CUDA graphs. The plugin is found as
    :func:`load_engine` says.
    """

    def __init__(self, engine_path: str | os.PathLike, plugin_lib: str | os.PathLike | None = None,
                 input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                 console=None, verbose: bool = False):
        self.backend = TensorRTBackend(engine_path, plugin_lib, contexts=1, cuda_graphs=False, console=console,
                                       verbose=verbose)
        self.engine = self.backend.engine
        self.plugin_library = self.backend.plugin_library
        self.backend_name = self.backend.backend
        self.input_names = self._order([s.name for s in self.backend.inputs], input_names, "inputs")
        self.output_names = self._order([s.name for s in self.backend.outputs], output_names, "outputs")

    @staticmethod
    def _order(found: list[str], wanted: Sequence[str] | None, kind: str) -> list[str]:
        if wanted is None:
            return found
        if sorted(wanted) != sorted(found):
            raise TensorRTError(
                f"the engine's {kind} are {found}, the ONNX's {list(wanted)}: not built from this ONNX?")
        return list(wanted)

    def profile(self, name: str) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) of input ``name`` in optimization profile 0."""
        return tuple(tuple(int(d) for d in dims) for dims in self.engine.get_tensor_profile_shape(name, 0))

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) != len(self.input_names):
            raise ValueError(
                f"the engine has {len(self.input_names)} inputs {self.input_names}, got {len(arrays)} arrays")
        inputs = {}
        for name, array in zip(self.input_names, arrays):
            inputs[name] = np.asarray(array).astype(self.backend.input_spec(name).dtype, copy=False)
        results = self.backend.run(inputs, self.output_names)
        return [results[name] for name in self.output_names]
