"""MSRA Deformable-ConvNets / MXNet (DCNv1 ``DeformableConvolution``, DCNv2 contrib op,
Gluon ``(Modulated)DeformableConvolution``), and the ``.params`` file format.

==============  ======================================================================
parameters      symbols: ``arg:<name>_offset_weight/_bias``, ``arg:<name>_weight`` (+
                ``_bias`` unless no_bias); Gluon: ``offset_weight``, ``offset_bias``,
                ``deformable_conv_weight``, ``deformable_conv_bias``
offset conv     the layer's kernel, stride, padding, dilation (Gluon: also its groups)
channel layout  interleaved (dy, dx) per tap per deformable group: canonical
mask (DCNv2)    the official example and Gluon: ``2 * sigmoid`` (``mask_scale=2``)
boundary DCNv1  0 unless 0 <= y < H; y in [H-1, H) takes row H-1 at full weight: the
                ``mxnet_v1`` rule, emulated exactly by an offset transform
boundary DCNv2  ``h_im > -1 && h_im < H``: canonical
files           ``.params`` read without mxnet (NDArray list format, see read_params)
==============  ======================================================================
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    build_canonical,
    class_name,
    owners,
    first_attr,
)

LIST_MAGIC = 0x112
NDARRAY_V1, NDARRAY_V2, NDARRAY_V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated MXNet params file at byte {self.pos}")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ValueError(f"{self.path}: truncated MXNet params file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def _read_ndarray(reader: _Reader) -> np.ndarray:
    magic = reader.take("I")
    if magic in (NDARRAY_V2, NDARRAY_V3):
        storage = reader.take("i")
        if storage != 0:
            raise ValueError(f"{reader.path}: sparse NDArrays (storage type {storage}) are not supported")
    if magic in (NDARRAY_V1, NDARRAY_V2, NDARRAY_V3):
        ndim = reader.take("i")
        shape = tuple(reader.take("q") for _ in range(ndim)) if ndim > 0 else ()
        if ndim <= 0 and magic != NDARRAY_V3:
            return np.zeros((0,), np.float32)
    else:  # legacy files: the first word is ndim, dims are uint32
        ndim = magic
        shape = tuple(reader.take("I") for _ in range(ndim))
        if ndim == 0:
            return np.zeros((0,), np.float32)
    reader.take("ii")  # context: device type and id
    type_flag = reader.take("i")
    if type_flag not in DTYPES:
        raise ValueError(f"{reader.path}: unsupported MXNet dtype flag {type_flag}")
    dtype = np.dtype(DTYPES[type_flag]).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    return np.frombuffer(reader.raw(count * dtype.itemsize), dtype=dtype).reshape(shape).copy()


def read_params(path: str | Path) -> dict[str, np.ndarray]:
    """Read an MXNet ``.params`` file (``mx.nd.save`` format) into name -> array, no mxnet needed."""
    reader = _Reader(Path(path).read_bytes(), str(path))
    magic, _reserved = reader.take("QQ")
    if magic != LIST_MAGIC:
        raise ValueError(f"{path}: not an MXNet params file (magic {magic:#x}, expected {LIST_MAGIC:#x})")
    arrays = [_read_ndarray(reader) for _ in range(reader.take("Q"))]
    names = [reader.raw(reader.take("Q")).decode("utf-8") for _ in range(reader.take("Q"))]
    if names and len(names) != len(arrays):
        raise ValueError(f"{path}: {len(arrays)} arrays but {len(names)} names")
    return dict(zip(names or [str(i) for i in range(len(arrays))], arrays))


class MXNetConverter(SourceConverter):
    source = "mxnet"
    description = "MSRA Deformable-ConvNets / MXNet DeformableConvolution (DCNv1), contrib DCNv2, Gluon"

    def matches(self, module: nn.Module) -> bool:
        name = class_name(module)
        if name in ("DeformableConvolution", "ModulatedDeformableConvolution"):
            return hasattr(module, "offset_weight") and hasattr(module, "deformable_conv_weight")
        return name.startswith("MXNet") and hasattr(module, "weight") and isinstance(getattr(module, "offset", None), nn.Conv2d)

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        if hasattr(module, "deformable_conv_weight"):  # Gluon block, DCNv2 if modulated
            return self._convert_gluon(module, path)
        # Symbol-graph layers as modules: an offset conv `offset` beside the DCN `weight`.
        modulated = "Modulated" in class_name(module)
        return Converted(
            build_canonical(
                path, module.weight, getattr(module, "bias", None), module.stride,
                first_attr(module, ("padding", "pad"), module.offset.padding),
                first_attr(module, ("dilation", "dilate"), module.offset.dilation),
                first_attr(module, ("num_group", "groups"), 1), first_attr(module, ("num_deformable_group",), 1),
                modulated=modulated, offset_conv=module.offset,
                boundary="zeros" if modulated else "mxnet_v1", mask_scale=2.0 if modulated else 1.0,
            ),
            "DCNv2, mask 2*sigmoid" if modulated else "DCNv1 boundary emulated (mxnet_v1)",
        )

    def _convert_gluon(self, module: nn.Module, path: str) -> Converted:
        modulated = class_name(module).startswith("Modulated")
        conv = nn.Conv2d(
            module.deformable_conv_weight.shape[1] * module.groups, module.offset_weight.shape[0],
            tuple(module.kernel_size), stride=tuple(module.strides), padding=tuple(module.padding),
            dilation=tuple(module.dilation), groups=module.groups,
        ).to(module.offset_weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(module.offset_weight)
            if getattr(module, "offset_bias", None) is not None:
                conv.bias.copy_(module.offset_bias)
            else:
                conv.bias.zero_()
        layer = build_canonical(
            path, module.deformable_conv_weight, getattr(module, "deformable_conv_bias", None), module.strides,
            module.padding, module.dilation, module.groups, module.num_deformable_group, modulated=modulated,
            offset_conv=conv, boundary="zeros" if modulated else "mxnet_v1", mask_scale=2.0 if modulated else 1.0,
        )
        return Converted(layer, "Gluon, mask 2*sigmoid" if modulated else "Gluon DCNv1, boundary mxnet_v1")

    def recognize(self, keys):
        plain = [key.split(":", 1)[1] if key[:4] in ("arg:", "aux:") else key for key in keys]
        return owners(plain, "_offset_weight", "_weight")

    def remap_state_dict(self, state, options):
        """``arg:X_offset_weight`` -> ``X.conv_offset.weight``, ``arg:X_weight`` -> ``X.weight`` for
        every X that has an offset conv; other names lose their ``arg:``/``aux:`` prefix."""
        plain = {key.split(":", 1)[1] if key[:4] in ("arg:", "aux:") else key: v for key, v in state.items()}
        owners = {key[: -len("_offset_weight")] for key in plain if key.endswith("_offset_weight")}
        out = {}
        for key, value in plain.items():
            for owner in owners:
                if key in (f"{owner}_offset_weight", f"{owner}_offset_bias"):
                    key = f"{owner}.conv_offset.{key.rsplit('_', 1)[1]}"
                elif key in (f"{owner}_weight", f"{owner}_bias"):
                    key = f"{owner}.{key.rsplit('_', 1)[1]}"
            out[key] = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        return out
