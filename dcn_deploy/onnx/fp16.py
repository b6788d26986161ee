"""The FP16 graph pass of ``dcn-deploy export --precision fp16``: a float16 graph whose offset/mask path
(the convolutions that feed only DCN offsets and masks) stays float32, with redundant casts removed."""
from __future__ import annotations

import copy
import json
from collections import defaultdict

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

from dcn_deploy.onnx import schema
from dcn_deploy.onnx.model_info import set_metadata


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

    schema.register_onnx_schema()  # Shape inference inside the converter knows the custom node.
    model = copy.deepcopy(model)
    schema.name_unnamed_nodes(model.graph)  # the converter keeps nodes float32 by name
    # The exporter lists initializers in value_info too; the converter would mark those float16
    # even where it keeps the initializer float32 (for a float32 node), and add no-op casts.
    initializers = {tensor.name for tensor in model.graph.initializer}
    for info in [info for info in model.graph.value_info if info.name in initializers]:
        model.graph.value_info.remove(info)
    fp32_nodes = offset_only_nodes(model.graph) if fp32_offsets else []
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


_SAMPLING_INPUTS = (2, 4)  # offset, mask


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[int, int]]]:
    """Tensor name -> [(node index, input index)] of the nodes that read it."""
    uses: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for k, node in enumerate(graph.node):
        for i, name in enumerate(node.input):
            if name:
                uses[name].append((k, i))
    return uses


def offset_only_nodes(graph: onnx.GraphProto, dcn=schema.is_custom_node) -> list[str]:
    """Names of the nodes whose outputs feed nothing but offsets and masks of the DCN nodes ``dcn`` picks
    (default: custom ones; FP16 keeps only theirs float32: a standard node has one type for all inputs),
    directly or through other such nodes. Expects topologically sorted nodes."""
    uses = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    selected = [False] * len(graph.node)
    for k in reversed(range(len(graph.node))):
        outputs = [name for name in graph.node[k].output if name]
        if not outputs or any(name in graph_outputs for name in outputs):
            continue
        selected[k] = all(
            uses.get(name) and all(
                selected[c] or (dcn(graph.node[c]) and i in _SAMPLING_INPUTS) for c, i in uses[name]
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
            elif schema.is_custom_node(reader) and i in _SAMPLING_INPUTS:
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
