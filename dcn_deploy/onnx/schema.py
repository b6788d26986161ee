"""The ONNX node this project emits for every DCN layer, and its attributes.

=================  ===================================  ==========================================
                   custom node (default)                standard node (``standard_op=True``)
=================  ===================================  ==========================================
domain             ``dcn_deploy`` (version 1)           ``""`` (ai.onnx, opset 19)
op_type            ``DcnDeformConv``                    ``DeformConv``
inputs             X, W, offset, B (opt.), mask (opt.)  same
attributes         all six below, always written        defaults may be omitted
extra attributes   ``plugin_namespace="dcn_deploy"``,   none
                   ``plugin_version="1"``
runs in            this project's ONNX Runtime library  ONNX Runtime >= 1.25 natively; TensorRT's
                   and TensorRT plugin                  built-in DeformConv importer
=================  ===================================  ==========================================

The op_type differs from ``DeformConv`` on purpose: TensorRT's ONNX parser sends every
``DeformConv`` node, whatever its domain, to its own built-in importer (unless the node
carries ``plugin_namespace``); with a distinct name *and* the plugin attributes, every
TensorRT 10.x/11.x parser falls back to the plugin registry and finds this project's
creator ``DcnDeformConv`` / version ``1`` / namespace ``dcn_deploy``.
"""
from __future__ import annotations

import onnx
from onnx.defs import OpSchema

CUSTOM_DOMAIN = "dcn_deploy"
CUSTOM_OP_TYPE = "DcnDeformConv"
CUSTOM_OP_VERSION = 1
PLUGIN_NAMESPACE = "dcn_deploy"
PLUGIN_VERSION = "1"


# The INT8 forms (definition: dcn_deploy/int8.py): X and W int8, offset, mask and B float32,
# scales as attributes. Two op types because ONNX Runtime infers a custom op's output type
# from its input types, so one name cannot produce both float32 and int8.
INT8_OP_TYPE = "DcnDeformConvInt8"  # Y float32
INT8_REQUANTIZED_OP_TYPE = "DcnDeformConvInt8Requantized"  # Yq int8 = saturate(round(Y / y_scale))
INT8_OP_TYPES = (INT8_OP_TYPE, INT8_REQUANTIZED_OP_TYPE)
INT8_ATTRIBUTES = ("x_scale", "w_scale")  # plus y_scale for the Requantized form
STANDARD_DOMAINS = ("", "ai.onnx")
STANDARD_OP_TYPE = "DeformConv"
STANDARD_OPSET = 19
# The other ops `dcn-deploy quantize` quantizes (ONNX Runtime's quantizer, Q/DQ form).
QDQ_OP_TYPES = ("Conv", "MatMul", "Gemm")
# The nodes a layer (module) of the user's model becomes and --keep-float may name.
LAYER_OP_TYPES = (*QDQ_OP_TYPES, CUSTOM_OP_TYPE, STANDARD_OP_TYPE)


# The attribute names shared by both node kinds (those of ONNX DeformConv).
ATTRIBUTES = ("dilations", "group", "kernel_shape", "offset_group", "pads", "strides")
# ONNX DeformConv's defaults of the attributes a node may leave out (kernel_shape: the weight's kh, kw).
ATTRIBUTE_DEFAULTS = {"dilations": (1, 1), "group": 1, "offset_group": 1, "pads": (0, 0, 0, 0), "strides": (1, 1)}
PLUGIN_ATTRIBUTES = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION}


def is_custom_node(node: onnx.NodeProto) -> bool:
    """Whether ``node`` is this project's float custom node (``DcnDeformConv`` in domain ``dcn_deploy``)."""
    return node.op_type == CUSTOM_OP_TYPE and node.domain == CUSTOM_DOMAIN


def is_dcn_node(node: onnx.NodeProto) -> bool:
    """A float DCN node quantize turns into DcnDeformConvInt8 (custom, or standard DeformConv)."""
    return is_custom_node(node) or (node.op_type == STANDARD_OP_TYPE and node.domain in STANDARD_DOMAINS)


def register_onnx_schema() -> None:
    """Register the custom node's schema with the ``onnx`` package (once per process).

    onnxscript needs it to emit the node, and ``onnx.checker`` then checks every custom
    node's inputs, attributes and types like a standard one.
    """

    if onnx.defs.has(CUSTOM_OP_TYPE, CUSTOM_DOMAIN):
        return
    param = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    attr = OpSchema.AttrType
    geometry = [
        OpSchema.Attribute("dilations", attr.INTS, "dilation (h, w)", required=True),
        OpSchema.Attribute("group", attr.INT, "weight groups", required=True),
        OpSchema.Attribute("kernel_shape", attr.INTS, "kernel (kh, kw)", required=True),
        OpSchema.Attribute("offset_group", attr.INT, "offset groups", required=True),
        OpSchema.Attribute("pads", attr.INTS, "(top, left, bottom, right)", required=True),
        OpSchema.Attribute("strides", attr.INTS, "stride (h, w)", required=True),
        OpSchema.Attribute("plugin_namespace", attr.STRING, "TensorRT plugin namespace", required=False),
        OpSchema.Attribute("plugin_version", attr.STRING, "TensorRT plugin version", required=False),
    ]

    def inputs(data: str, bias: str, weight_doc: str) -> list:
        return [
            param("X", data, "input (N, C, H, W)"),
            param("W", data, weight_doc),
            param("offset", "T1", "offsets (N, 2*offset_group*kh*kw, Ho, Wo)"),
            param("B", bias, "bias (M)", param_option=optional),
            param("mask", "T1", "mask (N, offset_group*kh*kw, Ho, Wo)", param_option=optional),
        ]

    float_types = ["tensor(float)", "tensor(float16)", "tensor(double)"]
    op_schema = OpSchema(
        CUSTOM_OP_TYPE,
        CUSTOM_DOMAIN,
        CUSTOM_OP_VERSION,
        doc="Modulated deformable convolution with ONNX DeformConv semantics; see dcn_deploy.onnx.schema.",
        inputs=inputs("T", "T", "weight (M, C/group, kh, kw)"),
        outputs=[param("Y", "T", "output (N, M, Ho, Wo)")],
        # Offsets and mask may keep float32 in a float16 graph: sampling positions stay exact.
        type_constraints=[
            ("T", float_types, "X, W, B, Y"),
            ("T1", float_types, "offset, mask"),
        ],
        attributes=geometry,
    )
    onnx.defs.register_schema(op_schema)
    scales = [
        OpSchema.Attribute("x_scale", attr.FLOAT, "input scale: X ~ x_scale * Xq", required=True),
        OpSchema.Attribute("w_scale", attr.FLOATS, "per-output-channel weight scales (M or 1)", required=True),
    ]
    for op_type, output_type, extra in (
        (INT8_OP_TYPE, "tensor(float)", []),
        (INT8_REQUANTIZED_OP_TYPE, "tensor(int8)",
         [OpSchema.Attribute("y_scale", attr.FLOAT, "output scale: Yq = Y / y_scale", required=True)]),
    ):
        onnx.defs.register_schema(OpSchema(
            op_type,
            CUSTOM_DOMAIN,
            CUSTOM_OP_VERSION,
            doc="INT8 modulated deformable convolution; definition in dcn_deploy.op.int8.",
            inputs=inputs("TQ", "TB", "int8 weight (M, C/group, kh, kw), zero point 0"),
            outputs=[param("Y", "TY", "output (N, M, Ho, Wo)")],
            type_constraints=[
                ("TQ", ["tensor(int8)"], "X, W"),
                ("TB", ["tensor(float)"], "B"),
                ("T1", ["tensor(float)"], "offset, mask"),
                ("TY", [output_type], "Y"),
            ],
            attributes=geometry + scales + extra,
        ))


# DCN nodes other exporters write (read by dcn_deploy/onnx/flavours.py, which documents each one's
# conventions and turns it into the node above).
MMDEPLOY_DOMAIN = "mmdeploy"  # mmdeploy's symbolic rewriters
MMCV_DOMAIN = "mmcv"  # mmcv's own symbolic functions (mmcv < 2.0 exporters)
MMCV_MODULATED_OP_TYPE = "MMCVModulatedDeformConv2d"  # DCNv2: X, offset, mask, W, [B]
MMCV_DEFORM_OP_TYPE = "MMCVDeformConv2d"  # DCNv1: X, offset, W
TENSORRT_PLUGIN_OP_TYPE = "ModulatedDeformConv2d"  # TensorRT OSS plugin/modulatedDeformConvPlugin (v1, v2)
DCNV2_PLUGIN_OP_TYPES = ("DCNv2", "DCNv2Plugin")  # CenterNet-TensorRT plugins (CaoWGG and forks)
GENERIC_PLUGIN_OP_TYPE = "Plugin"  # tensorRTIntegrate / tensorRT_Pro: the plugin named by attribute `name`
GENERIC_PLUGIN_DCN_NAME = "DCNv2"
OPENVINO_DOMAIN = "org.openvinotoolkit"  # OpenVINO's ONNX frontend; mmdeploy's OpenVINO backend writes it
OPENVINO_OP_TYPE = "DeformableConv2D"  # X, offset, W, [mask]: OpenVINO's DeformableConvolution-8


def name_unnamed_nodes(graph: onnx.GraphProto) -> None:
    """Name the unnamed nodes (``OpType_index``): ONNX Runtime's quantizer and FP16 converter select and
    exclude nodes by name, and an empty name would select every unnamed node at once."""
    used = {node.name for node in graph.node}
    for index, node in enumerate(graph.node):
        if not node.name:
            name, k = f"{node.op_type}_{index}", 1
            while name in used:
                k += 1
                name = f"{node.op_type}_{index}_{k}"
            node.name = name
            used.add(name)
