"""Export to ONNX with every DCN layer as one DeformConv node.

While ``torch.onnx.export`` traces a model, :func:`dcn_deploy.deform_conv2d` records one
``dcn_deploy::deform_conv2d`` torch custom op per call (see ``ops.py``); the translation
table below turns each into one ONNX node, custom or standard (``schema.py``).
"""
from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import logging
import warnings
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import onnx
import torch
from torch import Tensor

from . import schema
from .ops import DeformConvGeometry, deform_conv2d_reference, output_size
from .rewrite import fill_empty_bias

__all__ = ["export_onnx", "convert_to_fp16", "deform_conv2d_node", "METADATA_PREFIX", "PRECISIONS"]

METADATA_PREFIX = "dcn_deploy."
PRECISIONS = ("fp32", "fp16")


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
    precision: str = "fp32",
    keep_io_types: bool = False,
) -> onnx.ModelProto:
    """Export ``model`` to ``path``; each DCN layer becomes one DeformConv node.

    Args:
        dynamic: batch, height and width of every 4-D input are dynamic.
        standard_op: emit standard ``DeformConv`` (opset 19) instead of the custom node.
        metadata: extra ``metadata_props`` (keys get the ``dcn_deploy.`` prefix).
        precision: ``"fp32"``, or ``"fp16"`` for a float16 graph (:func:`convert_to_fp16`):
            TensorRT 11 builds every network strongly typed, so the precision lives in the ONNX.
        keep_io_types: with ``"fp16"``, keep float32 graph inputs and outputs (casts inside).

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
    nodes = _name_dcn_nodes(proto)
    if not standard_op:
        _ensure_opset_import(proto, schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)
        fill_empty_bias(proto)  # named after the node, so after _name_dcn_nodes
    info = {"node_kind": "standard" if standard_op else "custom", "dcn_nodes": json.dumps(nodes)}
    if precision == "fp16":
        proto = convert_to_fp16(proto, keep_io_types=keep_io_types)
    else:
        info["precision"] = "fp32"
    info.update(metadata or {})
    set_metadata(proto, info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return proto


def convert_to_fp16(model: onnx.ModelProto, keep_io_types: bool = False, fp32_offsets: bool = True) -> onnx.ModelProto:
    """A float16 copy of a float32 ONNX exported by :func:`export_onnx`.

    The conversion is ONNX Runtime's own ``onnxruntime.transformers.float16`` converter
    (shipped in the pinned onnxruntime wheel; its default op block list applies). What stays
    float32, with ``fp32_offsets`` (custom nodes only: standard ``DeformConv`` has one type for
    all inputs): every node that computes nothing but offsets and masks of DCN nodes (the
    layer's ``conv_offset`` convolution, the slices, the mask's sigmoid, boundary emulation),
    so the DCN nodes take float32 offsets and masks and sample at float32 positions; only
    their ``X``, ``W``, ``B`` and ``Y`` are float16. This costs one small convolution
    (``3*offset_group*kh*kw`` output channels) per layer in float32.

    ``keep_io_types`` keeps float32 graph inputs and outputs, cast to and from float16 inside.
    The result records ``dcn_deploy.precision = fp16`` in its metadata and is checked with
    ``onnx.checker``.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    schema.register_onnx_schema()  # Shape inference inside the converter knows the custom node.
    model = copy.deepcopy(model)
    _name_all_nodes(model.graph)
    # The exporter lists initializers in value_info too; the converter would mark those float16
    # even where it keeps the initializer float32 (for a float32 node), and add no-op casts.
    initializers = {tensor.name for tensor in model.graph.initializer}
    for info in [info for info in model.graph.value_info if info.name in initializers]:
        model.graph.value_info.remove(info)
    fp32_nodes = _offset_only_nodes(model.graph) if fp32_offsets else []
    converted = convert_float_to_float16(
        model, keep_io_types=keep_io_types, node_block_list=fp32_nodes, disable_shape_infer=False
    )
    _drop_duplicate_casts(converted.graph)
    _drop_float16_round_trips(converted.graph, set(fp32_nodes))
    _sort_topologically(converted.graph)
    set_metadata(converted, {
        "precision": "fp16",
        "keep_io_types": str(bool(keep_io_types)).lower(),
        "fp32_nodes": json.dumps(fp32_nodes),
    })
    onnx.checker.check_model(converted)
    return converted


def _is_custom_dcn(node: onnx.NodeProto) -> bool:
    return node.op_type == schema.CUSTOM_OP_TYPE and node.domain == schema.CUSTOM_DOMAIN


_SAMPLING_INPUTS = (2, 4)  # offset, mask


def _name_all_nodes(graph: onnx.GraphProto) -> None:
    """The converter keeps nodes float32 by name: name the unnamed ones."""
    used = {node.name for node in graph.node}
    for index, node in enumerate(graph.node):
        if not node.name:
            name, k = f"{node.op_type}_{index}", 1
            while name in used:
                k += 1
                name = f"{node.op_type}_{index}_{k}"
            node.name = name
            used.add(name)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[int, int]]]:
    """Tensor name -> [(node index, input index)] of the nodes that read it."""
    uses: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for k, node in enumerate(graph.node):
        for i, name in enumerate(node.input):
            if name:
                uses[name].append((k, i))
    return uses


def _offset_only_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes whose outputs feed nothing but offsets and masks of custom DCN nodes
    (directly or through other such nodes). Expects topologically sorted nodes."""
    uses = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    selected = [False] * len(graph.node)
    for k in reversed(range(len(graph.node))):
        outputs = [name for name in graph.node[k].output if name]
        if not outputs or any(name in graph_outputs for name in outputs):
            continue
        selected[k] = all(
            uses.get(name) and all(
                selected[c] or (_is_custom_dcn(graph.node[c]) and i in _SAMPLING_INPUTS) for c, i in uses[name]
            )
            for name in outputs
        )
    return [graph.node[k].name for k in range(len(graph.node)) if selected[k]]


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast" or node.domain not in schema.STANDARD_DOMAINS:
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_duplicate_casts(graph: onnx.GraphProto) -> None:
    """The converter adds one ``<value>_cast_to_fp32`` Cast per float32 node that reads a float16
    value, all with the same output name when several do: keep the first."""
    seen: set[str] = set()
    kept = []
    for node in graph.node:
        if _cast_to(node) is not None and node.output[0] in seen:
            continue
        seen.update(node.output)
        kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _drop_float16_round_trips(graph: onnx.GraphProto, fp32_nodes: set[str]) -> None:
    """The converter casts every output of a float32 node (and, with ``keep_io_types``, every
    float32 graph input) to float16, and back to float32 for the next float32 node. Into float32
    nodes, and into a DCN node's offset or mask, the float32 value is used directly instead; a
    float32 node output no longer cast at all gets its original name back (the converter renamed
    it ``<name>_cast_to_fp16``)."""
    producer = {name: node for node in graph.node for name in node.output if name}
    uses = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    float32_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    removed: set[int] = set()
    renames: dict[str, str] = {}
    for k, cast16 in enumerate(graph.node):
        if _cast_to(cast16) != onnx.TensorProto.FLOAT16 or not cast16.input:
            continue
        source = producer.get(cast16.input[0])
        from_fp32_node = source is not None and source.name in fp32_nodes
        if not from_fp32_node and cast16.input[0] not in float32_inputs:
            continue
        fp32_value, fp16_value = cast16.input[0], cast16.output[0]
        kept_uses = 0
        for c, i in uses.get(fp16_value, []):
            reader = graph.node[c]
            if _cast_to(reader) == onnx.TensorProto.FLOAT and reader.output[0] not in graph_outputs:
                for c2, i2 in uses.get(reader.output[0], []):  # Read the float32 value directly.
                    graph.node[c2].input[i2] = fp32_value
                removed.add(c)
            elif _is_custom_dcn(reader) and i in _SAMPLING_INPUTS:
                reader.input[i] = fp32_value
            else:
                kept_uses += 1
        if kept_uses == 0 and fp16_value not in graph_outputs:
            removed.add(k)
            if from_fp32_node:
                renames[fp32_value] = fp16_value
    kept = [node for k, node in enumerate(graph.node) if k not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    live = {name for node in graph.node for name in list(node.input) + list(node.output)}
    # The float16 value_info of a renamed value is stale: its float32 one takes the name.
    stale = [info for info in graph.value_info if info.name not in live or info.name in renames.values()]
    for info in stale:
        graph.value_info.remove(info)
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """The converter appends its Cast nodes at the end; ONNX (and TensorRT's parser) want every
    node after the producers of its inputs. Keeps the original order except to move a node
    after its producers."""
    producer = {name: k for k, node in enumerate(graph.node) for name in node.output if name}
    state = [0] * len(graph.node)  # 0 new, 1 on the stack, 2 emitted
    order: list[int] = []
    for root in range(len(graph.node)):
        stack = [root]
        while stack:
            k = stack[-1]
            if state[k] == 2:
                stack.pop()
                continue
            state[k] = 1
            waiting = [producer[name] for name in graph.node[k].input if name in producer and state[producer[name]] != 2]
            if any(state[p] == 1 for p in waiting):
                raise ValueError(f"the graph has a cycle through node '{graph.node[k].name}'")
            if waiting:
                stack.append(waiting[0])
            else:
                state[k] = 2
                order.append(k)
                stack.pop()
    nodes = [graph.node[k] for k in order]
    del graph.node[:]
    graph.node.extend(nodes)


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
