"""Converters from third-party DCN implementations to the canonical layer, one file per source."""
from dcn_deploy.convert.base import (
    ConversionReport,
    LayerConversion,
    UnsupportedLayerError,
)
from dcn_deploy.convert.model import (
    CONVERTERS,
    SOURCES,
    convert_layer,
    convert_model,
    convert_state_dict,
)
from dcn_deploy.convert.mxnet import read_params as read_mxnet_params

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
