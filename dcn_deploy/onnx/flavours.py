"""DCN nodes as other exporters write them ("flavours"), and how each reads as the canonical node.

Every flavour below is read into canonical terms (inputs ``X, W, offset, B, mask``, the six ONNX
``DeformConv`` attributes, and any nodes that must run first), from which ``rewrite.py`` writes
this project's ``DcnDeformConv`` or standard ``DeformConv``. The conventions come from each
exporter's symbolic function and from the runtime kernel that executes the node (the kernel
decides what a node means when the two disagree); op types and domains live in ``schema.py``.

============  =========================  ===================  ========================  ==================
flavour       node (domain::op_type)     inputs               attributes                conventions
============  =========================  ===================  ========================  ==================
standard      ``::DeformConv``           X, W, offset, [B],   ONNX names; defaults may  canonical
              (ai.onnx, opset 19+;       [mask]               be omitted (kernel_shape
              Paddle2ONNX, torch, us)                         from W's shape)
dcn_deploy    ``dcn_deploy::``           as standard          all six + plugin_*        canonical
              ``DcnDeformConv``
mmcv_v2       ``mmdeploy::`` or          X, offset, mask, W,  stride, padding,          offsets interleaved
              ``mmcv::``                 [B] (B left out      dilation: (h, w);         (dy, dx) per tap;
              ``MMCVModulatedDeform``    when the layer has   groups, deform_groups     mask already
              ``Conv2d``                 none)                                          sigmoided (the Pack
                                                                                        layer does it in
                                                                                        PyTorch); B added
mmcv_v1       ``mmdeploy::`` or          X, offset, W         as mmcv_v2; mmdeploy      DCNv1, no mask, no
              ``mmcv::MMCVDeform``                            writes padding as         bias (mmcv's
              ``Conv2d``                                      (ph, ph, pw, pw); mmcv    ``bias`` attribute
                                                              adds bias (must be 0)     must be 0);
                                                              and im2col_step (no       interleaved offsets
                                                              numeric effect)
tensorrt      ``ModulatedDeformConv2d``  X, offset, mask, W,  stride, padding,          as mmcv_v2 (the
              (any domain; TensorRT      [B]                  dilation: int[2] read     kernel is mmcv's);
              OSS plugin v1/v2, nodes                         as (w, h): its enqueue    mask used as given;
              written with onnx-                              passes d[0] to the        Ho, Wo taken from
              graphsurgeon)                                   kernel's W argument;      the offset's shape
                                                              group, deformable_group
dcnv2         ``DCNv2`` / ``DCNv2Plugin``  X, offset, mask, W,  stride, padding,          CharlesShang/mmdet
              (any domain; CaoWGG/       B                    dilation: int or (h, w);  v1 im2col:
              TensorRT-CenterNet and                          groups | group,           interleaved
              its forks, FairMOT)                             deformable_group(s);      offsets, mask
                                                              in_channel, out_channel,  already sigmoided
                                                              kernel_h, kernel_w        (the DCN module
                                                              informative               does it), B added
plugin_dcnv2  ``Plugin`` with            X, offset_and_mask,  name="DCNv2", info        the plugin splits
              ``name="DCNv2"``           W, [B]               (unused): geometry fixed  the conv output
              (dlunion/tensorRT-                              in the kernel: 3x3,       itself: offset =
              Integrate, tensorRT_Pro)                        stride 1, pad 1, dil 1,   channels [0, 18),
                                                              one offset group          mask = sigmoid of
                                                                                        [18, 27): read as
                                                                                        two Slices and a
                                                                                        Sigmoid before the
                                                                                        node
openvino      ``org.openvinotoolkit::``  X, offset, W,        ONNX names: strides,      OpenVINO's frontend
              ``DeformableConv2D``       [mask] (no bias)     pads (t, l, b, r; 2       reads it as its
              (mmdeploy's OpenVINO                            values: (ph, pw) both     DeformableConv-8
              backend, DCNv1; OpenVINO                        sides), dilations,        with bilinear_
              's own ONNX models)                             group, deformable_        interpolation_pad
                                                              groups, auto_pad          false: interleaved
                                                              (NOTSET, VALID);          (dy, dx), mask as
                                                              mmdeploy's kernel_shape   given, and its own
                                                              and groups (must be 1,    boundary rule (see
                                                              OpenVINO ignores it)      below), emulated by
                                                              informative               an offset transform
                                                                                        before the node
============  =========================  ===================  ========================  ==================

Paddle2ONNX writes standard ``DeformConv`` (opset 19). No exporter found writes planar offsets
(all dy, then all dx): that layout exists only inside PyTorch layers (4uiiurz1's), which
``dcn_deploy.convert`` handles before export.

Where the exporter and its runtime disagree the node is read as the exporter meant it (the
PyTorch model it came from): mmdeploy's ``MMCVDeformConv2d`` runtime reads padding[0], padding[1]
of the four values it writes, i.e. (ph, ph); both agree whenever ph == pw.

OpenVINO's boundary rule (its reference ``deformable_convolution.hpp``, ``bilinear_interpolation_pad``
false, which its ONNX frontend never sets): a sample counts only where 0 <= y < H and 0 <= x < W,
and a corner past the last row or column is clamped to it, so over [H-1, H) the last row counts at
full weight. Canonical sampling fades to 0 over (-1, 0) and (H-1, H) instead. The rule is MSRA's
DCNv1 rule (``dcn_deploy/op/boundary.py``, ``mxnet_v1``): per axis, a coordinate r whose floor is
-1 or L-1 is replaced by that floor, which in offset terms is ``offset -> floor(offset)`` where
``base + floor(offset)`` is -1 or L-1 (base = oy*stride - pad + i*dilation, an integer); the
rewrite inserts that as Shape/Range/Floor/Equal/Where nodes (ai.onnx opset >= 11). mmdeploy writes
``pads`` as (ph, ph, pw, pw), which OpenVINO reads as top ph, left ph, bottom pw, right pw: this
node is read as OpenVINO runs it (its only runtime, whose sampling is emulated too); both agree
when ph == pw (square kernels with symmetric padding).

Any other node whose op_type says "deform" or "dcn" (case-insensitive; RoI pooling and attention
ops excepted, they are no convolutions) is an error naming it and the flavours above.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dcn_deploy.onnx import schema


class RewriteError(ValueError):
    """A node cannot be read or rewritten; the message names it."""


def describe(node: onnx.NodeProto) -> str:
    domain = f"{node.domain}::" if node.domain else ""
    return f"{domain}{node.op_type} node '{node.name or '(unnamed)'}'"


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every control-flow subgraph inside it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_graphs(sub)


def node_lists(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto | None, list]]:
    """(graph, its node list) for every graph and subgraph; (None, nodes) for local functions."""
    for graph in iter_graphs(model.graph):
        yield graph, graph.node
    for function in model.functions:
        yield None, function.node


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def default_opset(model: onnx.ModelProto) -> int:
    return next((e.version for e in model.opset_import if e.domain in schema.STANDARD_DOMAINS), 0)


class ValueShapes:
    """Dims of every value whose shape the model records or ONNX shape inference tells
    (unknown ops are skipped by inference, so this works on any model ONNX Runtime loads)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        schema.register_onnx_schema()
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
            inferred = model  # an inconsistent model: what it records is all there is
        self.dims: dict[str, list[int | str | None]] = {}
        self.elem_types: dict[str, int] = {}
        for graph in iter_graphs(inferred.graph):
            for info in list(graph.input) + list(graph.value_info) + list(graph.output):
                tensor = info.type.tensor_type
                if tensor.elem_type:
                    self.elem_types[info.name] = tensor.elem_type
                if tensor.HasField("shape"):
                    self.dims[info.name] = [
                        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
                    ]
            for init in graph.initializer:
                self.dims[init.name] = list(init.dims)
                self.elem_types[init.name] = init.data_type

    def kernel(self, node: onnx.NodeProto, weight: str) -> list[int]:
        """(kh, kw) from the weight's shape, or an error naming the node."""
        dims = self.dims.get(weight)
        if dims is not None and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:]):
            return [int(d) for d in dims[2:]]
        raise RewriteError(
            f"{describe(node)} has no kernel_shape attribute and its weight '{weight}' is not an "
            "initializer with a known shape; add kernel_shape to the node"
        )


@dataclass
class Canonical:
    """A DCN node in canonical terms: inputs ``X, W, offset, B, mask`` ('' where absent, trailing
    empties dropped), the six DeformConv attributes, and the nodes that must run before it."""

    inputs: list[str]
    attributes: dict
    prelude: list[onnx.NodeProto] = field(default_factory=list)


@dataclass(frozen=True)
class Flavour:
    name: str
    writer: str
    op_types: tuple[str, ...]
    domains: tuple[str, ...] | None  # None: any domain
    read: Callable[[onnx.NodeProto, "ReadContext"], Canonical]
    conventions: str
    plugin_name: str | None = None  # the generic "Plugin" op: the value of its `name` attribute

    def matches(self, node: onnx.NodeProto) -> bool:
        if node.op_type not in self.op_types:
            return False
        if self.domains is not None and node.domain not in self.domains:
            return False
        if self.plugin_name is not None:
            name = attributes(node).get("name")
            return (name.decode() if isinstance(name, bytes) else name) == self.plugin_name
        return True


@dataclass
class ReadContext:
    shapes: ValueShapes
    opset: int  # the model's ai.onnx opset (the prelude nodes need Slice with inputs: >= 10)


# ---------------------------------------------------------------------------------------- helpers


def _canonical_inputs(x: str, w: str, offset: str, bias: str = "", mask: str = "") -> list[str]:
    inputs = [x, w, offset, bias, mask]
    while inputs and not inputs[-1]:
        inputs.pop()
    return inputs


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def _require_inputs(node: onnx.NodeProto, flavour: str, low: int, high: int, names: str) -> None:
    present = len(node.input)
    if not low <= present <= high or any(not node.input[i] for i in range(low)):
        raise RewriteError(f"{describe(node)} ({flavour}) has {present} inputs; expected {names}")


def _check_attributes(node: onnx.NodeProto, flavour: str, attrs: dict, known: set[str]) -> None:
    unknown = sorted(set(attrs) - known)
    if unknown:
        raise RewriteError(
            f"{describe(node)} ({flavour}) has attributes this flavour does not define: {unknown} "
            f"(known: {sorted(known)})"
        )


def _pair(node: onnx.NodeProto, flavour: str, attrs: dict, names: tuple[str, ...], default: int) -> list[int]:
    """An int or int list attribute (first present of ``names``) as (h, w)."""
    name = next((n for n in names if n in attrs), None)
    value = default if name is None else attrs[name]
    if isinstance(value, int):
        return [value, value]
    value = [int(v) for v in value]
    if len(value) == 1:
        return value * 2
    if len(value) == 2:
        return value
    raise RewriteError(f"{describe(node)} ({flavour}): '{name}' is {value}; expected an int or two ints")


def _int(node: onnx.NodeProto, flavour: str, attrs: dict, names: tuple[str, ...], default: int) -> int:
    name = next((n for n in names if n in attrs), None)
    value = default if name is None else attrs[name]
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise RewriteError(f"{describe(node)} ({flavour}): '{name}' is {list(value)}; expected one int")
        value = value[0]
    return int(value)


def _geometry(kernel, stride, pads_hw, dilation, group, offset_group) -> dict:
    """The six DeformConv attributes; ``pads_hw`` is (ph, pw), symmetric as every flavour has it."""
    ph, pw = pads_hw
    return {
        "dilations": list(dilation),
        "group": int(group),
        "kernel_shape": list(kernel),
        "offset_group": int(offset_group),
        "pads": [ph, pw, ph, pw],
        "strides": list(stride),
    }


def _constant(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name,
                            value=numpy_helper.from_array(np.array(values, dtype=np.int64), name))


# ------------------------------------------------------------------------------------ the readers


def _read_standard(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    attrs = attributes(node)
    unknown = set(attrs) - set(schema.ATTRIBUTES)
    if unknown:
        raise RewriteError(f"{describe(node)} has attributes DeformConv does not define: {sorted(unknown)}")
    if len(node.input) < 2 or not node.input[1]:
        raise RewriteError(f"{describe(node)} has no weight input")
    kernel = list(attrs["kernel_shape"]) if "kernel_shape" in attrs else context.shapes.kernel(node, node.input[1])
    if len(kernel) != 2:
        raise RewriteError(f"{describe(node)}: only 2-D DeformConv is supported, kernel_shape is {kernel}")
    defaults = schema.ATTRIBUTE_DEFAULTS
    full = {
        "dilations": list(attrs.get("dilations", defaults["dilations"])),
        "group": int(attrs.get("group", defaults["group"])),
        "kernel_shape": kernel,
        "offset_group": int(attrs.get("offset_group", defaults["offset_group"])),
        "pads": list(attrs.get("pads", defaults["pads"])),
        "strides": list(attrs.get("strides", defaults["strides"])),
    }
    return Canonical(list(node.input), full)


def _read_custom(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    attrs = attributes(node)
    return Canonical(list(node.input), {name: attrs[name] for name in schema.ATTRIBUTES if name in attrs})


def _read_mmcv_modulated(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    flavour = "mmcv_v2"
    _require_inputs(node, flavour, 4, 5, "X, offset, mask, W and an optional B")
    attrs = attributes(node)
    _check_attributes(node, flavour, attrs, {"stride", "padding", "dilation", "groups", "deform_groups"})
    x, offset, mask, weight = node.input[:4]
    kernel = context.shapes.kernel(node, weight)
    geometry = _geometry(
        kernel, _pair(node, flavour, attrs, ("stride",), 1), _pair(node, flavour, attrs, ("padding",), 0),
        _pair(node, flavour, attrs, ("dilation",), 1), _int(node, flavour, attrs, ("groups",), 1),
        _int(node, flavour, attrs, ("deform_groups",), 1),
    )
    return Canonical(_canonical_inputs(x, weight, offset, _input(node, 4), mask), geometry)


def _read_mmcv_deform(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    flavour = "mmcv_v1"
    _require_inputs(node, flavour, 3, 3, "X, offset, W")
    attrs = attributes(node)
    _check_attributes(node, flavour, attrs,
                      {"stride", "padding", "dilation", "groups", "deform_groups", "bias", "im2col_step"})
    if int(attrs.get("bias", 0)):
        raise RewriteError(f"{describe(node)} ({flavour}) has bias={attrs['bias']}; mmcv's DeformConv2d "
                           "supports no bias (its forward asserts bias is False)")
    padding = attrs.get("padding", 0)
    if isinstance(padding, list) and len(padding) == 4:
        # mmdeploy writes zip(padding, padding) flattened: (ph, ph, pw, pw)
        if padding[0] != padding[1] or padding[2] != padding[3]:
            raise RewriteError(f"{describe(node)} ({flavour}): padding {padding} is not mmdeploy's (ph, ph, pw, pw)")
        attrs["padding"] = [padding[0], padding[2]]
    x, offset, weight = node.input[:3]
    geometry = _geometry(
        context.shapes.kernel(node, weight), _pair(node, flavour, attrs, ("stride",), 1),
        _pair(node, flavour, attrs, ("padding",), 0), _pair(node, flavour, attrs, ("dilation",), 1),
        _int(node, flavour, attrs, ("groups",), 1), _int(node, flavour, attrs, ("deform_groups",), 1),
    )
    return Canonical(_canonical_inputs(x, weight, offset), geometry)


def _read_tensorrt(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    flavour = "tensorrt"
    _require_inputs(node, flavour, 4, 5, "x, offset, mask, weight and an optional bias")
    attrs = attributes(node)
    _check_attributes(node, flavour, attrs, {"stride", "padding", "dilation", "group", "deformable_group",
                                             "plugin_version", "plugin_namespace"})
    x, offset, mask, weight = node.input[:4]

    def hw(name: str, default: int) -> list[int]:
        w_value, h_value = _pair(node, flavour, attrs, (name,), default)  # the plugin reads (w, h)
        return [h_value, w_value]

    geometry = _geometry(context.shapes.kernel(node, weight), hw("stride", 1), hw("padding", 0), hw("dilation", 1),
                         _int(node, flavour, attrs, ("group",), 1),
                         _int(node, flavour, attrs, ("deformable_group",), 1))
    return Canonical(_canonical_inputs(x, weight, offset, _input(node, 4), mask), geometry)


def _read_dcnv2(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    flavour = "dcnv2"
    _require_inputs(node, flavour, 4, 5, "input, offset, mask, weight and bias")
    attrs = attributes(node)
    informative = {"in_channel", "out_channel", "kernel_h", "kernel_w", "name", "plugin_version", "plugin_namespace"}
    _check_attributes(node, flavour, attrs, {"stride", "padding", "dilation", "groups", "group", "deformable_group",
                                             "deformable_groups"} | informative)
    x, offset, mask, weight = node.input[:4]
    kernel = context.shapes.kernel(node, weight)
    for name, value in (("kernel_h", kernel[0]), ("kernel_w", kernel[1])):
        if name in attrs and int(attrs[name]) != value:
            raise RewriteError(
                f"{describe(node)} ({flavour}): {name}={attrs[name]} but the weight's kernel is {kernel}")
    geometry = _geometry(
        kernel, _pair(node, flavour, attrs, ("stride",), 1), _pair(node, flavour, attrs, ("padding",), 0),
        _pair(node, flavour, attrs, ("dilation",), 1), _int(node, flavour, attrs, ("groups", "group"), 1),
        _int(node, flavour, attrs, ("deformable_group", "deformable_groups"), 1),
    )
    return Canonical(_canonical_inputs(x, weight, offset, _input(node, 4), mask), geometry)


def _read_generic_plugin(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    flavour = "plugin_dcnv2"
    _require_inputs(node, flavour, 3, 4, "input, offset_and_mask, weight and an optional bias")
    attrs = attributes(node)
    _check_attributes(node, flavour, attrs, {"name", "info"})
    x, offset_and_mask, weight = node.input[:3]
    kernel = context.shapes.kernel(node, weight)
    if kernel != [3, 3]:
        raise RewriteError(f"{describe(node)} ({flavour}): kernel {kernel}; the plugin's geometry (pad 1, "
                           "stride 1, output size = input size) fits 3x3 kernels only")
    if context.opset < 10:
        raise RewriteError(f"{describe(node)} ({flavour}): reading it needs Slice with inputs (ai.onnx opset >= 10), "
                           f"the model imports opset {context.opset}")
    taps = kernel[0] * kernel[1]
    base = node.name or node.output[0]
    names = {key: f"{base}.{key}" for key in ("axis", "zero", "two_k", "three_k", "offset", "mask_logits", "mask")}
    prelude = [
        _constant(names["axis"], [1]),
        _constant(names["zero"], [0]),
        _constant(names["two_k"], [2 * taps]),
        _constant(names["three_k"], [3 * taps]),
        helper.make_node("Slice", [offset_and_mask, names["zero"], names["two_k"], names["axis"]], [names["offset"]],
                         name=names["offset"]),
        helper.make_node("Slice", [offset_and_mask, names["two_k"], names["three_k"], names["axis"]],
                         [names["mask_logits"]], name=names["mask_logits"]),
        helper.make_node("Sigmoid", [names["mask_logits"]], [names["mask"]], name=names["mask"]),
    ]
    geometry = _geometry(kernel, [1, 1], [1, 1], [1, 1], 1, 1)
    return Canonical(_canonical_inputs(x, weight, names["offset"], _input(node, 3), names["mask"]), geometry, prelude)


def _float_constant(name: str, values, elem_type: int) -> onnx.NodeProto:
    array = np.asarray(values, dtype=helper.tensor_dtype_to_np_dtype(elem_type))
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(array, name))


def _openvino_boundary(base: str, x: str, offset: str, attrs: dict, elem_type: int) -> tuple[list, str]:
    """Nodes that turn ``offset`` into offsets under which the canonical node samples as OpenVINO does
    (module docstring): per offset channel c (tap t = (c // 2) % taps, dy on even c, dx on odd c) the
    integer base position ``a_c * o + b_c`` (o = output row or column) and the limit L-1 of its axis;
    where ``base + floor(offset)`` is -1 or L-1 the offset becomes ``floor(offset)``. Returns (nodes, name of
    the new offset)."""
    kh, kw = attrs["kernel_shape"]
    (sh, sw), (dh, dw), (top, left) = attrs["strides"], attrs["dilations"], attrs["pads"][:2]
    channels = 2 * attrs["offset_group"] * kh * kw
    even = np.arange(channels) % 2 == 0
    tap = (np.arange(channels) // 2) % (kh * kw)
    shape = (1, channels, 1, 1)
    row_step = np.where(even, sh, 0).reshape(shape)  # a_c for the output row index
    col_step = np.where(even, 0, sw).reshape(shape)  # a_c for the output column index
    start = np.where(even, (tap // kw) * dh - top, (tap % kw) * dw - left).reshape(shape)  # b_c
    on_rows, on_cols = even.astype(np.float64).reshape(shape), (~even).astype(np.float64).reshape(shape)
    n = {key: f"{base}.openvino_{key}" for key in (
        "x_shape", "o_shape", "two", "three", "four", "zero", "one", "scalar", "h", "w", "ho", "wo", "first",
        "rows_i", "cols_i", "rows_f", "cols_f", "row_grid_shape", "col_grid_shape", "rows", "cols", "row_step",
        "col_step", "start", "on_rows", "on_cols", "one_f", "minus_one", "h_f", "w_f", "h_last", "w_last",
        "h_limit", "w_limit", "limit", "row_part", "col_part", "grid", "position", "floor", "floor_position",
        "at_start", "at_end", "band", "offset")}
    float_of = {"to": elem_type}
    nodes = [
        _constant(n["two"], [2]), _constant(n["three"], [3]), _constant(n["four"], [4]), _constant(n["zero"], [0]),
        helper.make_node("Constant", [], [n["one"]], name=n["one"], value=numpy_helper.from_array(
            np.array(1, np.int64), n["one"])),
        helper.make_node("Constant", [], [n["scalar"]], name=n["scalar"], value=numpy_helper.from_array(
            np.zeros(0, np.int64), n["scalar"])),  # Reshape to this: a 0-D tensor
        helper.make_node("Constant", [], [n["first"]], name=n["first"], value=numpy_helper.from_array(
            np.array(0, np.int64), n["first"])),  # Range's start
        _constant(n["row_grid_shape"], [1, 1, -1, 1]), _constant(n["col_grid_shape"], [1, 1, 1, -1]),
        _float_constant(n["row_step"], row_step, elem_type), _float_constant(n["col_step"], col_step, elem_type),
        _float_constant(n["start"], start, elem_type), _float_constant(n["on_rows"], on_rows, elem_type),
        _float_constant(n["on_cols"], on_cols, elem_type), _float_constant(n["one_f"], 1, elem_type),
        _float_constant(n["minus_one"], -1, elem_type),
        helper.make_node("Shape", [x], [n["x_shape"]], name=n["x_shape"]),
        helper.make_node("Shape", [offset], [n["o_shape"]], name=n["o_shape"]),
        helper.make_node("Slice", [n["x_shape"], n["two"], n["three"], n["zero"]], [n["h"]], name=n["h"]),
        helper.make_node("Slice", [n["x_shape"], n["three"], n["four"], n["zero"]], [n["w"]], name=n["w"]),
        helper.make_node("Slice", [n["o_shape"], n["two"], n["three"], n["zero"]], [n["ho"]], name=n["ho"]),
        helper.make_node("Slice", [n["o_shape"], n["three"], n["four"], n["zero"]], [n["wo"]], name=n["wo"]),
        helper.make_node("Reshape", [n["ho"], n["scalar"]], [n["ho"] + "_0d"], name=n["ho"] + "_0d"),
        helper.make_node("Reshape", [n["wo"], n["scalar"]], [n["wo"] + "_0d"], name=n["wo"] + "_0d"),
        helper.make_node("Range", [n["first"], n["ho"] + "_0d", n["one"]], [n["rows_i"]], name=n["rows_i"]),
        helper.make_node("Range", [n["first"], n["wo"] + "_0d", n["one"]], [n["cols_i"]], name=n["cols_i"]),
        helper.make_node("Cast", [n["rows_i"]], [n["rows_f"]], name=n["rows_f"], **float_of),
        helper.make_node("Cast", [n["cols_i"]], [n["cols_f"]], name=n["cols_f"], **float_of),
        helper.make_node("Reshape", [n["rows_f"], n["row_grid_shape"]], [n["rows"]], name=n["rows"]),
        helper.make_node("Reshape", [n["cols_f"], n["col_grid_shape"]], [n["cols"]], name=n["cols"]),
        helper.make_node("Mul", [n["rows"], n["row_step"]], [n["row_part"]], name=n["row_part"]),
        helper.make_node("Mul", [n["cols"], n["col_step"]], [n["col_part"]], name=n["col_part"]),
        helper.make_node("Add", [n["row_part"], n["col_part"]], [n["grid"]], name=n["grid"]),
        helper.make_node("Add", [n["grid"], n["start"]], [n["position"]], name=n["position"]),
        helper.make_node("Cast", [n["h"]], [n["h_f"]], name=n["h_f"], **float_of),
        helper.make_node("Cast", [n["w"]], [n["w_f"]], name=n["w_f"], **float_of),
        helper.make_node("Sub", [n["h_f"], n["one_f"]], [n["h_last"]], name=n["h_last"]),
        helper.make_node("Sub", [n["w_f"], n["one_f"]], [n["w_last"]], name=n["w_last"]),
        helper.make_node("Mul", [n["h_last"], n["on_rows"]], [n["h_limit"]], name=n["h_limit"]),
        helper.make_node("Mul", [n["w_last"], n["on_cols"]], [n["w_limit"]], name=n["w_limit"]),
        helper.make_node("Add", [n["h_limit"], n["w_limit"]], [n["limit"]], name=n["limit"]),
        helper.make_node("Floor", [offset], [n["floor"]], name=n["floor"]),
        helper.make_node("Add", [n["position"], n["floor"]], [n["floor_position"]], name=n["floor_position"]),
        helper.make_node("Equal", [n["floor_position"], n["minus_one"]], [n["at_start"]], name=n["at_start"]),
        helper.make_node("Equal", [n["floor_position"], n["limit"]], [n["at_end"]], name=n["at_end"]),
        helper.make_node("Or", [n["at_start"], n["at_end"]], [n["band"]], name=n["band"]),
        helper.make_node("Where", [n["band"], n["floor"], offset], [n["offset"]], name=n["offset"]),
    ]
    return nodes, n["offset"]


def _read_openvino(node: onnx.NodeProto, context: ReadContext) -> Canonical:
    flavour = "openvino"
    _require_inputs(node, flavour, 3, 4, "X, offset, W and an optional mask")
    attrs = attributes(node)
    _check_attributes(node, flavour, attrs, {"strides", "pads", "paddings", "dilations", "group", "deformable_groups",
                                             "auto_pad", "kernel_shape", "groups"})
    x, offset, weight = node.input[:3]
    if "kernel_shape" not in attrs:
        kernel = context.shapes.kernel(node, weight)
    else:  # mmdeploy writes it; OpenVINO takes the kernel from W
        kernel = [int(k) for k in attrs["kernel_shape"]]
        try:
            from_weight = context.shapes.kernel(node, weight)
        except RewriteError:
            from_weight = kernel
        if from_weight != kernel:
            raise RewriteError(f"{describe(node)} ({flavour}): kernel_shape {kernel} but the weight's kernel is "
                               f"{from_weight}")
    group = _int(node, flavour, attrs, ("group",), 1)
    if "groups" in attrs and int(attrs["groups"]) != group:
        raise RewriteError(f"{describe(node)} ({flavour}): groups={attrs['groups']} (mmdeploy's name) but OpenVINO "
                           f"reads group={group} and ignores 'groups'; the node is ambiguous")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "", "VALID"):
        raise RewriteError(f"{describe(node)} ({flavour}): auto_pad={auto_pad} derives the pads from the input "
                           "size; give explicit pads")
    pads = attrs.get("pads", attrs.get("paddings", [0, 0]))
    pads = [0, 0, 0, 0] if auto_pad == "VALID" else [int(p) for p in pads]
    if len(pads) == 2:  # one value per axis: both sides
        pads = pads * 2
    if len(pads) != 4:
        raise RewriteError(f"{describe(node)} ({flavour}): pads {pads}; expected (top, left, bottom, right) "
                           "or (ph, pw)")
    if context.opset < 11:
        raise RewriteError(f"{describe(node)} ({flavour}): OpenVINO's boundary rule is emulated with Range and "
                           f"float Equal (ai.onnx opset >= 11), the model imports opset {context.opset}")
    geometry = {
        "dilations": _pair(node, flavour, attrs, ("dilations",), 1),
        "group": group,
        "kernel_shape": kernel,
        "offset_group": _int(node, flavour, attrs, ("deformable_groups",), 1),
        "pads": pads,
        "strides": _pair(node, flavour, attrs, ("strides",), 1),
    }
    elem_type = context.shapes.elem_types.get(offset, onnx.TensorProto.FLOAT)
    prelude, new_offset = _openvino_boundary(node.name or node.output[0], x, offset, geometry, elem_type)
    return Canonical(_canonical_inputs(x, weight, new_offset, "", _input(node, 3)), geometry, prelude)


STANDARD = Flavour("standard", "ONNX DeformConv (opset 19+): torch, Paddle2ONNX, dcn-deploy --standard",
                   (schema.STANDARD_OP_TYPE,), schema.STANDARD_DOMAINS, _read_standard, "canonical")
CUSTOM = Flavour("dcn_deploy", "dcn-deploy export", (schema.CUSTOM_OP_TYPE,), (schema.CUSTOM_DOMAIN,), _read_custom,
                 "canonical")
FLAVOURS: tuple[Flavour, ...] = (
    STANDARD,
    CUSTOM,
    Flavour("mmcv_v2", "mmdeploy, mmcv < 2.0 (ModulatedDeformConv2dPack)", (schema.MMCV_MODULATED_OP_TYPE,),
            (schema.MMDEPLOY_DOMAIN, schema.MMCV_DOMAIN), _read_mmcv_modulated,
            "interleaved offsets, mask post-sigmoid, (h, w) attributes, optional bias"),
    Flavour("mmcv_v1", "mmdeploy, mmcv < 2.0 (DeformConv2dPack)", (schema.MMCV_DEFORM_OP_TYPE,),
            (schema.MMDEPLOY_DOMAIN, schema.MMCV_DOMAIN), _read_mmcv_deform,
            "DCNv1, interleaved offsets, no bias, mmdeploy padding (ph, ph, pw, pw)"),
    Flavour("tensorrt", "TensorRT OSS ModulatedDeformConv2d plugin (onnx-graphsurgeon)",
            (schema.TENSORRT_PLUGIN_OP_TYPE,), None, _read_tensorrt,
            "interleaved offsets, mask as given, int[2] attributes read as (w, h), optional bias"),
    Flavour("dcnv2", "CenterNet-TensorRT DCNv2 plugins (CaoWGG and forks)", schema.DCNV2_PLUGIN_OP_TYPES, None,
            _read_dcnv2, "interleaved offsets, mask post-sigmoid, int or (h, w) attributes, bias"),
    Flavour("plugin_dcnv2", "tensorRTIntegrate / tensorRT_Pro 'Plugin' name=DCNv2", (schema.GENERIC_PLUGIN_OP_TYPE,),
            None, _read_generic_plugin,
            "one offset+mask input: sigmoid inside the plugin; fixed 3x3, stride 1, pad 1",
            plugin_name=schema.GENERIC_PLUGIN_DCN_NAME),
    Flavour("openvino", "OpenVINO's ONNX frontend; mmdeploy's OpenVINO backend (DCNv1)", (schema.OPENVINO_OP_TYPE,),
            (schema.OPENVINO_DOMAIN,), _read_openvino,
            "X, offset, W, [mask], no bias; ONNX pads; OpenVINO's boundary rule emulated before the node"),
)
FLAVOUR_NAMES = tuple(f.name for f in FLAVOURS)

# op_type words of deformable ops that are not convolutions (left alone, never an error)
_NOT_CONVOLUTIONS = ("roi", "pool", "attn", "attention")


def identify(node: onnx.NodeProto) -> Flavour | None:
    """The flavour of a DCN node, or None for any other node (INT8 DCN nodes included)."""
    return next((flavour for flavour in FLAVOURS if flavour.matches(node)), None)


def looks_deformable(node: onnx.NodeProto) -> bool:
    """Whether an op_type says "deform"/"dcn" while no flavour reads it (and it is no INT8 DCN node,
    deformable RoI pooling or deformable attention)."""
    if node.domain == schema.CUSTOM_DOMAIN and node.op_type in schema.INT8_OP_TYPES:
        return False
    op_type = node.op_type.lower()
    if not ("deform" in op_type or "dcn" in op_type) or any(word in op_type for word in _NOT_CONVOLUTIONS):
        return False
    return identify(node) is None


def unknown_node_error(node: onnx.NodeProto) -> RewriteError:
    known = ", ".join(f"{f.name} ({'/'.join(f.op_types)})" for f in FLAVOURS)
    return RewriteError(f"{describe(node)} looks like a deformable convolution but is no flavour this project "
                        f"reads; known flavours: {known}. See dcn_deploy/onnx/flavours.py")


def find_dcn_nodes(model: onnx.ModelProto) -> list[tuple[onnx.GraphProto | None, onnx.NodeProto, Flavour | None]]:
    """Every DCN node: (graph or None in a local function, node, flavour); flavour None for an
    unknown deformable-looking node."""
    found = []
    for graph, nodes in node_lists(model):
        for node in nodes:
            flavour = identify(node)
            if flavour is not None or looks_deformable(node):
                found.append((graph, node, flavour))
    return found
