"""4uiiurz1/pytorch-deform-conv-v2 ``DeformConv2d``.

==============  ======================================================================
classes         ``DeformConv2d(inc, outc, kernel_size=3, padding=1, stride=1, bias=None,
                modulation=False)`` with ``p_conv``, ``m_conv`` (if modulation), ``conv``
parameters      ``p_conv.weight/bias`` (2*k*k), ``m_conv.weight/bias`` (k*k),
                ``conv.weight`` (the canonical weight: taps tiled, stride k), ``conv.bias``
offset conv     ALWAYS 3x3, padding 1, the layer's stride, whatever kernel_size
channel layout  planar: channels [0, k*k) are the ROW (vertical) displacement of each tap
                (the code calls them x), [k*k, 2k*k) the column one; canonical channel
                2n <- n and 2n+1 <- k*k + n
mask            ``sigmoid(m_conv(x))``
coordinates     1-based in a zero-padded image, then clamped: with padding P >= 1 this is
                the canonical zero-outside rule after a constant shift of every offset,
                1 - P for odd k and -P for even k, folded into p_conv's bias; pads
                [b, b, e, e] with b = (k-1)//2, e = k-1-b
boundary        P >= 1: canonical. P = 0: clamped to the border, border counted twice
                (``clamp_twice``). Versions before the 2019-01-05 commit "remove
                unnecessary lines" floor the coordinate inside the padding band: the
                MXNet DCNv1 rule (``mxnet_v1``); detected from the class's source code,
                or given as ``source_options={"4uiiurz1": {"floor_band": True}}``
rejected        nothing; the boundary rules above convert exactly
==============  ======================================================================
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Mapping

import torch
from torch import nn

from dcn_deploy.convert.base import (
    Converted,
    SourceConverter,
    UnsupportedLayerError,
    build_canonical,
    class_name,
    owners,
)


def planar_to_interleaved(taps: int) -> list[int]:
    """Source channel of each canonical offset channel: 2n <- n, 2n+1 <- taps + n."""
    return [index for n in range(taps) for index in (n, taps + n)]


def coordinate_shift(kernel: int, padding: int) -> int:
    """Constant added to every offset: 1 - P + first tap + b (first tap = (-(k-1))//2)."""
    return 1 - padding + (-(kernel - 1)) // 2 + (kernel - 1) // 2


def floors_in_padding_band(module: nn.Module, path: str) -> bool:
    """True for versions before 2019-01-05, whose forward floors p inside the padding band."""
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        raise UnsupportedLayerError(
            path, "cannot read the source of this 4uiiurz1 DeformConv2d to tell its version (the versions before "
            "2019-01-05 sample with the MXNet DCNv1 boundary); pass it explicitly: convert_model(model, "
            "source_options={'4uiiurz1': {'floor_band': True|False}})"
        ) from None
    return bool(re.search(r"floor_p|\.lt\(self\.padding\)", source))


def boundary_rule(padding: int, floor_band: bool) -> str:
    if padding == 0:
        return "clamp_twice"  # floor in the band, then clamp: the same as clamping alone
    return "mxnet_v1" if floor_band else "zeros"


class Uiiurz1Converter(SourceConverter):
    source = "4uiiurz1"
    description = "4uiiurz1 pytorch-deform-conv-v2 DeformConv2d (p_conv, m_conv, conv)"

    def matches(self, module: nn.Module) -> bool:
        return class_name(module) == "DeformConv2d" and isinstance(getattr(module, "p_conv", None), nn.Conv2d) and (
            isinstance(getattr(module, "conv", None), nn.Conv2d)
        )

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        padding, stride = int(module.padding), int(module.stride)
        taps = k * k
        modulated = bool(getattr(module, "modulation", False))
        p_conv = module.p_conv
        weight = p_conv.weight[planar_to_interleaved(taps)]
        bias = p_conv.bias[planar_to_interleaved(taps)] + coordinate_shift(k, padding)
        if modulated:
            weight = torch.cat([weight, module.m_conv.weight])
            bias = torch.cat([bias, module.m_conv.bias])
        floor_band = bool(options["floor_band"]) if "floor_band" in options else floors_in_padding_band(module, path)
        begin = (k - 1) // 2
        layer = build_canonical(
            path, module.conv.weight, module.conv.bias, stride, (begin, begin, k - 1 - begin, k - 1 - begin), 1, 1,
            1, modulated=modulated, offset_conv=p_conv, offset_weight=weight, offset_bias=bias,
            boundary=boundary_rule(padding, floor_band),
        )
        detail = f"p_conv planar->interleaved, shift {coordinate_shift(k, padding)} in its bias, boundary {layer.boundary}"
        return Converted(layer, detail)

    def recognize(self, keys):
        return owners(keys, "p_conv.weight", "conv.weight")

    def remap_state_dict(self, state, options):
        """Needs ``options``: ``padding`` (default 1, the library's) and ``floor_band``
        (default False: the current version)."""
        padding = int(options.get("padding", 1))
        if padding < 0:
            raise ValueError(f"4uiiurz1: padding must be >= 0, got {padding}")
        out = dict(state)
        for key in [k for k in state if k.endswith(".p_conv.weight") or k == "p_conv.weight"]:
            owner = key[: -len("p_conv.weight")]
            missing = [owner + name for name in ("p_conv.bias", "conv.weight") if owner + name not in out]
            if missing:
                raise ValueError(f"4uiiurz1: the checkpoint has {key} but not {missing}: not a 4uiiurz1 "
                                 f"DeformConv2d (p_conv, conv, m_conv)")
            p_weight, p_bias = out.pop(owner + "p_conv.weight"), out.pop(owner + "p_conv.bias")
            conv_weight = out.pop(owner + "conv.weight")
            k = conv_weight.shape[-1]
            order = planar_to_interleaved(k * k)
            weight, bias = p_weight[order], p_bias[order] + coordinate_shift(k, padding)
            if owner + "m_conv.weight" in out:
                weight = torch.cat([weight, out.pop(owner + "m_conv.weight")])
                bias = torch.cat([bias, out.pop(owner + "m_conv.bias")])
            out[owner + "weight"] = conv_weight
            if owner + "conv.bias" in out:
                out[owner + "bias"] = out.pop(owner + "conv.bias")
            out[owner + "conv_offset.weight"], out[owner + "conv_offset.bias"] = weight, bias
        return out
