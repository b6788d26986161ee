"""Converters from third-party DCN implementations to the canonical layer, one file per source."""
from dcn_deploy.convert.base import (
    ConversionReport,
    LayerConversion,
    NoDCNLayerError,
    UnsupportedLayerError,
)
from dcn_deploy.convert.model import (
    CONVERTERS,
    SOURCES,
    CheckpointConversion,
    convert_checkpoint,
    convert_layer,
    convert_model,
    convert_state_dict,
    recognize_checkpoint,
)
from dcn_deploy.convert.mxnet import read_params as read_mxnet_params

__all__ = [
    "CONVERTERS",
    "CheckpointConversion",
    "ConversionReport",
    "LayerConversion",
    "NoDCNLayerError",
    "SOURCES",
    "UnsupportedLayerError",
    "convert_checkpoint",
    "convert_layer",
    "convert_model",
    "convert_state_dict",
    "read_mxnet_params",
    "recognize_checkpoint",
]
