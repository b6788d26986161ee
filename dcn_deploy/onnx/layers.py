"""The layers ``dcn-deploy quantize`` quantizes, and the names a user may give them: ONNX node names,
or the PyTorch module paths ``dcn-deploy export`` records (metadata ``dcn_deploy.layers``: node name ->
module path, read from the exporter's name scopes before its debugging metadata is stripped)."""
from __future__ import annotations

import difflib
from typing import Sequence

import onnx

from dcn_deploy.onnx.fp16 import offset_only_nodes
from dcn_deploy.onnx.model_info import recorded_layers
from dcn_deploy.onnx.schema import QDQ_OP_TYPES, STANDARD_DOMAINS, is_dcn_node


def quantizable_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes quantize quantizes, in graph order: DCN nodes and Conv/MatMul/Gemm, except the convs that
    compute DCN offsets and masks (sampling positions are never quantized)."""
    offsets = set(offset_only_nodes(model.graph, is_dcn_node))
    return [n for n in model.graph.node
            if is_dcn_node(n) or (n.op_type in QDQ_OP_TYPES and n.domain in STANDARD_DOMAINS
                                  and n.name not in offsets)]


def resolve_keep_float(model: onnx.ModelProto, names: Sequence[str]) -> list[str]:
    """The node names that ``names`` mean: a quantizable node's name (see ``dcn-deploy inspect``), or a
    layer (module) path as written in PyTorch (``backbone.layer2.0.conv2``, ``dcn1``): every quantizable
    node of that module and its submodules, by the map export records (``dcn_deploy.layers``). An unknown
    name is a ValueError listing the close matches."""
    quantizable = [n.name for n in quantizable_nodes(model)]
    layers = {node: path for node, path in recorded_layers(model).items() if node in quantizable}
    op_types = {n.name: n.op_type for n in model.graph.node}
    offsets = set(offset_only_nodes(model.graph, is_dcn_node))
    kept: list[str] = []
    for name in names:
        if name in quantizable:
            found = [name]
        else:
            found = [node for node in quantizable if node in layers and (
                layers[node] == name or layers[node].startswith(name + "."))]
        if not found:
            if name in offsets:
                raise ValueError(f"--keep-float {name}: this {op_types[name]} computes DCN offsets/masks, which "
                                 "are never quantized")
            if name in op_types:
                raise ValueError(f"--keep-float {name}: a {op_types[name]} node, which quantize does not "
                                 f"quantize (it quantizes {', '.join(QDQ_OP_TYPES)} and DCN nodes)")
            paths = {p for path in layers.values() for p in _prefixes(path)}
            close = difflib.get_close_matches(name, sorted(set(quantizable) | paths), n=5, cutoff=0.6)
            raise ValueError(f"--keep-float {name}: no such node or layer in the model"
                             f"{f' (close: {close})' if close else ''}; `dcn-deploy inspect MODEL` lists the "
                             "quantizable nodes and their layers")
        kept.extend(node for node in found if node not in kept)
    return kept


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts) + 1)]


def layer_table(model: onnx.ModelProto) -> list[dict]:
    """The quantizable nodes (graph order): node name, op type (``DCN`` for DCN nodes), PyTorch layer."""
    layers = recorded_layers(model)
    return [{"node": n.name, "op_type": "DCN" if is_dcn_node(n) else n.op_type, "layer": layers.get(n.name)}
            for n in quantizable_nodes(model)]
