"""GPU memory for the TensorRT runtime: device and pinned host buffers, streams and CUDA graphs through
torch.cuda or cuda-python, whichever is installed (both optional)."""
from __future__ import annotations

import ctypes

import numpy as np
import torch

from dcn_deploy.backends.tensorrt.common import TensorRTError


class _TorchCudaBuffers:  # pragma: no cover - GPU only: CUDA memory through torch
    """PyTorch's CUDA allocator, streams and graphs (``torch.cuda.CUDAGraph``)."""

    name = "torch.cuda"

    def __init__(self):
        self.torch = torch
        torch.cuda.init()

    def stream(self):
        stream = self.torch.cuda.Stream()
        stream.handle = stream.cuda_stream
        return stream

    def _tensor(self, shape, dtype, **where):
        torch = self.torch
        tensor = torch.empty(tuple(shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype, **where)
        tensor.ptr = tensor.data_ptr()
        return tensor

    def device_buffer(self, shape, dtype):
        return self._tensor(shape, dtype, device="cuda")

    def pinned_buffer(self, shape, dtype):
        tensor = self._tensor(shape, dtype, pin_memory=True)
        tensor.array = tensor.numpy()
        return tensor

    def upload(self, device, host, stream):
        with self.torch.cuda.stream(stream):
            device.copy_(host, non_blocking=True)

    def download(self, host, device, stream):
        with self.torch.cuda.stream(stream):
            host.copy_(device, non_blocking=True)

    def synchronize(self, stream):
        stream.synchronize()

    def capture(self, stream, enqueue):
        torch = self.torch
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads' contexts keep running (and allocating) during this capture
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            enqueue()

        class _Graph:
            def launch(self, on_stream):
                with torch.cuda.stream(on_stream):
                    graph.replay()

        return _Graph()


class _CudaPythonBuffers:  # pragma: no cover - GPU only: CUDA memory through cuda-python
    """cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart``)."""

    name = "cuda-python"

    def __init__(self):
        try:  # optional: cuda-python, where torch has no CUDA
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.cudart = cudart
        self._check(cudart.cudaFree(0))  # creates the context; fails clearly without a device

    def _check(self, result):
        error, rest = result[0], result[1:]
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise TensorRTError(f"CUDA runtime error: {error}")
        return rest[0] if len(rest) == 1 else rest

    def stream(self):
        cudart, check = self.cudart, self._check

        class _Stream:
            def __init__(self):
                self.raw = check(cudart.cudaStreamCreate())
                self.handle = int(self.raw)

            def __del__(self):
                cudart.cudaStreamDestroy(self.raw)

        return _Stream()

    def device_buffer(self, shape, dtype):
        cudart, check = self.cudart, self._check
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)

        class _Device:
            def __init__(self):
                self.ptr = int(check(cudart.cudaMalloc(nbytes)))
                self.nbytes = nbytes

            def __del__(self):
                cudart.cudaFree(self.ptr)

        return _Device()

    def pinned_buffer(self, shape, dtype):
        cudart, check = self.cudart, self._check
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = max(count * np.dtype(dtype).itemsize, 1)

        class _Pinned:
            def __init__(self):
                self.ptr = int(check(cudart.cudaMallocHost(nbytes)))
                raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
                self.array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

            def __del__(self):
                cudart.cudaFreeHost(self.ptr)

        return _Pinned()

    def upload(self, device, host, stream):
        self._check(self.cudart.cudaMemcpyAsync(device.ptr, host.ptr, host.array.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw))

    def download(self, host, device, stream):
        self._check(self.cudart.cudaMemcpyAsync(host.ptr, device.ptr, host.array.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw))

    def synchronize(self, stream):
        self._check(self.cudart.cudaStreamSynchronize(stream.raw))

    def capture(self, stream, enqueue):
        cudart, check = self.cudart, self._check
        check(cudart.cudaStreamBeginCapture(stream.raw, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue()
        finally:
            graph = check(cudart.cudaStreamEndCapture(stream.raw))
        executable = check(cudart.cudaGraphInstantiate(graph, 0))

        class _Graph:
            def launch(self, on_stream):
                check(cudart.cudaGraphLaunch(executable, on_stream.raw))

            def __del__(self):
                cudart.cudaGraphExecDestroy(executable)
                cudart.cudaGraphDestroy(graph)

        return _Graph()


def device_buffers():
    """The CUDA memory API of the TensorRT runtime: PyTorch's CUDA when ``torch.cuda.is_available()``,
    else cuda-python; an error naming both when neither is there."""

    if torch.cuda.is_available():
        return _TorchCudaBuffers()
    try:
        return _CudaPythonBuffers()
    except ImportError:
        pass
    raise TensorRTError(
        "no way to allocate GPU memory: this PyTorch has no CUDA (torch.cuda.is_available() is False) and "
        "cuda-python is not installed; install a CUDA build of PyTorch or `pip install cuda-python`, on a "
        "machine with an NVIDIA GPU and driver"
    )
