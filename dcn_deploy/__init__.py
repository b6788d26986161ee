"""dcn-deploy: convert, export, run and validate DCNv2 (modulated deformable convolution) models."""
from .convert import ConversionReport, UnsupportedLayerError, convert_model, convert_state_dict
from .export import export_onnx, get_metadata
from .layer import DeformConv2d
from .ops import deform_conv2d
from .ort import ort_custom_op_library, ort_session
from .rewrite import rewrite_onnx
from .schema import (
    CUSTOM_DOMAIN,
    CUSTOM_OP_TYPE,
    CUSTOM_OP_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    STANDARD_OPSET,
)

__version__ = "0.1.0"

__all__ = [
    "CUSTOM_DOMAIN", "CUSTOM_OP_TYPE", "CUSTOM_OP_VERSION", "PLUGIN_NAMESPACE", "PLUGIN_VERSION", "STANDARD_OPSET",
    "ConversionReport", "DeformConv2d", "UnsupportedLayerError", "convert_model", "convert_state_dict",
    "deform_conv2d", "export_onnx", "get_metadata", "ort_custom_op_library", "ort_session", "rewrite_onnx",
]
