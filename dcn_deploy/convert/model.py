"""``convert_model`` and ``convert_state_dict``: the walkers over every source converter."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dcn_deploy.convert.base import (
    ConversionReport,
    LayerConversion,
    NoDCNLayerError,
    SourceConverter,
    UnsupportedLayerError,
    class_name,
    like,
)
from dcn_deploy.convert.charlesshang import CharlesShangConverter
from dcn_deploy.convert.chengdazhi import ChengdazhiConverter
from dcn_deploy.convert.chunhuanlin import ChunhuanLinConverter
from dcn_deploy.convert.detectron2 import Detectron2Converter
from dcn_deploy.convert.mmcv import MMCVConverter
from dcn_deploy.convert.mxnet import MXNetConverter
from dcn_deploy.convert.paddle import PaddleConverter
from dcn_deploy.convert.rejected import RejectedConverter
from dcn_deploy.convert.torchvision import TorchvisionConverter
from dcn_deploy.convert.uiiurz1 import Uiiurz1Converter
from dcn_deploy.op.layer import DeformConv2d

# Order matters where class names collide: the more specific test first.
CONVERTERS: tuple[SourceConverter, ...] = (
    RejectedConverter(),
    Uiiurz1Converter(),
    ChengdazhiConverter(),
    CharlesShangConverter(),
    Detectron2Converter(),
    MMCVConverter(),
    PaddleConverter(),
    ChunhuanLinConverter(),
    MXNetConverter(),
    TorchvisionConverter(),
)
SOURCES = {converter.source: converter for converter in CONVERTERS if converter.source != "rejected"}
SOURCE_ALIASES = {"mmdet": "mmcv", "mmdetection": "mmcv", "centernet": "charlesshang", "dcnv2": "charlesshang",
                  "paddledetection": "paddle", "msra": "mxnet", "gluon": "mxnet"}
_LOOKS_DEFORMABLE = re.compile(r"deform|dcn", re.IGNORECASE)


def find_converter(module: nn.Module) -> SourceConverter | None:
    if isinstance(module, DeformConv2d):
        return None
    return next((c for c in CONVERTERS if c.matches(module)), None)


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


@torch.no_grad()
def _measure(model: nn.Module, replacements: dict[str, nn.Module], example_inputs: Sequence[Any]) -> dict[str, float]:
    """Worst |original - replacement| of each replaced layer, on the inputs it sees."""
    captured: dict[str, list] = {path: [] for path in replacements}
    hooks = [
        model.get_submodule(path).register_forward_hook(
            lambda _m, args, output, path=path: captured[path].append((args, output))
        )
        for path in replacements
    ]
    try:
        model(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    worst = {}
    for path, calls in captured.items():
        diffs = [(replacements[path](*args) - output).abs().max().item() for args, output in calls]
        worst[path] = max(diffs, default=0.0)
    return worst


def convert_model(
    model: nn.Module,
    *,
    emulate_boundary: bool = True,
    accept_approximation: bool = False,
    example_inputs: Sequence[Any] | None = None,
    source_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ConversionReport:
    """Replace every recognised third-party DCN layer in ``model`` (in place) by the canonical
    layer, weights carried, so the model's output is unchanged. Returns the report.

    Layers are recognised by class name, attributes and parameter names, never by importing
    the source library. ``emulate_boundary=False`` drops the exact offset transform of
    sources with another boundary rule (MXNet DCNv1, ChunhuanLin, old 4uiiurz1, padding 0):
    that conversion is approximate and needs ``accept_approximation=True`` and
    ``example_inputs``, on which the worst difference of each such layer is measured.

    Raises ``UnsupportedLayerError`` (module path and reason) for a layer that cannot be
    converted exactly, and for any unknown layer whose class name suggests deformable conv, and
    ``NoDCNLayerError`` for a model without any DCN layer: converting nothing is an error, since
    exporting that model would silently lack the layers the caller meant to convert (a model whose
    DCN layers are all ``dcn_deploy.DeformConv2d`` already gives an empty report that says so).
    """
    report = ConversionReport()
    plan: list[tuple[str, nn.Module, SourceConverter, nn.Module, bool, str]] = []
    skip: tuple[str, ...] = ()
    for path, module in model.named_modules():
        if skip and any(path.startswith(prefix) for prefix in skip):
            continue
        converter = find_converter(module)
        if converter is None:
            if not isinstance(module, DeformConv2d) and _LOOKS_DEFORMABLE.search(class_name(module)) and not any(
                isinstance(child, DeformConv2d) or find_converter(child) for child in module.modules() if child is not module
            ):
                raise UnsupportedLayerError(
                    path, f"class {type(module).__module__}.{class_name(module)} looks like a deformable convolution "
                    f"but matches no known source ({', '.join(sorted(SOURCES))})"
                )
            continue
        if not path:
            raise UnsupportedLayerError(path, "the model itself is the DCN layer: use convert_layer(model) instead")
        converted = converter.convert(module, path, (source_options or {}).get(converter.source, {}))
        replacement, exact = converted.module, True
        canonical = replacement if isinstance(replacement, DeformConv2d) else getattr(replacement, "conv", None)
        if not emulate_boundary and isinstance(canonical, DeformConv2d) and canonical.boundary != "zeros":
            if not accept_approximation:
                raise UnsupportedLayerError(
                    path, f"{converter.source} samples with the '{canonical.boundary}' boundary rule; without its "
                    "offset transform the conversion is approximate: pass accept_approximation=True (and "
                    "example_inputs, to measure the difference) or keep emulate_boundary=True"
                )
            canonical.boundary = "zeros"
            exact = False
        plan.append((path, module, converter, like(replacement, module), exact, converted.detail))
        skip = skip + (path + ".",)

    if not plan:
        canonical = sum(isinstance(m, DeformConv2d) for m in model.modules())
        if not canonical:
            raise NoDCNLayerError(
                f"no DCN layer in {type(model).__name__}: nothing converted (a layer is recognised by its class name "
                f"and attributes; known sources: {', '.join(sorted(SOURCES))})")
        report.canonical = canonical
    worst: dict[str, float] = {}
    approximate = {path: new for path, _, _, new, exact, _ in plan if not exact}
    if approximate:
        if example_inputs is None:
            raise ValueError("convert_model: accept_approximation needs example_inputs to measure the difference")
        worst = _measure(model, approximate, example_inputs)
    for path, module, converter, new, exact, detail in plan:
        _set_submodule(model, path, new)
        report.layers.append(
            LayerConversion(path, converter.source, class_name(module), exact, detail, worst.get(path))
        )
    return report


def convert_layer(module: nn.Module, source_options: Mapping[str, Mapping[str, Any]] | None = None) -> nn.Module:
    """The canonical replacement of one third-party DCN layer (exact conversions only)."""
    converter = find_converter(module)
    if converter is None:
        raise UnsupportedLayerError("", f"{type(module).__module__}.{class_name(module)} matches no known DCN source")
    converted = converter.convert(module, "", (source_options or {}).get(converter.source, {}))
    return like(converted.module, module)


@dataclass
class CheckpointConversion:
    """A converted checkpoint: the canonical ``state`` and, per source applied, the DCN layers (key
    prefixes) it recognised."""

    state: dict[str, torch.Tensor]
    layers: dict[str, list[str]]

    def summary(self) -> str:
        return "; ".join(f"{source}: {len(found)} DCN layer{'s' * (len(found) != 1)} ({_some(found)})"
                         for source, found in self.layers.items())


def _some(items: Sequence[str], count: int = 4) -> str:
    return ", ".join(items[:count]) + (f", ... {len(items) - count} more" if len(items) > count else "")


def source_names(source: str | Sequence[str]) -> list[str]:
    """Canonical source names from ``"mmdet"``, ``"mmcv,paddle"`` or a list (aliases resolved);
    ``["auto"]`` stays as it is."""
    texts = source.split(",") if isinstance(source, str) else list(source)
    names = []
    for text in (t.strip().lower() for t in texts if t.strip()):
        name = SOURCE_ALIASES.get(text, text)
        if name not in SOURCES and name != "auto":
            raise ValueError(f"unknown source '{text}'; known: auto, {', '.join(sorted(SOURCES) + sorted(SOURCE_ALIASES))}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no source given")
    if "auto" in names and len(names) > 1:
        raise ValueError("source 'auto' detects the sources itself: give it alone")
    return names


def recognize_checkpoint(keys: Collection[str]) -> dict[str, list[str]]:
    """Source -> the DCN layers its recogniser finds in a raw checkpoint's ``keys``, for every source
    that finds any (several may claim the same layers: CharlesShang and chengdazhi share a layout)."""
    found = {}
    # chengdazhi's layout is CharlesShang's (same remap): a CenterNet checkpoint is named after the latter
    for converter in sorted(SOURCES.values(), key=lambda c: c.source == "chengdazhi"):
        layers = converter.recognize(keys)
        if layers:
            found[converter.source] = layers
    return found


def _describe_found(found: dict[str, list[str]]) -> str:
    return "; ".join(f"{source} ({len(layers)}: {_some(layers, 3)})" for source, layers in found.items())


def convert_checkpoint(
    state_dict: Mapping[str, Any],
    source: str | Sequence[str] = "auto",
    strip_prefix: str = "",
    options: Mapping[str, Any] | None = None,
) -> CheckpointConversion:
    """Remap a raw checkpoint's keys and values to the canonical layer's names, for loading into a
    canonical model (for example an ``export/`` recipe). Numpy arrays (Paddle, MXNet) become tensors.
    ``strip_prefix`` removes a leading prefix such as ``backbone.`` (a ValueError if no key has it).

    ``source``: one source, several (``"mmcv,paddle"`` or a list: applied in that order) or ``"auto"``:
    the sources whose recognisers find DCN layers in the keys (each layer to the first that finds it). A
    source that finds no layer is a ValueError naming the sources that would (never a silent copy)."""
    names = source_names(source)
    if strip_prefix and not any(key.startswith(strip_prefix) for key in state_dict):
        raise ValueError(f"strip prefix '{strip_prefix}' begins no key (keys look like {_some(list(state_dict), 3)})")
    state = {}
    for key, value in state_dict.items():
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix):]
        state[key] = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
    found = recognize_checkpoint(list(state))
    if not found:
        raise ValueError(f"no DCN layer of any known source in the checkpoint ({len(state)} keys, e.g. "
                         f"{_some(list(state), 3)}): nothing to convert")
    if names == ["auto"]:
        claimed: set[str] = set()
        layers = {}
        for name, found_layers in found.items():
            mine = [layer for layer in found_layers if layer not in claimed]
            if mine:
                layers[name] = mine
                claimed.update(mine)
    else:
        missing = [name for name in names if name not in found]
        if missing:
            raise ValueError(f"source {', '.join(missing)} matches no layer in the checkpoint; sources that match: "
                             f"{_describe_found(found)}")
        layers = {name: found[name] for name in names}
    for name in layers:
        state = SOURCES[name].remap_state_dict(state, dict(options or {}))
    return CheckpointConversion(state, layers)


def convert_state_dict(
    state_dict: Mapping[str, Any],
    source: str | Sequence[str],
    strip_prefix: str = "",
    options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The canonical state of :func:`convert_checkpoint` (same arguments)."""
    return convert_checkpoint(state_dict, source, strip_prefix, options).state
