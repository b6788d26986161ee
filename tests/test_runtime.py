"""dcn_deploy.backends.runtime: the ONNX Runtime backend for real, the TensorRT backend's Python logic with fakes.

TensorRT and CUDA are not on the test machines: the fakes below stand for the TensorRT engine and
execution contexts and for the CUDA memory API, and compute y = 2x + 1 through the device
addresses the backend binds, so a wrong binding, a stale buffer or a graph replayed with the wrong
addresses gives wrong numbers. A CUDA graph captured by the fake does not run during capture, as
a real one does not; it runs on launch, with the addresses it captured.
"""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch
from serving import INPUT_SHAPE, demo_inputs, export_demo, run_threads

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.backends.runtime import InputError, TensorSpec
from dcn_deploy.backends.tensorrt.runtime import ContextPool, TensorRTBackend

try:
    import tensorrt  # noqa: F401

    HAVE_TENSORRT = True
except ImportError:
    HAVE_TENSORRT = False


@pytest.fixture(scope="module")
def runtime(serving_onnx):
    with load_runtime(serving_onnx) as opened:
        yield opened


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


def test_metadata_of_the_demo_model(runtime):
    assert runtime.backend.startswith("onnxruntime-") and "CPUExecutionProvider" in runtime.backend
    assert runtime.inputs == [TensorSpec("x", "FP32", (-1, 3, -1, -1))]
    assert runtime.outputs == [TensorSpec("logits", "FP32", (-1, 5, -1, -1))]
    assert runtime.batchable and runtime.max_batch is None


def test_run_equals_a_plain_session_and_takes_torch_tensors(runtime, serving_onnx):
    from dcn_deploy import ort_session

    (x,) = demo_inputs(1)
    expected = ort_session(serving_onnx).run(None, {"x": x})[0]
    by_name = runtime.run({"x": x})
    assert list(by_name) == ["logits"] and by_name["logits"].shape == (1, 5, 8, 10)
    np.testing.assert_array_equal(by_name["logits"], expected)
    np.testing.assert_array_equal(runtime.run([x], outputs=["logits"])["logits"], expected)
    as_torch = runtime.run({"x": torch.from_numpy(x)})["logits"]
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), expected)


def test_stacked_rows_are_bitwise_the_rows_run_alone(runtime):
    """What the server's dynamic batching relies on: row i of a stacked run is the run of input i."""
    inputs = demo_inputs(8, seed=3)
    alone = [runtime.run({"x": x})["logits"] for x in inputs]
    stacked = runtime.run({"x": np.concatenate(inputs)})["logits"]
    for row, single in enumerate(alone):
        np.testing.assert_array_equal(stacked[row:row + 1], single)


def test_concurrent_callers_share_one_session(runtime):
    inputs = demo_inputs(4, seed=5)
    expected = [runtime.run({"x": x})["logits"] for x in inputs]
    mismatches = []

    def call(index: int) -> None:
        for round_ in range(10):
            which = (index + round_) % len(inputs)
            if not np.array_equal(runtime.run({"x": inputs[which]})["logits"], expected[which]):
                mismatches.append((index, round_))

    run_threads(call, 6)
    assert mismatches == []


@pytest.mark.parametrize("inputs, message", [
    ({"y": np.zeros(INPUT_SHAPE, np.float32)}, "the model has no input 'y'; its inputs are ['x']"),
    ({}, "missing input(s) ['x']"),
    ({"x": np.zeros(INPUT_SHAPE, np.float64)}, "input 'x' must be FP32, got FP64"),
    ({"x": np.zeros((1, 4, 32, 40), np.float32)}, "input 'x' has shape [1, 4, 32, 40], the model takes [-1, 3, -1, -1]"),
    ({"x": np.zeros((3, 32, 40), np.float32)}, "input 'x' has shape [3, 32, 40]"),
    ([np.zeros(INPUT_SHAPE, np.float32)] * 2, "the model has 1 inputs ['x'], got 2 arrays"),
])
def test_bad_inputs_name_what_is_wrong(runtime, inputs, message):
    with pytest.raises(InputError) as error:
        runtime.run(inputs)
    assert message in str(error.value)


def test_unknown_output_and_closed_runtime(serving_onnx):
    opened = load_runtime(serving_onnx)
    with pytest.raises(InputError, match="no output 'probs'; its outputs are \\['logits'\\]"):
        opened.run({"x": demo_inputs(1)[0]}, outputs=["probs"])
    opened.close()
    with pytest.raises(RuntimeError, match="closed"):
        opened.run({"x": demo_inputs(1)[0]})


def test_static_export_is_not_batchable(tmp_path):
    with load_runtime(export_demo(tmp_path / "static.onnx", dynamic=False)) as static:
        assert static.inputs[0].shape == INPUT_SHAPE and not static.batchable


def test_load_runtime_errors(tmp_path, serving_onnx):
    with pytest.raises(FileNotFoundError, match="no model file at"):
        load_runtime(tmp_path / "nowhere.onnx")
    with pytest.raises(ValueError, match="cannot tell the backend of"):
        load_runtime(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="backend must be one of"):
        load_runtime(serving_onnx, backend="tvm")
    with pytest.raises(ValueError, match="device must be cpu, cuda or auto"):
        load_runtime(serving_onnx, device="tpu")


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_says_what_is_missing(tmp_path):
    from dcn_deploy.backends.tensorrt.common import TensorRTUnavailable

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a plan")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not available"):
        load_runtime(engine)


# ---------------------------------------------------------------------------------------------
# TensorRT backend with fakes


class FakeTrt:
    __version__ = "10.99-fake"

    class DataType:
        FLOAT, HALF, INT32 = "float", "half", "int32"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"


class FakeCuda:
    """Device memory as numpy arrays found by address; a graph records the enqueue and runs it on launch."""

    name = "fake-cuda"

    def __init__(self, capture_fails: bool = False):
        self.memory: dict[int, np.ndarray] = {}
        self.addresses = itertools.count(4096, 4096)
        self.capturing = threading.local()
        self.captures = self.launches = self.allocations = 0
        self.capture_fails = capture_fails

    class Stream:
        handles = itertools.count(1)

        def __init__(self):
            self.handle = next(self.handles)

    def stream(self):
        return self.Stream()

    def device_buffer(self, shape, dtype):
        class Buffer:
            pass

        buffer = Buffer()
        buffer.ptr = next(self.addresses)
        self.memory[buffer.ptr] = np.full(shape, np.nan, dtype)
        self.allocations += 1
        return buffer

    def pinned_buffer(self, shape, dtype):
        class Pinned:
            pass

        pinned = Pinned()
        pinned.array = np.zeros(shape, dtype)
        return pinned

    def upload(self, device, host, stream):
        np.copyto(self.memory[device.ptr], host.array)

    def download(self, host, device, stream):
        np.copyto(host.array, self.memory[device.ptr])

    def synchronize(self, stream):
        pass

    def capture(self, stream, enqueue):
        if self.capture_fails:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.capturing.recorded = []
        enqueue()
        recorded, self.capturing.recorded = self.capturing.recorded, None
        self.captures += 1
        cuda = self

        class Graph:
            def launch(self, on_stream):
                cuda.launches += 1
                for work in recorded:
                    work()

        return Graph()


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}
        self.in_use = threading.Lock()
        self.enqueues = 0

    def set_input_shape(self, name, shape):
        low, _, high = self.engine.profile
        if not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]  # y has x's shape

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def set_optimization_profile_async(self, index, stream):
        self.profile_index = index

    def execute_async_v3(self, stream):
        memory, x, y = self.engine.cuda.memory, self.addresses["x"], self.addresses["y"]

        def work():
            assert self.in_use.acquire(blocking=False), "one execution context used by two callers at once"
            try:
                time.sleep(self.engine.delay)
                memory[y][...] = memory[x] * 2 + 1
            finally:
                self.in_use.release()

        recorded = getattr(self.engine.cuda.capturing, "recorded", None)
        if recorded is not None:
            recorded.append(work)
        else:
            self.enqueues += 1
            work()
        return True


class FakeEngine:
    """One input x and one output y (= 2x + 1), float32; dynamic axes unless ``static``."""

    def __init__(self, cuda, static: tuple[int, ...] | None = None, profiles: int = 1, delay: float = 0.0):
        self.cuda, self.static, self.num_optimization_profiles, self.delay = cuda, static, profiles, delay
        self.profile = ((1, 3, 4, 4), (2, 3, 8, 8), (4, 3, 16, 16)) if static is None else (static,) * 3
        self.contexts: list[FakeContext] = []

    num_io_tensors = 2

    def get_tensor_name(self, index):
        return ("x", "y")[index]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if name == "x" else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return FakeTrt.DataType.FLOAT

    def get_tensor_shape(self, name):
        return self.static or (-1, 3, -1, -1)

    def get_tensor_profile_shape(self, name, profile):
        return self.profile

    def create_execution_context(self):
        context = FakeContext(self)
        self.contexts.append(context)
        return context


def fake_backend(cuda=None, **options):
    from dcn_deploy.backends.tensorrt.engine import LoadedEngine

    cuda = cuda or FakeCuda()
    engine = FakeEngine(cuda, **{k: options.pop(k) for k in ("static", "profiles", "delay") if k in options})
    loaded = LoadedEngine(FakeTrt, None, None, engine, "/fake/libdcn_deploy_trt.so")
    return TensorRTBackend(loaded=loaded, cuda=cuda, **options), engine, cuda


def expected(x):
    return x * 2 + 1


def test_tensorrt_specs_profile_and_batch_limit():
    backend, _, _ = fake_backend()
    assert backend.inputs == [TensorSpec("x", "FP32", (-1, 3, -1, -1))]
    assert backend.outputs == [TensorSpec("y", "FP32", (-1, 3, -1, -1))]
    assert backend.max_batch == 4 and backend.batchable
    assert backend.profile_range("x") == ((1, 3, 4, 4), (2, 3, 8, 8), (4, 3, 16, 16))
    assert backend.backend == "tensorrt-10.99-fake (fake-cuda)"


def test_tensorrt_shape_outside_the_profile_is_an_input_error():
    backend, engine, _ = fake_backend()
    with pytest.raises(InputError, match=r"input 'x' shape \[8, 3, 8, 8\] does not fit the engine; the engine "
                                         r"takes 1x3x4x4 to 4x3x16x16"):
        backend.run({"x": np.zeros((8, 3, 8, 8), np.float32)})
    assert engine.contexts == []  # refused before any context was made


def test_cuda_graph_captured_on_the_second_run_and_replayed_after():
    backend, engine, cuda = fake_backend()
    rng = np.random.default_rng(0)
    for _ in range(4):  # new data each time: a replay must read the bound input buffer
        x = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
        np.testing.assert_array_equal(backend.run({"x": x})["y"], expected(x))
    (context,) = engine.contexts
    assert context.enqueues == 1 and cuda.captures == 1 and cuda.launches == 3
    other = rng.standard_normal((1, 3, 4, 4), dtype=np.float32)  # a new shape: its own buffers, enqueued first
    np.testing.assert_array_equal(backend.run({"x": other})["y"], expected(other))
    assert context.enqueues == 2 and cuda.captures == 1
    x = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)  # back to the first shape: its graph, no new capture
    np.testing.assert_array_equal(backend.run({"x": x})["y"], expected(x))
    assert cuda.captures == 1 and cuda.launches == 4 and backend.graph_launches == 4


def test_buffers_kept_per_shape_and_least_recent_dropped():
    backend, engine, cuda = fake_backend(shapes_per_context=2)
    shapes = [(1, 3, 4, 4), (2, 3, 4, 4), (3, 3, 4, 4)]
    for shape in shapes + shapes[1:]:
        x = np.full(shape, 1.5, np.float32)
        np.testing.assert_array_equal(backend.run({"x": x})["y"], expected(x))
    assert cuda.allocations == 2 * 3  # x and y per shape, the last two shapes reused
    (context,) = engine.contexts
    before = context.enqueues
    x = np.ones(shapes[0], np.float32)  # dropped: set up again, plain enqueue first
    np.testing.assert_array_equal(backend.run({"x": x})["y"], expected(x))
    assert context.enqueues == before + 1 and cuda.allocations == 8


def test_without_cuda_graphs_and_when_capture_fails_it_enqueues():
    for backend, engine, cuda in (fake_backend(cuda_graphs=False), fake_backend(cuda=FakeCuda(capture_fails=True))):
        for _ in range(3):
            x = np.full((2, 3, 8, 8), 0.25, np.float32)
            np.testing.assert_array_equal(backend.run({"x": x})["y"], expected(x))
        assert engine.contexts[0].enqueues == 3 and cuda.launches == 0


def test_context_pool_capped_by_profiles_for_dynamic_engines():
    assert fake_backend(contexts=4)[0].contexts == 1
    assert fake_backend(contexts=4, profiles=2)[0].contexts == 2
    assert fake_backend(contexts=4, static=(2, 3, 8, 8))[0].contexts == 4


def test_concurrent_callers_get_their_own_contexts():
    """Each fake context asserts it is never used by two callers at once; results must stay each caller's."""
    backend, engine, _ = fake_backend(contexts=3, static=(2, 3, 8, 8), delay=0.002)
    failures = []

    def call(index: int) -> None:
        for round_ in range(6):
            x = np.full((2, 3, 8, 8), index * 10 + round_, np.float32)
            try:
                if not np.array_equal(backend.run({"x": x})["y"], expected(x)):
                    failures.append((index, round_, "wrong result"))
            except AssertionError as error:
                failures.append((index, round_, str(error)))

    run_threads(call, 8)
    assert failures == []
    assert 1 <= len(engine.contexts) <= 3 and backend.pool.created == len(engine.contexts)


def test_context_pool_blocks_when_all_are_out_and_recovers_from_a_failed_factory():
    made = []
    pool = ContextPool(lambda index: made.append(index) or f"context-{index}", size=2)
    first, second = pool.acquire(), pool.acquire()
    assert {first, second} == {"context-0", "context-1"}
    with pytest.raises(TimeoutError):
        pool.acquire(timeout=0.05)
    pool.release(first)
    assert pool.acquire(timeout=1) == first and made == [0, 1]

    def broken(index):
        raise RuntimeError("out of memory")

    failing = ContextPool(broken, size=1)
    for _ in range(2):  # the failed slot is given back: the second try fails the same way, no deadlock
        with pytest.raises(RuntimeError, match="out of memory"):
            failing.acquire(timeout=1)
    with pytest.raises(ValueError):
        ContextPool(broken, size=0)
