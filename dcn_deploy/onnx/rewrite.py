"""Rewrite the DCN nodes of any ONNX file to the custom node or to standard ONNX DeformConv.

Every flavour of DCN node that other exporters write (mmdeploy/mmcv, TensorRT's plugin,
CenterNet-TensorRT ``DCNv2``, ``Plugin`` name=DCNv2, standard DeformConv from Paddle2ONNX or
torch; see ``flavours.py`` for each one's conventions) is read into canonical terms and written
as the target node, with any nodes its convention needs (a mask Sigmoid, offset Slices) in
front. Nodes in the main graph, in control-flow subgraphs and in local functions are rewritten.
Standard nodes may omit attributes with defaults; the written node always carries all six,
with ``kernel_shape`` taken from the node or from the weight's shape.
"""
from __future__ import annotations

import os
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dcn_deploy.onnx import flavours, schema
from dcn_deploy.onnx.flavours import Canonical, RewriteError
from dcn_deploy.onnx.model_info import check_onnx, get_metadata, read_onnx, set_metadata

__all__ = ["RewriteError", "fill_empty_bias", "rewrite_onnx"]


def _weight_initializer(node: onnx.NodeProto, graph: onnx.GraphProto | None) -> onnx.TensorProto | None:
    if graph is None or len(node.input) < 2:
        return None
    return next((init for init in graph.initializer if init.name == node.input[1]), None)


def fill_empty_bias(model: onnx.ModelProto) -> int:
    """Give every custom node that has a mask but an empty bias input an all-zero bias initializer.

    TensorRT's ONNX parser hands a plugin an empty optional input as a null tensor, which
    plugins cannot take; a zero bias of M values costs nothing and keeps the inputs
    positional. Nodes whose weight is not an initializer are left as they are. Returns the
    number of nodes changed.
    """
    changed = 0
    for graph, nodes in flavours.node_lists(model):
        for node in nodes:
            if not (schema.is_custom_node(node) and len(node.input) == 5 and not node.input[3]):
                continue
            weight = _weight_initializer(node, graph)
            if weight is None or len(weight.dims) != 4:
                continue
            name = f"{node.name or node.output[0]}.zero_bias"
            dtype = helper.tensor_dtype_to_np_dtype(weight.data_type)
            graph.initializer.append(numpy_helper.from_array(np.zeros(weight.dims[0], dtype=dtype), name))
            node.input[3] = name
            changed += 1
    return changed


def _custom_node(node: onnx.NodeProto, canonical: Canonical) -> onnx.NodeProto:
    return helper.make_node(
        schema.CUSTOM_OP_TYPE, canonical.inputs, list(node.output), name=node.name, domain=schema.CUSTOM_DOMAIN,
        doc_string=node.doc_string, **canonical.attributes, **schema.PLUGIN_ATTRIBUTES,
    )


def _standard_node(node: onnx.NodeProto, canonical: Canonical) -> onnx.NodeProto:
    return helper.make_node(
        schema.STANDARD_OP_TYPE, canonical.inputs, list(node.output), name=node.name, doc_string=node.doc_string,
        **canonical.attributes,
    )


def _cast_offsets_to_data_type(nodes: list, index: int, types: dict[str, int]) -> int:
    """Standard DeformConv has one type for all inputs: cast a float32 offset/mask of a float16
    custom node (see export's fp16 conversion) to X's type. Returns the number of casts added."""
    node = nodes[index]
    data_type = types.get(node.input[0]) or types.get(node.input[1])  # X, else W
    casts = []
    for position in (2, 4):
        if position < len(node.input) and node.input[position]:
            source = node.input[position]
            if data_type is not None and types.get(source, data_type) != data_type:
                cast_name = f"{node.name or node.output[0]}.cast_input_{position}"
                casts.append(helper.make_node("Cast", [source], [cast_name], name=cast_name, to=data_type))
                node.input[position] = cast_name
    for offset, cast in enumerate(casts):
        nodes.insert(index + offset, cast)
    return len(casts)


def _set_opset(model: onnx.ModelProto, domain: str, version: int) -> None:
    for entry in model.opset_import:
        if entry.domain == domain:
            entry.version = max(entry.version, version)
            return
    model.opset_import.append(helper.make_opsetid(domain, version))


def rewrite_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    to: Literal["custom", "standard"] = "custom",
    output: str | os.PathLike | None = None,
) -> tuple[onnx.ModelProto, int]:
    """Rewrite every DCN node, of any flavour (``flavours.py``), to the ``custom`` node or to
    ``standard`` DeformConv.

    ``model`` is a ModelProto or a path; the result is saved to ``output`` when given.
    Returns ``(model, number of nodes rewritten)``. The model is modified in place when a
    ModelProto is passed. A node whose op_type says "deform"/"dcn" but that no flavour reads
    is a :class:`RewriteError` naming it.
    """
    if to not in ("custom", "standard"):
        raise ValueError(f"rewrite_onnx: 'to' must be 'custom' or 'standard', got {to!r}")
    where = "rewrite_onnx"
    if not isinstance(model, onnx.ModelProto):
        where = f"rewrite_onnx: {model}"
        model = read_onnx(model, "rewrite_onnx", load_external_data=True)
    # no checker on the input: other exporters' nodes (TensorRT's plugins in the default domain) have no
    # ONNX schema; the rewritten model is checked below
    target = flavours.CUSTOM if to == "custom" else flavours.STANDARD
    context = flavours.ReadContext(flavours.ValueShapes(model), flavours.default_opset(model))
    count = 0
    foreign_domains = set()
    for graph, nodes in flavours.node_lists(model):
        index = 0
        while index < len(nodes):
            node = nodes[index]
            flavour = flavours.identify(node)
            if flavour is None and flavours.looks_deformable(node):
                raise flavours.unknown_node_error(node)
            if flavour is None or flavour is target:
                index += 1
                continue
            canonical = flavour.read(node, context)
            if node.domain not in schema.STANDARD_DOMAINS:
                foreign_domains.add(node.domain)
            nodes[index].CopyFrom((_custom_node if to == "custom" else _standard_node)(node, canonical))
            for position, extra in enumerate(canonical.prelude):
                nodes.insert(index + position, extra)
            index += len(canonical.prelude)
            if to == "standard":
                index += _cast_offsets_to_data_type(nodes, index, context.shapes.elem_types)
            count += 1
            index += 1
    if count:
        if to == "custom":
            _set_opset(model, schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)
            fill_empty_bias(model)
        else:
            default = flavours.default_opset(model)
            if default < schema.STANDARD_OPSET:
                raise RewriteError(
                    f"{where}: the model imports ai.onnx opset {default}; standard DeformConv needs opset "
                    f">= {schema.STANDARD_OPSET}. Convert the model first "
                    f"(onnx.version_converter.convert_version(model, {schema.STANDARD_OPSET}))"
                )
    _drop_unused_domains(model, foreign_domains | ({schema.CUSTOM_DOMAIN} if to == "standard" else set()))
    if count and "node_kind" in get_metadata(model):
        set_metadata(model, {"node_kind": to})  # what dcn-deploy export recorded must stay true
    check_onnx(model, f"{where}, rewritten,")
    if output is not None:
        onnx.save(model, str(output))
    return model, count


def _drop_unused_domains(model: onnx.ModelProto, domains: set[str]) -> None:
    """Remove the opset imports of ``domains`` that no node uses any more."""
    used = {node.domain for _, nodes in flavours.node_lists(model) for node in nodes}
    used |= {function.domain for function in model.functions}
    kept = [e for e in model.opset_import if e.domain not in domains or e.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
