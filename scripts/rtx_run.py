"""Run a TensorRT-RTX plan built by ``dcn-deploy build --target rtx`` on this machine's GPU and compare it
with the float64 PyTorch reference of the recipe the ONNX records, on a seeded input. Used by
scripts/gpu_check.sh (whose build has no ONNX Runtime library).

    python scripts/rtx_run.py MODEL.onnx MODEL.plan [--shape 2x3x64x80] [--tolerance 1e-3]

Prints one line per output (max abs error / max |reference|) and exits 1 when one exceeds the tolerance.
Needs PyTorch with CUDA (device buffers) and tensorrt_rtx_bindings; the plan carries the plugin library.
Written for the GPU check and not yet run: no GPU where it was written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

from dcn_deploy.backends.tensorrt.common import make_logger, tensorrt_messages
from dcn_deploy.backends.tensorrt.rtx import import_tensorrt_rtx
from dcn_deploy.onnx.recipes import reference_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("plan", type=Path)
    parser.add_argument("--shape", default="2x3x64x80", help="input shape NxCxHxW")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max abs error / max |reference|")
    args = parser.parse_args()

    trt = import_tensorrt_rtx()
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(args.plan.read_bytes())  # the plan carries the plugin library
    if engine is None:
        print(f"rtx_run: TensorRT-RTX could not deserialize {args.plan}{tensorrt_messages(logger)}")
        return 1
    context = engine.create_execution_context()
    shape = tuple(int(d) for d in args.shape.split("x"))
    proto = onnx.load(str(args.onnx))
    reference, _ = reference_for(proto)
    float16 = proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float16 if float16 else np.float32)
    with torch.no_grad():
        outputs = reference.double()(torch.from_numpy(x.astype(np.float64)))
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    references = {o.name: y.numpy() for o, y in zip(proto.graph.output, outputs)}

    buffers = {}
    stream = torch.cuda.Stream()
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            context.set_input_shape(name, shape)
            buffers[name] = torch.from_numpy(x).cuda()
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            torch_dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch_dtype, device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    if not context.execute_async_v3(stream.cuda_stream):
        print(f"rtx_run: execute_async_v3 failed{tensorrt_messages(logger)}")
        return 1
    stream.synchronize()

    failed = False
    for name, reference in references.items():
        got = buffers[name].float().cpu().numpy()
        error = float(np.abs(got - reference.astype(np.float32)).max() / max(float(np.abs(reference).max()), 1e-30))
        failed |= not error <= args.tolerance
        print(f"rtx_run: {name} {list(got.shape)}: max abs error / max |reference| = {error:.2e} "
              f"({'pass' if error <= args.tolerance else 'FAIL'}, tolerance {args.tolerance:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
