"""dcn-deploy: convert, export, run and validate DCNv2 (modulated deformable convolution) models."""
from .export import export_onnx, get_metadata
from .layer import DeformConv2d
from .ops import deform_conv2d
from .schema import (
    CUSTOM_DOMAIN,
    CUSTOM_OP_TYPE,
    CUSTOM_OP_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    STANDARD_OPSET,
)

__version__ = "0.1.0"
