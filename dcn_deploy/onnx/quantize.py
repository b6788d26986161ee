"""INT8 export: calibrate a float32 dcn-deploy ONNX model and write its explicitly quantized
(Q/DQ) form, with every DCN layer as one ``DcnDeformConvInt8`` node.

Who does what:

==========================  ==========================================================================
step                        done by
==========================  ==========================================================================
activation ranges           ONNX Runtime's calibrators (``onnxruntime.quantization.calibrate``: MinMax,
                            Percentile, Entropy), run once on the model with the DCN nodes as the
                            standard ONNX DeformConv (ONNX Runtime >= 1.25 runs it natively)
Conv / MatMul / Gemm        ``onnxruntime.quantization.quantize_static`` in QDQ form, symmetric int8,
                            per-channel weights, float32 biases (no int32 bias DequantizeLinear: TensorRT's
                            explicit quantization), from the same ranges; the offset/mask branches of the
                            DCN layers are excluded (sampling positions are never quantized)
DCN layers                  this module: ``X -> QuantizeLinear(x_scale) -> DcnDeformConvInt8`` with the
                            weight as an int8 initializer and per-channel ``w_scale`` (dcn_deploy.op.int8)
layers kept float           ``keep_float`` (node or PyTorch layer names, ``layers.py``): excluded from
                            ``quantize_static``, DCN nodes left as they were; each reads the float tensor
                            (this module undoes ONNX Runtime's shared Q/DQ on their inputs)
==========================  ==========================================================================

The scales follow TensorRT's explicit quantization: symmetric, zero point 0,
``scale = amax / 127``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    create_calibrator,
    quantize_static,
)
from onnxruntime.quantization.calibrate import save_tensors_data

from dcn_deploy.onnx import schema
from dcn_deploy.onnx.fp16 import offset_only_nodes
from dcn_deploy.onnx.layers import quantizable_nodes, resolve_keep_float
from dcn_deploy.onnx.model_info import (
    check_onnx,
    read_onnx,
    InputInfo,
    get_metadata,
    onnx_inputs,
    random_inputs,
    set_metadata,
)
from dcn_deploy.onnx.rewrite import rewrite_onnx
from dcn_deploy.op.int8 import quantize_weight_per_channel

METHODS = ("max", "percentile", "entropy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


# ImageNet statistics: what the recipes' backbones (and torchvision's) expect of an RGB image.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# The ops quantized by ONNX Runtime's tools, in Q/DQ form.
QDQ_OP_TYPES = schema.QDQ_OP_TYPES


class CalibrationError(ValueError):
    """Calibration data that cannot be used; the message names the file or the problem."""


def _numpy_dtype(spec: InputInfo) -> np.dtype:
    return helper.tensor_dtype_to_np_dtype(spec.elem_type)


def _check_sample(sample: dict[str, np.ndarray], inputs: list[InputInfo], source: str) -> dict[str, np.ndarray]:
    names = [i.name for i in inputs]
    if sorted(sample) != sorted(names):
        raise CalibrationError(f"{source}: holds inputs {sorted(sample)}, the model takes {names}")
    checked = {}
    for spec in inputs:
        array = np.asarray(sample[spec.name])
        if not np.issubdtype(array.dtype, np.floating):
            raise CalibrationError(f"{source}: input '{spec.name}' has dtype {array.dtype}, expected floating point")
        if spec.dims is not None and (array.ndim != len(spec.dims) or any(
            isinstance(d, int) and d > 0 and d != a for d, a in zip(spec.dims, array.shape)
        )):
            raise CalibrationError(
                f"{source}: input '{spec.name}' has shape {tuple(array.shape)}, the model expects "
                f"{tuple(d if isinstance(d, int) and d > 0 else '?' for d in spec.dims)}"
            )
        if not np.isfinite(array).all():
            raise CalibrationError(f"{source}: input '{spec.name}' holds Inf or NaN")
        checked[spec.name] = array.astype(_numpy_dtype(spec), copy=False)
    return checked


def _load_image(path: Path, spec: InputInfo) -> np.ndarray:
    from PIL import Image  # optional: only calibration from image files needs Pillow

    if spec.dims is None or len(spec.dims) != 4 or spec.dims[1] != 3:
        raise CalibrationError(
            f"{path}: images need a model input of shape (N, 3, H, W), '{spec.name}' is {spec.describe()}")
    height, width = spec.dims[2], spec.dims[3]
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except OSError as error:
        raise CalibrationError(f"{path}: not a readable image ({error})") from None
    pixels = (pixels - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    batch = spec.dims[0] if isinstance(spec.dims[0], int) and spec.dims[0] > 0 else 1
    return np.repeat(pixels.transpose(2, 0, 1)[None], batch, axis=0)


def load_calibration_folder(folder: str | os.PathLike, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """Calibration samples from a folder: ``.npy`` files (one array for a one-input model),
    ``.npz`` files (one array per input name) or images (RGB, resized to the input's H x W,
    ImageNet-normalized). Every file is checked against the model's inputs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist")
    inputs = onnx_inputs(model)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".npy", ".npz", *IMAGE_SUFFIXES))
    if not files:
        raise CalibrationError(
            f"calibration folder {folder} holds no .npy, .npz or image ({', '.join(IMAGE_SUFFIXES)}) files"
        )
    samples = []
    for path in files:
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                if len(inputs) != 1:
                    raise CalibrationError(f"{path}: a .npy file fits one-input models; this one takes "
                                           f"{[i.name for i in inputs]}: use .npz files")
                sample = {inputs[0].name: np.load(path, allow_pickle=False)}
            elif suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    sample = {name: archive[name] for name in archive.files}
            else:
                if len(inputs) != 1:
                    raise CalibrationError(f"{path}: images fit one-input models only")
                sample = {inputs[0].name: _load_image(path, inputs[0])}
        except (ValueError, OSError) as error:
            if isinstance(error, CalibrationError):
                raise
            raise CalibrationError(f"{path}: cannot be read ({error})") from None
        samples.append(_check_sample(sample, inputs, str(path)))
    return samples


def synthetic_calibration(model: onnx.ModelProto, count: int, seed: int = 1000,
                          shapes: Sequence[Sequence[int]] | None = None) -> list[dict[str, np.ndarray]]:
    """Seeded standard-normal samples of the model's input shapes (or ``shapes``): the
    distribution ``dcn-deploy validate`` draws its inputs from, with other seeds."""

    if count < 1:
        raise CalibrationError(f"the synthetic calibration set needs at least 1 sample, got {count}")
    inputs = onnx_inputs(model)
    if shapes is None:

        recorded = get_metadata(model).get("input_shapes")
        shapes = json.loads(recorded) if recorded else [s.dims for s in inputs]
    if len(shapes) != len(inputs):
        raise CalibrationError(f"{len(shapes)} input shapes for a model with {len(inputs)} inputs "
                               f"{[i.name for i in inputs]}")
    if any(shape is None or any(not isinstance(d, int) or d <= 0 for d in shape) for shape in shapes):
        raise CalibrationError(f"the model's input shapes {shapes} are not static and it records no example "
                               "shape: give the shapes (dcn-deploy quantize --shape NxCxHxW, one per input) or "
                               "calibration files (--calib FOLDER)")
    samples = []
    for index in range(count):
        arrays = random_inputs(shapes, seed + index)
        samples.append({spec.name: a.astype(_numpy_dtype(spec)) for spec, a in zip(inputs, arrays)})
    return samples


def _reader(samples: list[dict[str, np.ndarray]], progress: Callable[[int], None] | None):
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.position = 0

        def get_next(self):
            if self.position >= len(samples):
                return None
            self.position += 1
            if progress:
                progress(self.position)
            return samples[self.position - 1]

        def __len__(self):
            return len(samples)

    return Reader()


@contextlib.contextmanager
def _quiet_logging():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _calibration_method(method: str):
    try:
        return {"max": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                "entropy": CalibrationMethod.Entropy}[method]
    except KeyError:
        raise ValueError(f"unknown calibration method '{method}'; choose one of {list(METHODS)}") from None


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    method: str
    samples: int
    dcn_nodes: list[dict] = field(default_factory=list)  # name, x_scale, w_scale range
    qdq_nodes: int = 0  # QuantizeLinear nodes ONNX Runtime's quantizer added
    kept_float: list[str] = field(default_factory=list)  # the nodes --keep-float left in float
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. no DCN layer)


@dataclass
class Calibration:
    """One calibration run: the float model and its activation ranges, from which any number of INT8
    models (each keeping other layers float) are built by :func:`quantize_calibrated`."""

    model: onnx.ModelProto  # the float model as given (custom or standard DCN nodes)
    standard_model: bytes  # the same with standard DeformConv: what ONNX Runtime's tools run
    tensors_range: object  # onnxruntime.quantization's TensorsData
    method: str
    samples: int


def _amax(tensors_range, name: str) -> float:
    low, high = tensors_range[name].range_value
    return float(max(abs(float(np.asarray(low).max(initial=0))), abs(float(np.asarray(high).max(initial=0)))))


def _int8_node(node: onnx.NodeProto, x_quantized: str, weight_name: str, kernel: Sequence[int], x_scale: float,
               w_scale: Sequence[float]) -> onnx.NodeProto:
    # The standard node may leave attributes at ONNX's defaults; the INT8 node spells all of them.
    attributes = {**schema.ATTRIBUTE_DEFAULTS, "kernel_shape": list(kernel)}
    attributes.update({a.name: helper.get_attribute_value(a) for a in node.attribute})
    inputs = [x_quantized, weight_name] + list(node.input[2:])
    return helper.make_node(
        schema.INT8_OP_TYPE, inputs, list(node.output), name=node.name, domain=schema.CUSTOM_DOMAIN,
        **{k: attributes[k] for k in schema.ATTRIBUTES},
        x_scale=float(x_scale), w_scale=[float(s) for s in w_scale], **schema.PLUGIN_ATTRIBUTES,
    )


def _replace_dcn_nodes(model: onnx.ModelProto, tensors_range, keep: set[str] = frozenset()) -> list[dict]:
    """Every standard DeformConv (formerly a custom DCN node) not in ``keep`` becomes QuantizeLinear +
    DcnDeformConvInt8."""

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    read_before = {name for node in graph.node for name in node.input}
    replaced, nodes = [], []
    quantized_inputs: dict[str, str] = {}
    for node in graph.node:
        if (node.op_type != schema.STANDARD_OP_TYPE or node.domain not in schema.STANDARD_DOMAINS
                or node.name in keep):
            nodes.append(node)
            continue
        label = node.name or node.output[0]
        x_name, w_name = node.input[0], node.input[1]
        if w_name not in initializers:
            raise ValueError(f"DCN node '{label}': INT8 export needs the weight as a constant initializer, "
                             f"'{w_name}' is computed in the graph")
        if x_name not in tensors_range.data:
            raise ValueError(f"DCN node '{label}': calibration recorded no range for its input '{x_name}'")
        amax = _amax(tensors_range, x_name)
        # An input that was 0 on every sample: any scale represents it; 1/127 keeps 1.0 representable.
        x_scale = float(np.float32(amax / 127.0)) if amax > 0 else float(np.float32(1.0 / 127.0))
        weight = numpy_helper.to_array(initializers[w_name])
        if weight.dtype != np.float32:
            raise ValueError(f"DCN node '{label}': weight '{w_name}' is {weight.dtype}; quantize a float32 export")
        wq, w_scale = quantize_weight_per_channel(torch.from_numpy(weight.copy()))
        wq_name = f"{w_name}_int8"
        if wq_name not in initializers:
            tensor = numpy_helper.from_array(wq.numpy(), wq_name)
            graph.initializer.append(tensor)
            initializers[wq_name] = tensor
        key = f"{x_name}@{x_scale!r}"
        if key not in quantized_inputs:  # One QuantizeLinear per (tensor, scale), shared by its DCN readers.
            q_name = f"{label}_X_int8"
            scale_name, zero_name = f"{q_name}_scale", f"{q_name}_zero_point"
            graph.initializer.extend([
                numpy_helper.from_array(np.array(x_scale, dtype=np.float32), scale_name),
                numpy_helper.from_array(np.array(0, dtype=np.int8), zero_name),
            ])
            nodes.append(helper.make_node("QuantizeLinear", [x_name, scale_name, zero_name], [q_name],
                                          name=f"{label}_quantize_X"))
            quantized_inputs[key] = q_name
        nodes.append(_int8_node(node, quantized_inputs[key], wq_name, weight.shape[2:], x_scale, w_scale))
        replaced.append({"name": label, "x_scale": x_scale, "w_scale_min": min(w_scale),
                         "w_scale_max": max(w_scale), "input_amax": amax})
    del graph.node[:]
    graph.node.extend(nodes)
    # Float weights only the DCN nodes read are now unused.
    read_now = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in read_now or i.name not in read_before]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return replaced


def _unquantize_inputs(model: onnx.ModelProto, keep: set[str]) -> None:
    """Feed the nodes ``keep`` their float inputs: ONNX Runtime's quantizer routes a tensor through one
    QuantizeLinear -> DequantizeLinear for all its readers, the excluded ones too (a head Conv kept float
    beside a quantized one read fake-quantized input; a DCN node's input, which calibration knows by its
    float name, became 'relu_DequantizeLinear_Output'). Q/DQ pairs left without readers are removed."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name not in keep:
            continue
        for position, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[position] = q.input[0]
    scales: set[str] = set()  # the removed nodes' scales and zero points
    while True:  # drop what nobody reads any more (a DQ, then its Q)
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            scales.update(n.input[1:])
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for initializer in [i for i in graph.initializer if i.name in scales and i.name not in read]:
        graph.initializer.remove(initializer)


def _prepare(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """A checked copy of a float32 model quantize can take."""
    if not isinstance(model, onnx.ModelProto):
        model = read_onnx(model, load_external_data=True)
    check_onnx(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())  # Never modify the caller's model.
    schema.name_unnamed_nodes(model.graph)
    if any(n.op_type in schema.INT8_OP_TYPES for n in model.graph.node):
        raise ValueError("the model is already quantized (it has DcnDeformConvInt8 nodes)")
    if get_metadata(model).get("precision", "fp32") != "fp32":
        raise ValueError(f"quantize a float32 export; this model is {get_metadata(model)['precision']}")
    if not quantizable_nodes(model):
        raise ValueError(f"the model has no {', '.join(QDQ_OP_TYPES)} or DeformConv node to quantize")
    return model


def calibrate(
    model: str | os.PathLike | onnx.ModelProto,
    samples: list[dict[str, np.ndarray]],
    method: str = "max",
    percentile: float = 99.999,
    progress: Callable[[int], None] | None = None,
) -> Calibration:
    """Run ONNX Runtime's calibrator (``method``) on ``samples``: the activation ranges of every input of
    the quantizable nodes."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method '{method}'; choose one of {list(METHODS)}")
    if not samples:
        raise CalibrationError("no calibration samples")
    if method == "percentile" and not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    model = _prepare(model)
    inputs = onnx_inputs(model)
    samples = [_check_sample(s, inputs, f"calibration sample {k}") for k, s in enumerate(samples)]
    # ONNX Runtime's tools run sessions without this project's library: they see standard DeformConv.
    standard_model, _ = rewrite_onnx(onnx.ModelProto.FromString(model.SerializeToString()), to="standard")
    with tempfile.TemporaryDirectory(prefix="dcn-deploy-calibrate-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        onnx.save(standard_model, str(float_path))
        extra = {"symmetric": True}
        if method == "percentile":
            extra["percentile"] = percentile
        elif method == "entropy":
            # TensorRT's entropy calibration: 2048 histogram bins folded into 128 quantized bins
            # (ONNX Runtime's default of 128 and 128 leaves one candidate threshold: the max).
            extra.update(num_bins=2048, num_quantized_bins=128)
        calibrator = create_calibrator(
            float_path, [*QDQ_OP_TYPES, schema.STANDARD_OP_TYPE], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_calibration_method(method), extra_options=extra,
        )
        calibrator.collect_data(_reader(samples, progress))
        tensors_range = calibrator.compute_data()
        del calibrator
    return Calibration(model, standard_model.SerializeToString(), tensors_range, method, len(samples))


def quantize_calibrated(calibration: Calibration, keep_float: Sequence[str] = ()) -> QuantizeResult:
    """The INT8 (Q/DQ) model of a calibrated float model (see the module table); ``keep_float``: node or
    layer names left in float (:func:`resolve_keep_float`). A kept DCN node stays a float DCN node of the
    model's own kind, its input and weight unquantized."""
    model = calibration.model
    keep = set(resolve_keep_float(model, keep_float))
    kept_qdq = [n.name for n in model.graph.node if n.name in keep and not schema.is_dcn_node(n)]
    with tempfile.TemporaryDirectory(prefix="dcn-deploy-quantize-") as tmp:
        tmp = Path(tmp)
        float_path, cache_path, out_path = tmp / "float.onnx", tmp / "ranges.json", tmp / "int8.onnx"
        float_path.write_bytes(calibration.standard_model)
        save_tensors_data(calibration.tensors_range, cache_path)
        # ONNX Runtime's quantizer logs a pre-processing hint on every run; the graph is already clean.
        with _quiet_logging():
            quantize_static(
                str(float_path), str(out_path), None, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QDQ_OP_TYPES), per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=[*offset_only_nodes(model.graph, schema.is_dcn_node), *kept_qdq],
                calibrate_method=_calibration_method(calibration.method),
                # Q/DQ on the inputs of Conv/MatMul/Gemm only, as TensorRT places them: quantizing
                # their outputs too (before the residual Add) doubled the error of resnet50_dcn
                # (rel L2 2.6e-2 against 1.3e-2).
                # QuantizeBias False: float32 biases, as TensorRT's explicit quantization expects (the
                # builder folds them into its int8 convolutions); an int32 bias DequantizeLinear is
                # refused by TensorRT-RTX's parser ("input has type Int32 but must have type FP8, FP4,
                # Int4, Int8, or UInt8"), and ONNX Runtime runs either.
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "OpTypesToExcludeOutputQuantization": list(QDQ_OP_TYPES),
                               "QuantizeBias": False},
                calibration_cache_path=str(cache_path),
            )
        quantized = onnx.load(str(out_path))
    # kept layers read float tensors; the DCN nodes get their own QuantizeLinear from the float tensor
    _unquantize_inputs(quantized, keep | {n.name for n in quantized.graph.node if schema.is_dcn_node(n)})
    qdq_nodes = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    replaced = _replace_dcn_nodes(quantized, calibration.tensors_range, keep)
    notes = []
    if any(schema.is_dcn_node(n) for n in model.graph.node):
        if not any(e.domain == schema.CUSTOM_DOMAIN for e in quantized.opset_import):
            quantized.opset_import.append(helper.make_opsetid(schema.CUSTOM_DOMAIN, schema.CUSTOM_OP_VERSION))
        if any(schema.is_custom_node(n) for n in model.graph.node) and any(
                n.op_type == schema.STANDARD_OP_TYPE for n in quantized.graph.node):
            rewrite_onnx(quantized, to="custom")  # the DCN nodes kept float, back to the model's own kind
    else:
        notes.append("the model has no DCN layer: plain ONNX Runtime static quantization (Q/DQ) of its "
                     f"{', '.join(QDQ_OP_TYPES)} nodes")
    # Keep the export's metadata (recipe, seed, shapes: validate builds the reference from it).
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    set_metadata(quantized, {"precision": "int8", "calibration_method": calibration.method,
                             "calibration_samples": str(calibration.samples),
                             "keep_float": json.dumps(sorted(keep))})
    schema.register_onnx_schema()
    onnx.checker.check_model(quantized)
    return QuantizeResult(quantized, calibration.method, calibration.samples, replaced, qdq_nodes,
                          [n.name for n in model.graph.node if n.name in keep], notes)


def quantize_onnx(
    model: str | os.PathLike | onnx.ModelProto,
    samples: list[dict[str, np.ndarray]],
    method: str = "max",
    percentile: float = 99.999,
    progress: Callable[[int], None] | None = None,
    keep_float: Sequence[str] = (),
) -> QuantizeResult:
    """Calibrate on ``samples`` and return the INT8 (Q/DQ) model (see the module table).
    ``keep_float`` names nodes or PyTorch layers left in float (e.g. a sensitive first layer or a DCN
    layer), see :func:`resolve_keep_float`. A model without DCN layers gets ONNX Runtime's own static
    quantization (``notes`` says so)."""
    model = _prepare(model)
    resolve_keep_float(model, keep_float)  # a wrong name fails before the calibration run
    return quantize_calibrated(calibrate(model, samples, method, percentile, progress), keep_float)
