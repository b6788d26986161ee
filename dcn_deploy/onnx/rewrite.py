"""Convert DeformConv nodes between the custom node and standard ONNX DeformConv.

Works on any ONNX file (for example one written by Paddle2ONNX or mmdeploy-free exporters):
nodes in the main graph, in control-flow subgraphs and in local functions are rewritten.
Standard nodes may omit attributes with defaults; the custom node always carries all six,
with ``kernel_shape`` taken from the node or from the weight initializer's shape.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dcn_deploy.onnx import schema
from dcn_deploy.onnx.model_info import check_onnx, read_onnx


class RewriteError(ValueError):
    """A node cannot be rewritten; the message names it."""


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _node_lists(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto | None, list]]:
    for graph in _graphs(model.graph):
        yield graph, graph.node
    for function in model.functions:
        yield None, function.node


def _is_standard(node: onnx.NodeProto) -> bool:
    return node.op_type == schema.STANDARD_OP_TYPE and node.domain in schema.STANDARD_DOMAINS


def _is_custom(node: onnx.NodeProto) -> bool:
    return node.op_type == schema.CUSTOM_OP_TYPE and node.domain == schema.CUSTOM_DOMAIN


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name or '(unnamed)'}'"


def _kernel_shape(node: onnx.NodeProto, graph: onnx.GraphProto | None, attrs: dict) -> list[int]:
    if "kernel_shape" in attrs:
        return list(attrs["kernel_shape"])
    if len(node.input) < 2 or not node.input[1]:
        raise RewriteError(f"{_describe(node)} has no weight input")
    weight = node.input[1]
    if graph is not None:
        for init in graph.initializer:
            if init.name == weight:
                return list(init.dims[2:])
        for info in list(graph.input) + list(graph.value_info):
            if info.name == weight:
                dims = info.type.tensor_type.shape.dim
                if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
                    return [d.dim_value for d in dims[2:]]
    raise RewriteError(
        f"{_describe(node)} has no kernel_shape attribute and its weight '{weight}' is not an "
        "initializer with a known shape; add kernel_shape to the node"
    )


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
    for graph, nodes in _node_lists(model):
        for node in nodes:
            if not (_is_custom(node) and len(node.input) == 5 and not node.input[3]):
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


def _to_custom(node: onnx.NodeProto, graph: onnx.GraphProto | None) -> onnx.NodeProto:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    unknown = set(attrs) - set(schema.ATTRIBUTES)
    if unknown:
        raise RewriteError(f"{_describe(node)} has attributes DeformConv does not define: {sorted(unknown)}")
    kernel = _kernel_shape(node, graph, attrs)
    if len(kernel) != 2:
        raise RewriteError(f"{_describe(node)}: only 2-D DeformConv is supported, kernel_shape is {kernel}")
    full = {
        "dilations": list(attrs.get("dilations", [1, 1])),
        "group": int(attrs.get("group", 1)),
        "kernel_shape": kernel,
        "offset_group": int(attrs.get("offset_group", 1)),
        "pads": list(attrs.get("pads", [0, 0, 0, 0])),
        "strides": list(attrs.get("strides", [1, 1])),
    }
    return helper.make_node(
        schema.CUSTOM_OP_TYPE,
        list(node.input),
        list(node.output),
        name=node.name,
        domain=schema.CUSTOM_DOMAIN,
        doc_string=node.doc_string,
        **full,
        **schema.PLUGIN_ATTRIBUTES,
    )


def _to_standard(node: onnx.NodeProto) -> onnx.NodeProto:
    kept = [a for a in node.attribute if a.name in schema.ATTRIBUTES]
    new = helper.make_node(
        schema.STANDARD_OP_TYPE, list(node.input), list(node.output), name=node.name, doc_string=node.doc_string
    )
    new.attribute.extend(kept)
    return new


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value whose type ONNX shape inference can tell."""
    schema.register_onnx_schema()
    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    for graph in _graphs(inferred.graph):
        for info in list(graph.input) + list(graph.value_info) + list(graph.output):
            if info.type.tensor_type.elem_type:
                types[info.name] = info.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
    return types


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
    """Rewrite every DeformConv node to the ``custom`` node or to ``standard`` DeformConv.

    ``model`` is a ModelProto or a path; the result is saved to ``output`` when given.
    Returns ``(model, number of nodes rewritten)``. The model is modified in place when a
    ModelProto is passed.
    """
    if to not in ("custom", "standard"):
        raise ValueError(f"rewrite_onnx: 'to' must be 'custom' or 'standard', got {to!r}")
    what = "rewrite_onnx: the input"
    if not isinstance(model, onnx.ModelProto):
        what = f"rewrite_onnx: {model}"
        model = read_onnx(model, "rewrite_onnx", load_external_data=True)
    check_onnx(model, what)
    count = 0
    types = _element_types(model) if to == "standard" else {}
    for graph, nodes in _node_lists(model):
        index = 0
        while index < len(nodes):
            node = nodes[index]
            if to == "custom" and _is_standard(node):
                nodes[index].CopyFrom(_to_custom(node, graph))
                count += 1
            elif to == "standard" and _is_custom(node):
                index += _cast_offsets_to_data_type(nodes, index, types)
                nodes[index].CopyFrom(_to_standard(nodes[index]))
                count += 1
            index += 1
    if count:
        if to == "custom":
            _set_opset(model, schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)
            fill_empty_bias(model)
        else:
            default = next((e.version for e in model.opset_import if e.domain in schema.STANDARD_DOMAINS), 0)
            if default < schema.STANDARD_OPSET:
                raise RewriteError(
                    f"the model imports ai.onnx opset {default}; standard DeformConv needs opset "
                    f">= {schema.STANDARD_OPSET}. Convert the model first "
                    f"(onnx.version_converter.convert_version(model, {schema.STANDARD_OPSET}))"
                )
    still_used = any(_is_custom(n) for _, nodes in _node_lists(model) for n in nodes)
    if to == "standard" and not still_used:
        kept = [e for e in model.opset_import if e.domain != schema.CUSTOM_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    check_onnx(model, "rewrite_onnx: the rewritten model")
    if output is not None:
        onnx.save(model, str(output))
    return model, count
