"""dcn-deploy: convert, export, run and validate DCNv2 (modulated deformable convolution) models.

The public names below are imported on first use, so ``import dcn_deploy.ops`` (the
reference op) or ``dcn_deploy.cuda_kernels`` needs only torch, not onnx or onnxscript.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS = {
    "ConversionReport": "convert", "UnsupportedLayerError": "convert", "convert_model": "convert",
    "convert_state_dict": "convert",
    "export_onnx": "export", "get_metadata": "export",
    "DeformConv2d": "layer",
    "deform_conv2d": "ops",
    "ort_custom_op_library": "ort", "ort_session": "ort",
    "rewrite_onnx": "rewrite",
    "CUSTOM_DOMAIN": "schema", "CUSTOM_OP_TYPE": "schema", "CUSTOM_OP_VERSION": "schema",
    "PLUGIN_NAMESPACE": "schema", "PLUGIN_VERSION": "schema", "STANDARD_OPSET": "schema",
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
