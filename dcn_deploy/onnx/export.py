"""Export to ONNX with every DCN layer as one DeformConv node.

While ``torch.onnx.export`` traces a model, :func:`dcn_deploy.deform_conv2d` records one
``dcn_deploy::deform_conv2d`` torch custom op per call (see ``ops.py``); the translation
table below turns each into one ONNX node, custom or standard (``schema.py``). A detector's
:func:`dcn_deploy.op.nms.non_max_suppression` becomes one standard ``NonMaxSuppression`` node the same way.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import onnx
import onnxscript
import torch
from onnxscript import opset19
from torch import Tensor

from dcn_deploy.onnx import schema
from dcn_deploy.onnx.fp16 import convert_to_fp16
from dcn_deploy.onnx.model_info import PRECISIONS, set_metadata
from dcn_deploy.onnx.rewrite import fill_empty_bias
from dcn_deploy.op import nms  # noqa: F401  (registers torch.ops.dcn_deploy.non_max_suppression)


def _translation_table(standard_op: bool) -> dict:
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

    def nms_node(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold):
        return opset19.NonMaxSuppression(
            boxes, scores, opset19.Constant(value_ints=[max_output_boxes_per_class]),
            opset19.Constant(value_floats=[iou_threshold]), opset19.Constant(value_floats=[score_threshold]),
            center_point_box=0)

    return {torch.ops.dcn_deploy.deform_conv2d.default: standard_node if standard_op else custom_node,
            torch.ops.dcn_deploy.non_max_suppression.default: nms_node}


def _dynamic_shapes(example_inputs: tuple[Tensor, ...], size_multiple: int = 1) -> tuple[dict[int, Any], ...]:
    """Batch, height and width dynamic for every 4-D input; other inputs static. With ``size_multiple`` > 1,
    height and width are declared ``size_multiple * k``: a stride-32 network whose up-sampling path adds
    feature maps of neighbouring levels exports only so (torch.export cannot prove the sizes agree for
    every height)."""
    dims = []
    for index, tensor in enumerate(example_inputs):
        if isinstance(tensor, Tensor) and tensor.dim() == 4:
            if size_multiple > 1:
                for axis in (2, 3):
                    if tensor.shape[axis] % size_multiple:
                        raise ValueError(f"input {index} has shape {tuple(tensor.shape)}: height and width must "
                                         f"be multiples of {size_multiple}")
                    if tensor.shape[axis] == size_multiple:  # k = 1: torch.export specialises sizes of 1
                        raise ValueError(f"input {index} has shape {tuple(tensor.shape)}: a dynamic export needs an "
                                         f"example height and width of at least 2 x {size_multiple} (or export "
                                         "static)")
                height, width = (torch.export.Dim(f"{axis}{index}", min=1) for axis in ("h", "w"))
                dims.append({0: torch.export.Dim.DYNAMIC, 2: size_multiple * height, 3: size_multiple * width})
                continue
            dims.append({0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
        elif isinstance(tensor, Tensor) and tensor.dim() >= 1:
            dims.append({0: torch.export.Dim.DYNAMIC})
        else:
            dims.append(None)
    return tuple(dims)


def _module_path(node: onnx.NodeProto) -> str:
    """The module path (as in ``named_modules()``) the exporter records for ``node``, or ""."""
    scope = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
    try:
        scopes = [str(p) for p in ast.literal_eval(scope) if p] if scope else []
    except (ValueError, SyntaxError):
        return ""
    modules = scopes[:-1]  # the last scope is the op
    if any("." in s for s in modules):  # torch >= 2.9: each scope is a full path ('layer', 'layer.0', ...)
        return modules[-1]
    return ".".join(modules)  # older exporters: one component per scope


def _name_dcn_nodes(model: onnx.ModelProto) -> list[str]:
    """Give each DeformConv node its module path as name, so errors name the layer."""
    names = []
    used = {node.name for node in model.graph.node}
    for node in model.graph.node:
        if node.op_type not in (schema.CUSTOM_OP_TYPE, schema.STANDARD_OP_TYPE):
            continue
        path = _module_path(node)
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


def layer_map(model: onnx.ModelProto) -> dict[str, str]:
    """ONNX node name -> the PyTorch module path it comes from, for the quantizable nodes, read from
    the exporter's name scopes (recorded as ``dcn_deploy.layers`` since stripping removes them)."""
    return {node.name: path for node in model.graph.node
            if node.op_type in schema.LAYER_OP_TYPES and node.name and (path := _module_path(node))}


def export_onnx(
    model: torch.nn.Module,
    example_inputs: Tensor | tuple[Tensor, ...],
    path: str | os.PathLike,
    dynamic: bool = True,
    standard_op: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    metadata: dict[str, str] | None = None,
    precision: str = "fp32",
    keep_io_types: bool = False,
    keep_debug_info: bool = False,
    size_multiple: int = 1,
) -> onnx.ModelProto:
    """Export ``model`` to ``path``; each DCN layer becomes one DeformConv node.

    Args:
        dynamic: batch, height and width of every 4-D input are dynamic.
        standard_op: emit standard ``DeformConv`` (opset 19) instead of the custom node.
        metadata: extra ``metadata_props`` (keys get the ``dcn_deploy.`` prefix).
        precision: ``"fp32"``, or ``"fp16"`` for a float16 graph (:func:`convert_to_fp16`):
            TensorRT 11 builds every network strongly typed, so the precision lives in the ONNX.
        keep_io_types: with ``"fp16"``, keep float32 graph inputs and outputs (casts inside).
        keep_debug_info: keep the exporter's debugging metadata (:func:`strip_debug_info` removes it).
        size_multiple: with ``dynamic``, height and width are multiples of this (e.g. 32 for a network
            that down-samples 5 times and adds the levels back up).

    Returns the written ``onnx.ModelProto`` (checked with ``onnx.checker``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    if keep_io_types and precision != "fp16":
        raise ValueError("keep_io_types applies to precision='fp16' only")
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
                dynamic_shapes=_dynamic_shapes(example_inputs, size_multiple) if dynamic else None,
                custom_translation_table=_translation_table(standard_op),
                input_names=list(input_names) if input_names else None,
                output_names=list(output_names) if output_names else None,
                external_data=False,
                verbose=False,
            )
    finally:
        model.train(was_training)
    proto = program.model_proto
    nodes = _name_dcn_nodes(proto)
    if not standard_op:
        _ensure_opset_import(proto, schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)
        fill_empty_bias(proto)  # named after the node, so after _name_dcn_nodes
    info = {"node_kind": "standard" if standard_op else "custom", "dcn_nodes": json.dumps(nodes),
            # the example shapes: what `validate` draws inputs of (and builds a TensorRT profile for)
            "input_shapes": json.dumps([list(t.shape) for t in example_inputs]),
            # the module names a user knows (quantize --keep-float backbone.layer2.0.conv2), kept past the stripping
            "layers": json.dumps(layer_map(proto), separators=(",", ":"))}
    if precision == "fp16":
        proto = convert_to_fp16(proto, keep_io_types=keep_io_types)
    else:
        info["precision"] = "fp32"
    info.update(metadata or {})
    if not keep_debug_info:
        strip_debug_info(proto)
    set_metadata(proto, info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return proto


DEBUG_METADATA_PREFIXES = ("pkg.", "namespace")


def strip_debug_info(model: onnx.ModelProto) -> int:
    """Remove the exporter's debugging metadata from every node, value, initializer and graph (subgraphs
    included): stack traces, module class paths and name scopes (``pkg.torch.*``, ``pkg.onnxscript.*``,
    ``namespace``), which carry the exporting machine's absolute file paths into files users ship.
    The model's own ``metadata_props`` (``dcn_deploy.*``) stay. Returns the number of entries removed."""
    removed = 0

    def clean(holder) -> None:
        nonlocal removed
        kept = [p for p in holder.metadata_props if not p.key.startswith(DEBUG_METADATA_PREFIXES)]
        removed += len(holder.metadata_props) - len(kept)
        del holder.metadata_props[:]
        holder.metadata_props.extend(kept)

    def walk(graph: onnx.GraphProto) -> None:
        clean(graph)
        for holder in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
            clean(holder)
        for node in graph.node:
            clean(node)
            for attribute in node.attribute:
                for sub in [attribute.g, *attribute.graphs] if attribute.type in (
                        onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else []:
                    walk(sub)

    walk(model.graph)
    for function in model.functions:
        for node in function.node:
            clean(node)
    return removed


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
