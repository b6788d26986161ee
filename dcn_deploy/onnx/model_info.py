"""What an ONNX model says of itself: the ``dcn_deploy.*`` metadata, its graph inputs, whether it uses the
custom op, and its precision (``PRECISIONS``: the one list, from ``dcn-deploy export`` to the TensorRT build)."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from dcn_deploy.onnx.schema import CUSTOM_OP_TYPE, INT8_OP_TYPES, register_onnx_schema

METADATA_PREFIX = "dcn_deploy."
PRECISIONS = ("fp32", "fp16")


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


def read_onnx(path, where: str = "", load_external_data: bool = False) -> onnx.ModelProto:
    """The model in the file at ``path``; FileNotFoundError when there is none, ValueError naming the file
    when it is not an ONNX model (truncated, corrupt, empty or another format)."""
    path = Path(path)
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise FileNotFoundError(f"{prefix}no ONNX file at {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, RuntimeWarning) as error:
        raise ValueError(f"{prefix}{path} is not a readable ONNX model (truncated or corrupt?): "
                         f"{error or type(error).__name__}") from None
    if not model.graph.node and not model.graph.output:
        raise ValueError(f"{prefix}{path} holds no ONNX graph ({path.stat().st_size} bytes: empty or not an "
                         f"ONNX file)")
    return model


def check_onnx(model: onnx.ModelProto, what: str = "the model") -> None:
    """``onnx.checker`` (this project's node schemas registered), lenient where ONNX Runtime is: a graph
    output without a type (some exporters and hand-written graphs leave it out; ONNX Runtime runs such
    models) must only be made by the graph, and the rest is checked on a copy without it; a graph input or
    output with a tensor type but no shape (the checker requires the field, ONNX Runtime does not) is
    checked on a copy with an empty one. A ValueError with the checker's message on one line when the
    graph is not valid ONNX (a node input nothing produces, a cycle, an unknown opset)."""
    register_onnx_schema()
    checked = model
    untyped = [output.name for output in model.graph.output if not output.HasField("type")]
    values = [*model.graph.input, *model.graph.output]
    shapeless = any(v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape") for v in values)
    if untyped or shapeless:
        made = {name for node in model.graph.node for name in node.output}
        made |= {value.name for value in model.graph.input} | {t.name for t in model.graph.initializer}
        missing = [name for name in untyped if name not in made]
        if missing:
            raise ValueError(f"{what} is not a valid ONNX model: graph output(s) {missing} are made by no node, "
                             f"input or initializer")
        checked = copy.deepcopy(model)
        kept = [output for output in checked.graph.output if output.HasField("type")]
        del checked.graph.output[:]
        checked.graph.output.extend(kept)
        for value in [*checked.graph.input, *checked.graph.output]:
            if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape"):
                value.type.tensor_type.shape.SetInParent()  # only for the check: the model keeps its values
    try:
        onnx.checker.check_model(checked)
    except onnx.checker.ValidationError as error:
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        raise ValueError(f"{what} is not a valid ONNX model: {text[:600]}") from None


def load_model(model):
    if isinstance(model, onnx.ModelProto):
        return model
    return read_onnx(model)


@dataclass(frozen=True)
class InputInfo:
    """A graph input: ``dims`` holds an int per static axis, the symbol (str) or None per dynamic
    axis; ``dims`` is None when the ONNX records no shape at all."""

    name: str
    dims: tuple[int | str | None, ...] | None
    elem_type: int

    @property
    def dynamic(self) -> bool:
        return self.dims is None or any(not isinstance(d, int) for d in self.dims)

    def describe(self) -> str:
        if self.dims is None:
            return "unknown shape"
        return "x".join(str(d) if d is not None else "?" for d in self.dims)


def onnx_inputs(model) -> list[InputInfo]:
    """The graph's real inputs (initializers listed as inputs by old exporters left out)."""
    proto = load_model(model)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = None
        if tensor.HasField("shape"):
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
            )
        inputs.append(InputInfo(value.name, dims, tensor.elem_type))
    return inputs


def uses_custom_op(model) -> bool:
    """Whether the graph has one of this project's custom nodes (float or INT8; it then needs the plugin)."""

    proto = load_model(model)
    graphs = [proto.graph] + [f for f in proto.functions]
    custom = (CUSTOM_OP_TYPE, *INT8_OP_TYPES)
    return any(node.op_type in custom for g in graphs for node in g.node)


def graph_precision(model) -> str:
    """``"fp16"`` when the graph holds any float16 tensor (input, output, initializer, value info,
    Cast/constant to float16), ``"fp32"`` when it holds float32 ones only, else ``"unknown"``."""

    proto = load_model(model)
    types = set()
    graph = proto.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        types.add(value.type.tensor_type.elem_type)
    for init in graph.initializer:
        types.add(init.data_type)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to":
                types.add(attr.i)
            elif attr.type == onnx.AttributeProto.TENSOR:
                types.add(attr.t.data_type)
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    if onnx.TensorProto.FLOAT in types:
        return "fp32"
    return "unknown"


def onnx_precision(model) -> str:
    """The ONNX's precision: its ``dcn_deploy.precision`` metadata (``dcn-deploy export
    --precision``) when that says fp32/fp16, else what :func:`graph_precision` finds."""

    proto = load_model(model)
    recorded = get_metadata(proto).get("precision")
    if recorded in PRECISIONS:
        return recorded
    return graph_precision(proto)


def recorded_input_shapes(model) -> list[tuple[int, ...]] | None:
    """The example input shapes ``dcn-deploy export`` recorded (metadata ``dcn_deploy.input_shapes``)."""

    recorded = get_metadata(load_model(model)).get("input_shapes")
    if not recorded:
        return None
    try:
        return [tuple(int(d) for d in shape) for shape in json.loads(recorded)]
    except (ValueError, TypeError):
        return None


def random_inputs(shapes: Sequence[Sequence[int]], seed: int) -> list[np.ndarray]:
    """Seeded standard-normal float32 inputs."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for shape in shapes]


def recorded_layers(model) -> dict[str, str]:
    """ONNX node name -> PyTorch module path of the quantizable nodes, as ``dcn-deploy export`` recorded it
    (metadata ``dcn_deploy.layers``); empty for files from other exporters."""
    try:
        layers = json.loads(get_metadata(load_model(model)).get("layers", "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in layers.items()} if isinstance(layers, dict) else {}
