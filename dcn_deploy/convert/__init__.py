"""Converters from third-party DCN implementations to the canonical layer, one file per source."""
from .base import ConversionReport, LayerConversion, UnsupportedLayerError
from .model import CONVERTERS, SOURCES, convert_layer, convert_model, convert_state_dict
from .mxnet import read_params as read_mxnet_params

__all__ = [
    "CONVERTERS",
    "ConversionReport",
    "LayerConversion",
    "SOURCES",
    "UnsupportedLayerError",
    "convert_layer",
    "convert_model",
    "convert_state_dict",
    "read_mxnet_params",
]
