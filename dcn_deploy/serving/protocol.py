"""The KServe v2 (Open Inference Protocol) request and response bodies: JSON and binary tensor data,
checked against the model, with :class:`BadRequest` naming what is wrong.

Non-finite floats in a JSON reply: JSON has no NaN or Infinity, and a bare ``NaN`` (what Python's
``json`` and Triton write) is refused by strict parsers (JavaScript's ``JSON.parse``, Go, serde). So
they are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``: the reply is valid
JSON, and ``numpy.asarray(data, dtype)`` (what tritonclient's ``as_numpy`` does) reads them back as
the floats. Binary outputs carry them as they are. Requests may send them either way.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcn_deploy.backends.runtime import Runtime, TensorSpec, datatype_of, numpy_dtype

SERVER_NAME = "dcn-deploy"
MODEL_VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]


class BadRequest(ValueError):
    """The client's request is wrong; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    id: str | None
    arrays: dict[str, np.ndarray]
    outputs: list[str]
    binary_outputs: set[str]


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"malformed JSON in the {what}: {error}") from None
    except RecursionError:
        raise BadRequest(f"the {what} is JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the {what} must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(entry: dict, where: str) -> dict:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}: 'parameters' must be a JSON object")
    if "shared_memory_region" in parameters:
        raise BadRequest(f"{where}: the shared-memory extension is not supported by this server")
    return parameters


def _input_array(entry: Any, index: int, binary: memoryview, offset: int, runtime: Runtime,
                 max_elements: int | None) -> tuple[str, np.ndarray, int]:
    """One request input as an array (its datatype and shape checked against the model, its size
    against ``max_elements`` before anything is allocated), and the offset after its binary data."""
    if not isinstance(entry, dict):
        raise BadRequest(f"inputs[{index}] must be a JSON object with name, shape, datatype and data")
    name = entry.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{index}] has no 'name' string")
    where = f"input '{name}'"
    spec: TensorSpec = runtime.input_spec(name)
    shape, datatype = entry.get("shape"), entry.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {json.dumps(shape)}")
    if not isinstance(datatype, str):
        raise BadRequest(f"{where}: 'datatype' must be a string such as \"FP32\", got {json.dumps(datatype)}")
    if datatype == "BYTES":
        raise BadRequest(f"{where}: BYTES (string) tensors are not supported; the model takes {spec.datatype}")
    dtype = numpy_dtype(datatype)
    if datatype != spec.datatype:
        raise BadRequest(f"{where} must be {spec.datatype}, got {datatype}")
    count = math.prod(shape)  # Python integers: no overflow on absurd shapes
    if max_elements is not None and count > max_elements:
        raise BadRequest(f"{where}: shape {shape} has {count} elements, more than this server's limit of "
                         f"{max_elements} per input (--max-input-elements)", status=413)
    parameters = _parameters(entry, where)
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in entry:
            raise BadRequest(f"{where} has both 'data' and binary_data_size: send one")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{where}: binary_data_size must be a non-negative integer, got {json.dumps(size)}")
        if size != count * dtype.itemsize:
            raise BadRequest(f"{where}: binary_data_size is {size} bytes, but shape {shape} of {datatype} takes "
                             f"{count * dtype.itemsize}")
        if offset + size > len(binary):
            raise BadRequest(f"{where}: binary_data_size {size} runs past the end of the body "
                             f"({len(binary) - offset} bytes left after the JSON header)")
        array = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
        return name, array.reshape(shape), offset + size
    if "data" not in entry:
        raise BadRequest(f"{where} has neither 'data' nor parameters.binary_data_size")
    try:
        array = np.asarray(entry["data"], dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise BadRequest(f"{where}: 'data' is not a list of {datatype} numbers ({error})") from None
    if array.size != count:
        raise BadRequest(f"{where}: 'data' holds {array.size} values, but shape {shape} takes {count}")
    return name, array.reshape(shape), offset


def parse_infer_request(body: bytes, header_length: str | None, runtime: Runtime,
                        max_elements: int | None = None) -> InferRequest:
    """An inference request body (and its ``Inference-Header-Content-Length``) as checked arrays.

    ``max_elements``: the most elements an input may have (413 beyond; None: no limit). Raises
    :class:`BadRequest` naming what is wrong; the arrays have passed :meth:`Runtime.check_inputs`
    (names, datatypes, ranks, fixed sizes)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got '{header_length}'") from None
        if not 0 <= length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]
    else:
        header, binary = body, memoryview(b"")
    request = _json_object(header, "request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the request needs 'inputs': a non-empty list of tensors")
    request_parameters = _parameters(request, "the request")
    arrays, offset = {}, 0
    for index, entry in enumerate(inputs):
        name, array, offset = _input_array(entry, index, binary, offset, runtime, max_elements)
        if name in arrays:
            raise BadRequest(f"input '{name}' is given twice")
        arrays[name] = array
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes of binary data that no input's "
                         f"binary_data_size accounts for")
    checked, _ = runtime.check_inputs(arrays)
    rows = {array.shape[0] for array in checked.values() if array.ndim}
    if runtime.batchable and len(rows) > 1:
        raise BadRequest(f"the inputs disagree on the batch size (axis 0): {sorted(rows)}")
    all_binary = bool(request_parameters.get("binary_data_output", False))
    wanted = request.get("outputs")
    if wanted is None:
        names = [s.name for s in runtime.outputs]
        binary_outputs = set(names) if all_binary else set()
    else:
        if not isinstance(wanted, list):
            raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
        names, binary_outputs = [], set()
        for index, entry in enumerate(wanted):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise BadRequest(f"outputs[{index}] must be a JSON object with a 'name' string")
            name = runtime.output_spec(entry["name"]).name
            parameters = _parameters(entry, f"output '{name}'")
            if "classification" in parameters:
                raise BadRequest(f"output '{name}': the classification extension is not supported by this server")
            names.append(name)
            if parameters.get("binary_data", all_binary):
                binary_outputs.add(name)
    request_id = request.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, checked, names, binary_outputs)


def infer_response(model_name: str, request: InferRequest, results: dict[str, np.ndarray]
                   ) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    outputs, chunks = [], []
    for name in request.outputs:
        array = np.ascontiguousarray(results[name])
        entry = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if name in request.binary_outputs:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = _json_data(array)
        outputs.append(entry)
    response = {"model_name": model_name, "model_version": MODEL_VERSION, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    # allow_nan=False: _json_data has spelled out every non-finite float; a bare NaN must never get out
    header = json.dumps(response, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_data(array: np.ndarray) -> list:
    """The flat values as JSON numbers; non-finite floats as strings (module docstring)."""
    flat = array.ravel()
    data = flat.tolist()
    if np.issubdtype(flat.dtype, np.floating):
        for index in np.flatnonzero(~np.isfinite(flat)).tolist():
            data[index] = _NON_FINITE[repr(data[index])]
    return data
