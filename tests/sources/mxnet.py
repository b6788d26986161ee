"""Oracles for MXNet deformable convolutions, as torch modules, plus an MXNet ``.params`` writer.

* ``MXNetDeformableConvolution(in, out, kernel_size, stride, padding, dilation,
  num_deformable_group, no_bias=True, num_group=1)``: the MSRA Deformable-ConvNets DCNv1
  pattern -- a ``Convolution`` named ``<prefix>_offset`` (same kernel, stride, padding,
  dilation as the DCN, with bias, ``2*G*kh*kw`` filters, zero-initialised) feeding
  ``contrib.DeformableConvolution`` named ``<prefix>``. Submodule ``offset`` and parameter
  ``weight`` (``bias`` when ``no_bias=False``). Sampling uses the ``"mxnet_v1"`` border.
  ``mxnet_params(prefix)`` returns ``{"arg:<prefix>_offset_weight", "arg:<prefix>_offset_bias",
  "arg:<prefix>_weight"[, "arg:<prefix>_bias"]}`` as numpy arrays.
* ``MXNetModulatedDCNExample(in_channels, out_channels, stride)``: the DCNv2 example block --
  a 3x3 / pad 1 / ``stride`` ``Convolution`` with 27 filters (``<prefix>_offset``), offset =
  channels ``[0, 18)``, mask = ``2 * sigmoid(channels [18, 27))``, then
  ``contrib.ModulatedDeformableConvolution`` 3x3 / pad 1 / ``stride`` without bias
  (canonical border). Same ``offset``/``weight`` names and ``mxnet_params``.
* ``ModulatedDeformableConvolution(channels, kernel_size=(1, 1), strides=(1, 1),
  padding=(0, 0), dilation=(1, 1), groups=1, num_deformable_group=1, layout='NCHW',
  use_bias=True, in_channels=0, activation=None, weight_initializer=None,
  bias_initializer='zeros', offset_weight_initializer='zeros', offset_bias_initializer='zeros',
  offset_use_bias=True, op_name=..., adj=None)``: Gluon's ``contrib.cnn`` block. Parameters
  ``deformable_conv_weight`` ``(channels, in/groups, kh, kw)``, ``deformable_conv_bias``,
  ``offset_weight`` ``(G*3*kh*kw, in/groups, kh, kw)`` (the offset conv uses
  ``num_group=groups``), ``offset_bias``. Forward: offset conv, first ``G*2*kh*kw``
  channels are the offset, mask = ``2 * sigmoid(rest)``, canonical border, optional
  activation. ``gluon_params(prefix='')`` gives the arrays under Gluon's names.
* ``save_mxnet_params(path, arrays)`` writes the NDArray-list binary format of
  ``mx.nd.save`` (V2 records).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._sampling import as_pair, deform_conv

__all__ = [
    "MXNetDeformableConvolution",
    "MXNetModulatedDCNExample",
    "ModulatedDeformableConvolution",
    "save_mxnet_params",
    "MXNET_TYPE_FLAGS",
]


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


class MXNetDeformableConvolution(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        num_deformable_group,
        no_bias=True,
        num_group=1,
    ):
        super().__init__()
        self.kernel_size = as_pair(kernel_size)
        self.stride = as_pair(stride)
        self.padding = as_pair(padding)
        self.dilation = as_pair(dilation)
        self.num_deformable_group = num_deformable_group
        self.num_group = num_group
        self.no_bias = no_bias
        kh, kw = self.kernel_size
        self.offset = nn.Conv2d(
            in_channels, num_deformable_group * 2 * kh * kw, self.kernel_size, stride=self.stride,
            padding=self.padding, dilation=self.dilation, bias=True,
        )
        with torch.no_grad():
            self.offset.weight.zero_()
            self.offset.bias.zero_()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // num_group, kh, kw))
        nn.init.normal_(self.weight, 0.0, 0.01)
        if no_bias:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return deform_conv(
            x, self.offset(x), self.weight, self.bias, self.stride, self.padding, self.dilation,
            self.num_group, self.num_deformable_group, mask=None, rule="mxnet_v1",
        )

    def mxnet_params(self, prefix: str) -> dict[str, np.ndarray]:
        out = {
            f"arg:{prefix}_offset_weight": _numpy(self.offset.weight),
            f"arg:{prefix}_offset_bias": _numpy(self.offset.bias),
            f"arg:{prefix}_weight": _numpy(self.weight),
        }
        if self.bias is not None:
            out[f"arg:{prefix}_bias"] = _numpy(self.bias)
        return out


class MXNetModulatedDCNExample(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.stride = as_pair(stride)
        self.offset = nn.Conv2d(in_channels, 27, 3, stride=self.stride, padding=1, bias=True)
        with torch.no_grad():
            self.offset.weight.zero_()
            self.offset.bias.zero_()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.normal_(self.weight, 0.0, 0.01)

    def forward(self, x: Tensor) -> Tensor:
        raw = self.offset(x)
        offset = raw[:, 0:18]
        mask = 2 * torch.sigmoid(raw[:, 18:27])
        return deform_conv(
            x, offset, self.weight, None, self.stride, 1, 1, 1, 1, mask=mask, rule="canonical",
        )

    def mxnet_params(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"arg:{prefix}_offset_weight": _numpy(self.offset.weight),
            f"arg:{prefix}_offset_bias": _numpy(self.offset.bias),
            f"arg:{prefix}_weight": _numpy(self.weight),
        }


_ACTIVATIONS = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softrelu": F.softplus,
    "softsign": F.softsign,
}


class ModulatedDeformableConvolution(nn.Module):
    """Gluon ``mxnet.gluon.contrib.cnn.ModulatedDeformableConvolution`` (NCHW)."""

    def __init__(
        self,
        channels,
        kernel_size=(1, 1),
        strides=(1, 1),
        padding=(0, 0),
        dilation=(1, 1),
        groups=1,
        num_deformable_group=1,
        layout="NCHW",
        use_bias=True,
        in_channels=0,
        activation=None,
        weight_initializer=None,
        bias_initializer="zeros",
        offset_weight_initializer="zeros",
        offset_bias_initializer="zeros",
        offset_use_bias=True,
        op_name="ModulatedDeformableConvolution",
        adj=None,
    ):
        super().__init__()
        if layout != "NCHW":
            raise NotImplementedError("the oracle models the NCHW layout only")
        if not in_channels:
            raise NotImplementedError("deferred initialisation (in_channels=0) is not modelled; pass in_channels")
        if activation is not None and activation not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation {activation!r}")
        self._channels = channels
        self._in_channels = in_channels
        self.kernel_size = as_pair(kernel_size)
        self.strides = as_pair(strides)
        self.padding = as_pair(padding)
        self.dilation = as_pair(dilation)
        self.groups = groups
        self.num_deformable_group = num_deformable_group
        self.activation = activation
        kh, kw = self.kernel_size
        taps = kh * kw
        self.offset_split_index = num_deformable_group * 2 * taps
        offset_channels = num_deformable_group * 3 * taps
        if in_channels % groups or offset_channels % groups or channels % groups:
            raise ValueError("channels, in_channels and the offset channels must be divisible by groups")

        # Gluon registers the deformable conv parameters first, then the offset conv ones.
        self.deformable_conv_weight = nn.Parameter(torch.empty(channels, in_channels // groups, kh, kw))
        nn.init.uniform_(self.deformable_conv_weight, -0.07, 0.07)  # Gluon's default Uniform(0.07)
        if use_bias:
            self.deformable_conv_bias = nn.Parameter(torch.zeros(channels))
        else:
            self.register_parameter("deformable_conv_bias", None)
        self.offset_weight = nn.Parameter(torch.zeros(offset_channels, in_channels // groups, kh, kw))
        if offset_use_bias:
            self.offset_bias = nn.Parameter(torch.zeros(offset_channels))
        else:
            self.register_parameter("offset_bias", None)

    def forward(self, x: Tensor) -> Tensor:
        raw = F.conv2d(x, self.offset_weight, self.offset_bias, self.strides, self.padding, self.dilation, self.groups)
        offset = raw[:, : self.offset_split_index]
        mask = torch.sigmoid(raw[:, self.offset_split_index :]) * 2
        out = deform_conv(
            x, offset, self.deformable_conv_weight, self.deformable_conv_bias, self.strides, self.padding,
            self.dilation, self.groups, self.num_deformable_group, mask=mask, rule="canonical",
        )
        if self.activation is not None:
            out = _ACTIVATIONS[self.activation](out)
        return out

    def gluon_params(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + name: _numpy(p) for name, p in self.named_parameters()}


# ---------------------------------------------------------------------------------------------
# mx.nd.save format
# ---------------------------------------------------------------------------------------------

MXNET_TYPE_FLAGS = {
    np.dtype(np.float32): 0,
    np.dtype(np.float64): 1,
    np.dtype(np.float16): 2,
    np.dtype(np.uint8): 3,
    np.dtype(np.int32): 4,
    np.dtype(np.int8): 5,
    np.dtype(np.int64): 6,
}

_LIST_MAGIC = 0x112
_NDARRAY_V2_MAGIC = 0xF993FAC9


def save_mxnet_params(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as ``mx.nd.save(path, dict)`` would (dense, CPU, V2 records)."""
    chunks = [struct.pack("<QQ", _LIST_MAGIC, 0), struct.pack("<Q", len(arrays))]
    for name, value in arrays.items():
        a = np.asarray(value)
        if a.ndim == 0:
            raise ValueError(f"{name}: 0-d arrays cannot be written (MXNet reads ndim 0 as 'none')")
        native = a.dtype.newbyteorder("=")
        if native not in MXNET_TYPE_FLAGS:
            raise ValueError(f"{name}: dtype {a.dtype} has no MXNet type flag")
        a = np.ascontiguousarray(a, dtype=native.newbyteorder("<"))
        chunks.append(struct.pack("<Ii", _NDARRAY_V2_MAGIC, 0))  # magic, stype = default
        chunks.append(struct.pack("<i", a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape))
        chunks.append(struct.pack("<iii", 1, 0, MXNET_TYPE_FLAGS[native]))  # cpu(0), type flag
        chunks.append(a.tobytes(order="C"))
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(raw)) + raw)
    Path(path).write_bytes(b"".join(chunks))
