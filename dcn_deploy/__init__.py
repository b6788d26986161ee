"""dcn-deploy: convert, export, run and validate DCNv2 (modulated deformable convolution) models.

The public names below are imported on first use, so ``import dcn_deploy.op`` (the
reference op) or ``dcn_deploy.backends.cuda_kernels`` needs only torch, not onnx or onnxscript.

Sub-packages, one concern each (imports run downwards only)::

    op/        the operator: public deform_conv2d, its one validation, reference, torch custom op, INT8, layer
    onnx/      ONNX graph work: schema, export, FP16 pass, rewrite (+ other exporters' DCN flavours), inspect,
               INT8 quantize, metadata, recipes, parity
    convert/   third-party DCN layers and checkpoints to the canonical layer
    backends/  runtimes: the interface, ONNX Runtime, the CUDA kernels (ctypes), TensorRT (build, engine, run)
    bench/     dcn-deploy bench: timing, CPU/GPU/end-to-end rows, report
    serving/   dcn-deploy serve: protocol, batching rule and batcher, server, Triton repository, load test
    cli.py     the command line (argument parsing only); words.py: flag spellings and yes/no words
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "ConversionReport": "convert", "UnsupportedLayerError": "convert", "convert_model": "convert",
    "convert_state_dict": "convert", "convert_checkpoint": "convert", "NoDCNLayerError": "convert",
    "export_onnx": "onnx.export", "get_metadata": "onnx.model_info",
    "DeformConv2d": "op.layer",
    "deform_conv2d": "op.functional",
    "ort_custom_op_library": "backends.onnxruntime", "ort_session": "backends.onnxruntime",
    "load_runtime": "backends.load",
    "rewrite_onnx": "onnx.rewrite",
    "validate": "parity.validate",
    "CUSTOM_DOMAIN": "onnx.schema", "CUSTOM_OP_TYPE": "onnx.schema", "CUSTOM_OP_VERSION": "onnx.schema",
    "PLUGIN_NAMESPACE": "onnx.schema", "PLUGIN_VERSION": "onnx.schema", "STANDARD_OPSET": "onnx.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dcn_deploy' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
