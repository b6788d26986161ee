"""``dcn-deploy inspect``: what an ONNX file holds for deployment: its DCN nodes (flavour, geometry,
shapes, precision), other custom ops, opsets, inputs and outputs, which runtimes can run it, and the
nodes ``quantize`` quantizes with their PyTorch layers (names ``quantize --keep-float`` takes).

The runtimes judged (``RUNTIMES``):

==================================  =============================================================
runtime                             runs
==================================  =============================================================
onnxruntime + dcn_deploy library    ``DcnDeformConv`` (and INT8) nodes; standard ``DeformConv``
                                    through ONNX Runtime's own kernel (>= 1.25, opset >= 19)
onnxruntime native                  standard ``DeformConv`` only (>= 1.25, opset >= 19)
tensorrt + dcn_deploy plugin        ``DcnDeformConv`` (and INT8) nodes; standard ``DeformConv``
                                    through the built-in importer
tensorrt built-in                   standard ``DeformConv`` (TensorRT's own importer)
tensorrt-rtx + dcn_deploy plugin    ``DcnDeformConv`` only: TensorRT-RTX has no built-in DeformConv
==================================  =============================================================

Other flavours run nowhere here until ``dcn-deploy rewrite`` turns them into one of these
nodes, which the verdict says; a custom op that is no DCN needs its own implementation in
every runtime.
"""
from __future__ import annotations

import os
from collections import Counter

import onnx
from onnx import helper

from dcn_deploy.onnx import flavours, schema
from dcn_deploy.onnx.layers import layer_table
from dcn_deploy.onnx.model_info import get_metadata, onnx_precision
from dcn_deploy.onnx.model_info import read_onnx


def _type_name(elem_type: int | None) -> str | None:
    if not elem_type:
        return None
    return helper.tensor_dtype_to_string(elem_type).removeprefix("TensorProto.").lower()


def _value_info(value: onnx.ValueInfoProto) -> dict:
    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return {"name": value.name, "dtype": _type_name(tensor.elem_type), "shape": shape}


def _location(model: onnx.ModelProto, graph: onnx.GraphProto | None) -> str:
    if graph is None:
        return "function"
    return "main" if graph is model.graph else "subgraph"


def _dcn_node(model, graph, node, flavour, context) -> dict:
    entry = {
        "name": node.name, "op_type": node.op_type, "domain": node.domain, "flavour": flavour.name if flavour else None,
        "graph": _location(model, graph), "attributes": None, "modulated": None, "bias": None,
        "input_shape": None, "weight_shape": None, "output_shape": None, "dtype": None, "offset_dtype": None,
        "error": None,
    }
    if flavour is None:
        entry["error"] = str(flavours.unknown_node_error(node))
        return entry
    try:
        canonical = flavour.read(node, context)
    except flavours.RewriteError as error:
        entry["error"] = str(error)
        return entry
    inputs = canonical.inputs + [""] * (5 - len(canonical.inputs))
    x, w, offset, bias, mask = inputs
    shapes = context.shapes
    entry.update(
        attributes=canonical.attributes, modulated=bool(mask), bias=bool(bias),
        input_shape=shapes.dims.get(x), weight_shape=shapes.dims.get(w), output_shape=shapes.dims.get(node.output[0]),
        dtype=_type_name(shapes.elem_types.get(x) or shapes.elem_types.get(w)),
        offset_dtype=_type_name(shapes.elem_types.get(offset)),
    )
    if canonical.prelude:  # the offsets come out of the inserted Slice: the node's own input says the type
        entry["offset_dtype"] = _type_name(shapes.elem_types.get(node.input[1]))
    return entry


def _is_custom_op(node: onnx.NodeProto) -> bool:
    """A node no standard ONNX opset defines: a non-standard domain, or an op_type unknown to ai.onnx."""
    if node.domain not in schema.STANDARD_DOMAINS:
        return True
    return not onnx.defs.has(node.op_type)


RUNTIMES = (
    "onnxruntime + dcn_deploy library",
    "onnxruntime native",
    "tensorrt + dcn_deploy plugin",
    "tensorrt built-in",
    "tensorrt-rtx + dcn_deploy plugin",
)
# which DCN node kinds each runtime runs, and the rewrite target that makes a model runnable there
_RUNS = {
    "onnxruntime + dcn_deploy library": ({"dcn_deploy", "int8", "standard"}, "custom"),
    "onnxruntime native": ({"standard"}, "standard"),
    "tensorrt + dcn_deploy plugin": ({"dcn_deploy", "int8", "standard"}, "custom"),
    "tensorrt built-in": ({"standard"}, "standard"),
    "tensorrt-rtx + dcn_deploy plugin": ({"dcn_deploy", "int8"}, "custom"),
}


def _runtimes(kinds: set[str], unknown: list[str], other_ops: list[str], opset: int) -> list[dict]:
    verdicts = []
    for runtime in RUNTIMES:
        runs, target = _RUNS[runtime]
        notes = []
        if unknown:
            status, why = "no", f"unknown DCN node(s) {unknown[:3]}"
        elif kinds <= runs:
            status, why = "yes", "every DCN node is one it runs" if kinds else "no DCN node"
            if "standard" in kinds and opset < schema.STANDARD_OPSET:
                status = "no"
                why = f"standard DeformConv needs ai.onnx opset >= {schema.STANDARD_OPSET}, model has {opset}"
        elif "int8" in kinds and "int8" not in runs:
            status, why = "no", "INT8 DCN nodes have no standard form"
        else:
            status, why = "after rewrite", f"dcn-deploy rewrite --to {target}"
            if target == "standard" and opset < schema.STANDARD_OPSET:
                notes.append(f"and ai.onnx opset >= {schema.STANDARD_OPSET} (model has {opset})")
        if other_ops and status != "no":
            notes.append(f"needs implementations of {other_ops[:4]}{' ...' if len(other_ops) > 4 else ''}")
        if runtime.startswith("onnxruntime native") and status == "yes" and kinds:
            notes.append("ONNX Runtime >= 1.25")
        verdicts.append({"runtime": runtime, "status": status, "why": "; ".join([why] + notes)})
    return verdicts


def inspect_onnx(model: str | os.PathLike | onnx.ModelProto) -> dict:
    """A JSON-ready description of an ONNX model for deployment (see the module docstring)."""
    path = None
    if not isinstance(model, onnx.ModelProto):
        path = str(model)
        model = read_onnx(model)
    context = flavours.ReadContext(flavours.ValueShapes(model), flavours.default_opset(model))
    dcn = [_dcn_node(model, graph, node, flavour, context)
           for graph, node, flavour in flavours.find_dcn_nodes(model)]
    other = Counter()
    int8 = 0
    node_count = 0
    for _, nodes in flavours.node_lists(model):
        for node in nodes:
            node_count += 1
            if node.domain == schema.CUSTOM_DOMAIN and node.op_type in schema.INT8_OP_TYPES:
                int8 += 1
            elif flavours.identify(node) is None and not flavours.looks_deformable(node) and _is_custom_op(node):
                other[f"{node.domain}::{node.op_type}" if node.domain else node.op_type] += 1
    kinds = {entry["flavour"] for entry in dcn if entry["flavour"]}
    kinds = {"standard" if k == "standard" else "dcn_deploy" if k == "dcn_deploy" else f"foreign:{k}" for k in kinds}
    if int8:
        kinds.add("int8")
    unknown = [entry["name"] or entry["op_type"] for entry in dcn if entry["flavour"] is None]
    opset = flavours.default_opset(model)
    metadata = get_metadata(model)
    return {
        "path": path,
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p) or None,
        "ir_version": model.ir_version,
        "opsets": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "inputs": [_value_info(v) for v in model.graph.input
                   if v.name not in {init.name for init in model.graph.initializer}],
        "outputs": [_value_info(v) for v in model.graph.output],
        "nodes": node_count,
        "precision": onnx_precision(model),
        "dcn_nodes": dcn,
        "dcn_flavours": dict(Counter(entry["flavour"] or "unknown" for entry in dcn)),
        "int8_dcn_nodes": int8,
        "other_custom_ops": dict(other),
        "runtimes": _runtimes(kinds, unknown, sorted(other), opset),
        # what quantize quantizes, by node and PyTorch layer (quantize --keep-float takes either)
        "quantizable_layers": layer_table(model) if not int8 else [],
        "metadata": metadata,
    }
