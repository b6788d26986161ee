"""Single-node ONNX graphs for a test Case, standard or custom, and running them."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from dcn_deploy.onnx import schema

INPUT_NAMES = ("X", "W", "offset", "B", "mask")


def single_node_model(case, kind: str = "custom", attributes: dict | None = None, node_name: str = "dcn_under_test",
                      arrays: dict | None = None) -> onnx.ModelProto:
    """A model whose graph inputs are the case's present tensors and whose one node is a
    DeformConv of ``kind`` ("custom" or "standard"). A mask without bias gets an empty B."""
    arrays = arrays if arrays is not None else case.make()
    present = [name for name in INPUT_NAMES if arrays.get(name) is not None]
    node_inputs = [name if arrays.get(name) is not None else "" for name in INPUT_NAMES]
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    attrs = dict(case.attributes if attributes is None else attributes)
    if kind == "custom":
        node = helper.make_node(schema.CUSTOM_OP_TYPE, node_inputs, ["Y"], name=node_name,
                                domain=schema.CUSTOM_DOMAIN, **attrs, **schema.PLUGIN_ATTRIBUTES)
        opsets = [helper.make_opsetid("", schema.STANDARD_OPSET),
                  helper.make_opsetid(schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION)]
    else:
        node = helper.make_node(schema.STANDARD_OP_TYPE, node_inputs, ["Y"], name=node_name, **attrs)
        opsets = [helper.make_opsetid("", schema.STANDARD_OPSET)]
    elem = helper.np_dtype_to_tensor_dtype(arrays["X"].dtype)
    inputs = [helper.make_tensor_value_info(name, elem, list(arrays[name].shape)) for name in present]
    output = helper.make_tensor_value_info("Y", elem, ["N", "M", "Ho", "Wo"])
    graph = helper.make_graph([node], "deform_conv_case", inputs, [output])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def feeds(arrays: dict) -> dict[str, np.ndarray]:
    return {name: value for name, value in arrays.items() if value is not None}


def run_model(model: onnx.ModelProto, arrays: dict, custom_op: bool) -> np.ndarray:
    import onnxruntime as ort

    if custom_op:
        from dcn_deploy.backends.onnxruntime import ort_session

        session = ort_session(model.SerializeToString())
    else:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds(arrays))[0]
