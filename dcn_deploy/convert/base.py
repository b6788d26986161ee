"""What every source converter shares: the report, the error, attribute helpers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import torch
from torch import nn

from dcn_deploy.op.geometry import normalize_pads
from dcn_deploy.op.layer import DeformConv2d

__all__ = ["NoDCNLayerError", "UnsupportedLayerError", "LayerConversion", "ConversionReport", "SourceConverter", "Converted", "owners"]


class NoDCNLayerError(ValueError):
    """``convert_model`` found no DCN layer at all: nothing to convert."""


class UnsupportedLayerError(ValueError):
    """A layer cannot be converted (exactly); the message names the module path and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"module '{path or '(root)'}': {reason}")
        self.path = path
        self.reason = reason


@dataclass
class LayerConversion:
    path: str
    source: str
    class_name: str
    exact: bool
    detail: str = ""
    max_abs_diff: float | None = None  # measured, for approximate conversions


@dataclass
class ConversionReport:
    layers: list[LayerConversion] = field(default_factory=list)
    canonical: int = 0  # nothing converted: the model's DCN layers already canonical (DeformConv2d)

    @property
    def exact(self) -> bool:
        return all(layer.exact for layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def summary(self) -> str:
        if not self.layers:
            return f"no layer converted: the model's {self.canonical} DCN layers are dcn_deploy.DeformConv2d already"
        lines = [f"{len(self.layers)} layers converted ({'all exact' if self.exact else 'some approximate'})"]
        for layer in self.layers:
            diff = "" if layer.max_abs_diff is None else f", measured max |diff| {layer.max_abs_diff:.3e}"
            kind = "exact" if layer.exact else "APPROXIMATE"
            lines.append(f"  {layer.path}: {layer.source} {layer.class_name} -> DeformConv2d ({kind}{diff}) {layer.detail}")
        return "\n".join(lines)


@dataclass
class Converted:
    """A converter's answer for one module: the replacement, and whether it is exact when
    built with ``emulate_boundary``; ``approximate`` is the replacement without it."""

    module: nn.Module
    detail: str = ""
    approximate: nn.Module | None = None


class SourceConverter:
    """One third-party implementation. Subclasses recognise its modules by class name and
    attributes (never by importing it) and build the canonical replacement."""

    source: str = ""
    description: str = ""

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def convert(self, module: nn.Module, path: str, options: Mapping[str, Any] = {}) -> Converted:
        raise NotImplementedError

    def remap_state_dict(self, state: dict[str, torch.Tensor], options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Rename/transform a raw checkpoint's DCN entries to the canonical layer's names."""
        return dict(state)

    def recognize(self, keys: Collection[str]) -> list[str]:
        """The DCN layers (key prefixes) of this source in a raw checkpoint's ``keys``: what
        :meth:`remap_state_dict` acts on (``dcn-deploy convert`` refuses a source that finds none)."""
        return []


def owners(keys: Collection[str], suffix: str, *siblings: str, absent: tuple[str, ...] = ()) -> list[str]:
    """The layers of one kind in a checkpoint's ``keys``: each prefix ``P`` of a key ``P + suffix`` whose
    ``P + sibling`` keys are all there and ``P + absent`` keys are not. A ``suffix`` like ``conv_offset.weight``
    ends a dotted path (``P`` is ``''`` or ends in a dot); one like ``_offset_weight`` is glued to its owner."""
    keys = set(keys)
    glued = suffix[0] in "._"
    found = []
    for key in sorted(keys):
        if not (key.endswith(suffix) and (len(key) > len(suffix) if glued else
                                          key == suffix or key.endswith("." + suffix))):
            continue
        owner = key[: -len(suffix)]
        if all(owner + s in keys for s in siblings) and not any(owner + a in keys for a in absent):
            found.append(owner.rstrip(".") or "(root)")
    return found


def class_name(module: nn.Module) -> str:
    return type(module).__name__


def pair(value, name: str, path: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UnsupportedLayerError(path, f"attribute {name}={value!r} is not an int or a pair") from None
    return (a, b)


def rename_segment(key: str, old: str, new: str) -> str:
    """Replace one dotted path segment of a state_dict key (``a.old.weight`` -> ``a.new.weight``)."""
    return ".".join(new if part == old else part for part in key.split("."))


def first_attr(module: nn.Module, names: tuple[str, ...], default: Any = None) -> Any:
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    return default


@torch.no_grad()
def copy_into(target: nn.Module, **tensors: torch.Tensor | None) -> None:
    """Copy tensors into ``target``'s parameters (e.g. ``weight=...``, ``conv_offset__weight=...``)."""
    for dotted, value in tensors.items():
        if value is None:
            continue
        owner = target
        *parents, leaf = dotted.split("__")
        for parent in parents:
            owner = getattr(owner, parent)
        param = getattr(owner, leaf)
        if tuple(param.shape) != tuple(value.shape):
            raise ValueError(f"{dotted}: shape {tuple(value.shape)} does not fit {tuple(param.shape)}")
        param.copy_(value.to(param.dtype))
        param.requires_grad_(True)


def like(layer: DeformConv2d, reference: nn.Module) -> DeformConv2d:
    """Put the new layer on the reference's device and dtype, in its train/eval mode."""
    tensor = next(iter(reference.parameters()), None)
    if tensor is not None:
        layer = layer.to(device=tensor.device, dtype=tensor.dtype)
    return layer.train(reference.training)


def _offset_conv_fits(conv: nn.Conv2d, kernel, stride, pads, dilation) -> str:
    """Why ``conv`` cannot feed a DCN of this geometry, or '' when its output size equals
    the DCN's output size for every input size."""
    if isinstance(conv.padding, str):
        return f"its offset conv uses padding='{conv.padding}'"
    if tuple(conv.stride) != tuple(stride):
        return f"its offset conv has stride {tuple(conv.stride)}, the deformable conv {tuple(stride)}"
    for axis, name in ((0, "height"), (1, "width")):
        offset_extent = 2 * conv.padding[axis] - conv.dilation[axis] * (conv.kernel_size[axis] - 1)
        dcn_extent = pads[axis] + pads[axis + 2] - dilation[axis] * (kernel[axis] - 1)
        if offset_extent != dcn_extent:
            return (
                f"its offset conv (kernel {tuple(conv.kernel_size)}, padding {tuple(conv.padding)}, dilation "
                f"{tuple(conv.dilation)}) and the deformable conv (kernel {tuple(kernel)}, pads {tuple(pads)}, "
                f"dilation {tuple(dilation)}) give different output {name}s, so the source's own offsets do not "
                "line up with its output"
            )
    return ""


def build_canonical(
    path: str,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    dilation,
    groups: int,
    offset_groups: int | None,
    modulated: bool,
    offset_conv: nn.Conv2d | None = None,
    offset_weight: torch.Tensor | None = None,
    offset_bias: torch.Tensor | None = None,
    **options: Any,
) -> DeformConv2d:
    """The canonical layer for a source layer, weights copied.

    ``offset_conv`` is the source's offset convolution (its geometry is kept); its weight and
    bias may be replaced by transformed ``offset_weight``/``offset_bias``. Without it the layer
    takes its offsets as inputs.
    """

    out_channels, per_group, kh, kw = weight.shape
    pads = normalize_pads(padding)
    stride, dilation = pair(stride, "stride", path), pair(dilation, "dilation", path)
    if offset_conv is not None:
        why = _offset_conv_fits(offset_conv, (kh, kw), stride, pads, dilation)
        if why:
            raise UnsupportedLayerError(path, why)
        options.update(
            offset_kernel_size=tuple(offset_conv.kernel_size),
            offset_padding=tuple(offset_conv.padding),
            offset_dilation=tuple(offset_conv.dilation),
            offset_conv_groups=offset_conv.groups,
        )
    try:
        layer = DeformConv2d(
            per_group * groups, out_channels, (kh, kw), stride=stride, padding=pads, dilation=dilation,
            groups=groups, offset_groups=offset_groups, bias=bias is not None, modulated=modulated,
            own_offsets=offset_conv is not None, **options,
        )
    except ValueError as error:
        raise UnsupportedLayerError(path, str(error)) from None
    with torch.no_grad():
        layer = layer.to(weight.dtype)
        copy_into(layer, weight=weight.detach(), bias=None if bias is None else bias.detach())
        if offset_conv is not None:
            expected = layer.conv_offset.weight.shape[0]
            source_weight = offset_conv.weight if offset_weight is None else offset_weight
            if source_weight.shape[0] != expected:
                raise UnsupportedLayerError(
                    path, f"its offset conv has {source_weight.shape[0]} output channels, expected {expected} "
                    f"({'3' if modulated else '2'} x offset_groups={offset_groups} x {kh}x{kw} taps)"
                )
            source_bias = offset_conv.bias if offset_bias is None else offset_bias
            copy_into(layer, conv_offset__weight=source_weight.detach(),
                      conv_offset__bias=None if source_bias is None else source_bias.detach())
            if source_bias is None:
                layer.conv_offset.bias.zero_()
    return layer
