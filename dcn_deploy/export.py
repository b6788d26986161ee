"""Export to ONNX with every DCN layer as one DeformConv node.

While ``torch.onnx.export`` traces a model, :func:`dcn_deploy.deform_conv2d` records one
``dcn_deploy::deform_conv2d`` torch custom op per call (see ``ops.py``); the translation
table below turns each into one ONNX node, custom or standard (``schema.py``).
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import warnings
import os
from pathlib import Path
from typing import Any, Sequence

import onnx
import torch
from torch import Tensor

from . import schema
from .ops import DeformConvGeometry, deform_conv2d_reference, output_size

__all__ = ["export_onnx", "deform_conv2d_node", "METADATA_PREFIX"]

METADATA_PREFIX = "dcn_deploy."


@torch.library.custom_op("dcn_deploy::deform_conv2d", mutates_args=())
def _deform_conv2d_op(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    kernel_shape: Sequence[int],
    group: int,
    offset_group: int,
) -> Tensor:
    geo = DeformConvGeometry(
        tuple(strides), tuple(pads), tuple(dilations), group, offset_group, tuple(kernel_shape), tuple(offset.shape[2:])
    )
    return deform_conv2d_reference(input, offset, weight, bias, mask, geo)


@_deform_conv2d_op.register_fake
def _(input, offset, weight, bias, mask, strides, pads, dilations, kernel_shape, group, offset_group):
    n, _, h, w = input.shape
    kh, kw = kernel_shape
    ho = output_size(h, kh, strides[0], dilations[0], pads[0], pads[2])
    wo = output_size(w, kw, strides[1], dilations[1], pads[1], pads[3])
    return input.new_empty((n, weight.shape[0], ho, wo))


def deform_conv2d_node(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None, geo: DeformConvGeometry
) -> Tensor:
    """Record one DeformConv node (used by ``deform_conv2d`` while exporting)."""
    return _deform_conv2d_op(
        input,
        offset,
        weight,
        bias,
        mask,
        list(geo.stride),
        list(geo.pads),
        list(geo.dilation),
        list(geo.kernel),
        geo.groups,
        geo.offset_groups,
    )


def _translation_table(standard_op: bool) -> dict:
    import onnxscript
    from onnxscript import opset19

    schema.register_onnx_schema()
    custom_op = onnxscript.values.Opset(schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)[schema.CUSTOM_OP_TYPE]

    def attributes(strides, pads, dilations, kernel_shape, group, offset_group) -> dict:
        return dict(dilations=list(dilations), group=group, kernel_shape=list(kernel_shape),
                    offset_group=offset_group, pads=list(pads), strides=list(strides))

    def custom_node(input, offset, weight, bias, mask, *attrs):
        inputs = [input, weight, offset, bias, mask]
        while inputs[-1] is None:  # trailing optional inputs are left out; inner ones stay empty
            inputs.pop()
        return custom_op(*inputs, **attributes(*attrs), **schema.PLUGIN_ATTRIBUTES)

    def standard_node(input, offset, weight, bias, mask, *attrs):
        return opset19.DeformConv(input, weight, offset, bias, mask, **attributes(*attrs))

    return {torch.ops.dcn_deploy.deform_conv2d.default: standard_node if standard_op else custom_node}


def _dynamic_shapes(example_inputs: tuple[Tensor, ...]) -> tuple[dict[int, Any], ...]:
    """Batch, height and width dynamic for every 4-D input; other inputs static."""
    dims = []
    for tensor in example_inputs:
        if isinstance(tensor, Tensor) and tensor.dim() == 4:
            dims.append({0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
        elif isinstance(tensor, Tensor) and tensor.dim() >= 1:
            dims.append({0: torch.export.Dim.DYNAMIC})
        else:
            dims.append(None)
    return tuple(dims)


def _name_dcn_nodes(model: onnx.ModelProto) -> list[str]:
    """Give each DeformConv node its module path as name, so errors name the layer."""
    names = []
    used = {node.name for node in model.graph.node}
    for node in model.graph.node:
        if node.op_type not in (schema.CUSTOM_OP_TYPE, schema.STANDARD_OP_TYPE):
            continue
        scope = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
        try:
            parts = [str(p) for p in ast.literal_eval(scope) if p] if scope else []
        except (ValueError, SyntaxError):
            parts = []
        path = ".".join(parts[:-1])  # the module path, as in named_modules(); the last scope is the op
        if path:
            candidate, k = path, 1
            while candidate in used and candidate != node.name:
                k += 1
                candidate = f"{path}_{k}"
            used.discard(node.name)
            node.name = candidate
            used.add(candidate)
        names.append(node.name)
    return names


def export_onnx(
    model: torch.nn.Module,
    example_inputs: Tensor | tuple[Tensor, ...],
    path: str | os.PathLike,
    dynamic: bool = True,
    standard_op: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Export ``model`` to ``path``; each DCN layer becomes one DeformConv node.

    Args:
        dynamic: batch, height and width of every 4-D input are dynamic.
        standard_op: emit standard ``DeformConv`` (opset 19) instead of the custom node.
        metadata: extra ``metadata_props`` (keys get the ``dcn_deploy.`` prefix).

    Returns the written ``onnx.ModelProto`` (checked with ``onnx.checker``).
    """
    if isinstance(example_inputs, Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                model,
                example_inputs,
                dynamo=True,
                opset_version=schema.STANDARD_OPSET,
                dynamic_shapes=_dynamic_shapes(example_inputs) if dynamic else None,
                custom_translation_table=_translation_table(standard_op),
                input_names=list(input_names) if input_names else None,
                output_names=list(output_names) if output_names else None,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
    proto = program.model_proto
    if not standard_op:
        _ensure_opset_import(proto, schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)
    nodes = _name_dcn_nodes(proto)
    info = {"node_kind": "standard" if standard_op else "custom", "dcn_nodes": json.dumps(nodes)}
    info.update(metadata or {})
    set_metadata(proto, info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return proto


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs warnings about optional packages (torchvision) and its own deprecations."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _ensure_opset_import(model: onnx.ModelProto, domain: str, version: int) -> None:
    for entry in model.opset_import:
        if entry.domain == domain:
            entry.version = max(entry.version, version)
            return
    model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Write ``dcn_deploy.*`` metadata_props, replacing older values of the same keys."""
    keys = {METADATA_PREFIX + k: str(v) for k, v in values.items()}
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in keys.items():
        model.metadata_props.add(key=key, value=value)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``dcn_deploy.*`` metadata_props, prefix removed."""
    n = len(METADATA_PREFIX)
    return {p.key[n:]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}
