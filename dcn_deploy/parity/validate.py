"""Parity: run an exported model in a backend and compare it with the PyTorch model in float64."""
from __future__ import annotations

import copy
import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch.utils._pytree import tree_flatten

from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.model_info import get_metadata, graph_precision, load_model, onnx_inputs, random_inputs
from dcn_deploy.op import int8
from dcn_deploy.op.tolerances import Tolerance, baseline_bound, tolerance_for


@dataclass
class OutputParity:
    """One output's worst errors over the inputs, ours and PyTorch float32's (the baseline), and the verdict."""

    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    rel_l2: float
    passed: bool
    torch_fp32_max_rel: float = 0.0
    torch_fp32_rel_l2: float = 0.0
    judged_by: str = "fixed"  # fixed | baseline | atol | rtol: what let it pass (or the fixed bound, failing)


@dataclass
class ParityReport:
    model: str
    backend: str
    precision: str
    tolerance: Tolerance
    num_inputs: int
    seed: int
    input_shapes: list[list[int]]
    outputs: list[OutputParity] = field(default_factory=list)
    backend_ms: float = 0.0  # median time of one backend run
    int8_nodes: list["Int8NodeParity"] = field(default_factory=list)  # INT8 models: the exact check per node
    rtol: float | None = None  # user overrides of the bounds (--rtol, --atol)
    atol: float | None = None
    more_shapes: list[list[list[int]]] = field(default_factory=list)  # further input shape sets, each checked too

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs) and all(n.passed for n in self.int8_nodes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def write_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def write_junit(self, path: str | os.PathLike) -> None:
        """JUnit XML, one test case per output, for users' CI systems."""
        failures = sum(not o.passed for o in self.outputs)
        suite = ET.Element(
            "testsuite",
            name=f"dcn-deploy parity {self.backend} {self.precision}",
            tests=str(len(self.outputs)),
            failures=str(failures),
            errors="0",
        )
        for output in self.outputs:
            case = ET.SubElement(suite, "testcase", classname=Path(self.model).name, name=output.name)
            detail = (
                f"max_abs={output.max_abs:.3e} max_rel={output.max_rel:.3e} (tol {self.tolerance.max_rel:.1e}) "
                f"rel_l2={output.rel_l2:.3e} (tol {self.tolerance.rel_l2:.1e}) pytorch_fp32_max_rel="
                f"{output.torch_fp32_max_rel:.3e} pytorch_fp32_rel_l2={output.torch_fp32_rel_l2:.3e} "
                f"judged_by={output.judged_by}"
            )
            if output.passed:
                ET.SubElement(case, "system-out").text = detail
            else:
                ET.SubElement(case, "failure", message="tolerance exceeded").text = detail
        ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def compare_arrays(output: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """``(max_abs, max_rel, rel_l2)`` of ``output`` against ``reference`` (both in float64).

    A non-finite value in the output makes every error infinite.
    """
    output = np.asarray(output, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if output.shape != reference.shape:
        raise ValueError(f"output shape {output.shape} differs from the reference shape {reference.shape}")
    if not np.all(np.isfinite(output)):
        return (float("inf"),) * 3
    diff = output - reference
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    norm = float(np.linalg.norm(reference))
    max_rel = max_abs / scale if scale > 0 else max_abs
    rel_l2 = float(np.linalg.norm(diff)) / norm if norm > 0 else float(np.linalg.norm(diff))
    return max_abs, max_rel, rel_l2


def validate_onnx(
    onnx_path: str | os.PathLike,
    reference: torch.nn.Module,
    input_shapes: Sequence[Sequence[int]],
    num_inputs: int = 3,
    seed: int = 0,
    precision: str = "fp32",
    run_backend: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
    output_names: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    more_shapes: Sequence[Sequence[Sequence[int]]] = (),
) -> ParityReport:
    """Run the model on ``num_inputs`` seeded random inputs of ``input_shapes`` (and as many of each
    shape set in ``more_shapes``: a dynamic model checked away from its export shape) in ONNX Runtime with the custom op
    (or ``run_backend``, named ``backend`` in the report, e.g. a TensorRT engine) and compare every
    output with ``reference`` evaluated in float64.

    Each output's errors are the worst over all inputs. The reference in float32 is measured the same way
    (the baseline); an output passes within the precision's fixed bound or within what its baseline predicts
    (:mod:`dcn_deploy.op.tolerances`). ``rtol`` replaces both relative bounds (max rel and rel L2); ``atol``
    passes an output whose max abs error is at most it. An output whose shape differs from PyTorch's is a
    ValueError that names shape specialisation.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (value >= 0 and np.isfinite(value)):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if num_inputs < 1:
        raise ValueError(f"num_inputs must be at least 1, got {num_inputs}")
    tolerance = tolerance_for(precision)
    ort_int8_check = None
    if run_backend is None:
        backend = backend or "onnxruntime-custom-op"

        session = ort_session(onnx_path)
        names = [i.name for i in session.get_inputs()]
        if any(len(names) != len(shapes) for shapes in [input_shapes, *more_shapes]):
            raise ValueError(f"{onnx_path} has {len(names)} inputs {names}, got {len(input_shapes)} input shapes")
        output_names = output_names or [o.name for o in session.get_outputs()]
        # A float16 graph exported without keep_io_types takes float16 inputs: the float32
        # random inputs are rounded for it (the reference sees the unrounded values).
        dtypes = [np.float16 if i.type == "tensor(float16)" else np.float32 for i in session.get_inputs()]

        def run_backend(arrays):
            return session.run(None, {name: a.astype(dtype) for name, dtype, a in zip(names, dtypes, arrays)})

        def ort_int8_check(arrays):
            feeds = {name: a.astype(dtype) for name, dtype, a in zip(names, dtypes, arrays)}
            return check_int8_nodes(ort_session, onnx.load(str(onnx_path)), feeds)

    reference64 = copy.deepcopy(reference).double().eval()
    reference32 = copy.deepcopy(reference).float().eval()
    worst: dict[int, list[float]] = {}
    baseline: dict[int, list[float]] = {}
    shapes: dict[int, list[int]] = {}
    times = []
    runs = [(shapes, index) for shapes in [input_shapes, *more_shapes] for index in range(num_inputs)]
    for run, (run_shapes, index) in enumerate(runs):
        arrays = random_inputs(run_shapes, seed + index)
        start = time.perf_counter()
        outputs = run_backend(arrays)
        times.append(time.perf_counter() - start)
        with torch.no_grad():
            expected, _ = tree_flatten(reference64(*[torch.from_numpy(a).double() for a in arrays]))
            expected32, _ = tree_flatten(reference32(*[torch.from_numpy(a).float() for a in arrays]))
        if len(outputs) != len(expected):
            raise ValueError(f"the backend returned {len(outputs)} outputs, the reference {len(expected)}")
        for k, (out, ref, ref32) in enumerate(zip(outputs, expected, expected32)):
            if tuple(np.shape(out)) != tuple(ref.shape):
                name = output_names[k] if output_names and k < len(output_names) else f"output {k}"
                raise ValueError(
                    f"output '{name}' has shape {_dims(np.shape(out))} in {backend or 'the backend'} but "
                    f"{_dims(ref.shape)} in PyTorch for inputs {' '.join(_dims(s) for s in run_shapes)}: the export "
                    "specialised a shape-dependent branch or size to the export shape (shape specialisation); "
                    "export with --static for this shape, or make the model's size arithmetic traceable")
            errors = compare_arrays(out, ref.numpy())
            worst[k] = [max(a, b) for a, b in zip(worst.get(k, [0.0, 0.0, 0.0]), errors)]
            baseline[k] = [max(a, b) for a, b in zip(baseline.get(k, [0.0, 0.0, 0.0]),
                                                     compare_arrays(ref32.numpy(), ref.numpy()))]
            shapes.setdefault(k, list(np.shape(out)))  # the first shape set's
        if progress:
            progress(run + 1)
    int8_nodes: list[Int8NodeParity] = []
    if precision == "int8" and ort_int8_check is not None:
        int8_nodes = ort_int8_check(random_inputs(input_shapes, seed))
    report = ParityReport(
        model=str(onnx_path),
        backend=backend or "custom",
        precision=precision,
        tolerance=tolerance,
        num_inputs=num_inputs,
        seed=seed,
        input_shapes=[list(s) for s in input_shapes],
        backend_ms=float(np.median(times) * 1000),
        int8_nodes=int8_nodes,
        rtol=rtol,
        atol=atol,
        more_shapes=[[list(s) for s in shapes] for shapes in more_shapes],
    )
    names = list(output_names or [f"output_{k}" for k in worst])
    for k, (max_abs, max_rel, rel_l2) in sorted(worst.items()):
        _, base_rel, base_l2 = baseline[k]
        passed, judged_by = judge(precision, tolerance, (max_abs, max_rel, rel_l2), (base_rel, base_l2), rtol, atol)
        report.outputs.append(OutputParity(names[k], shapes[k], max_abs, max_rel, rel_l2, passed, base_rel, base_l2,
                                           judged_by))
    return report


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def more_input_shapes(model, input_shapes: Sequence[Sequence[int]]) -> list[list[tuple[int, ...]]]:
    """A second shape set for a model with dynamic inputs: each dynamic batch axis + 1 and each dynamic
    axis after the channels + 32 (a multiple of every usual stride); [] for a static model."""
    inputs = onnx_inputs(model)
    if not any(i.dynamic for i in inputs):
        return []
    varied = []
    for info, shape in zip(inputs, input_shapes):
        dims = info.dims if info.dims is not None else (None,) * len(shape)
        varied.append(tuple(size if isinstance(dim, int) else size + 1 if axis == 0 else
                            size + 32 if axis >= 2 else size
                            for axis, (dim, size) in enumerate(zip(dims, shape))))
    return [varied] if varied != [tuple(s) for s in input_shapes] else []


def model_precision(model) -> str:
    """The precision that picks the tolerance: what the ONNX records (``export``: fp32/fp16, ``quantize``:
    int8), else what its graph holds (float32 when it cannot tell)."""
    proto = load_model(model)
    recorded = get_metadata(proto).get("precision")
    if recorded:
        return recorded
    found = graph_precision(proto)
    return found if found in ("fp32", "fp16") else "fp32"


def validate(
    onnx_path: str | os.PathLike,
    model: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    num_inputs: int = 3,
    seed: int = 0,
    more_shapes: bool | Sequence[Sequence[Sequence[int]]] = True,
    precision: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> ParityReport:
    """Parity of an exported ONNX with your own PyTorch ``model`` in float64, in ONNX Runtime with the
    custom op: seeded random inputs shaped like ``example_inputs`` (their values are not used).

    ``more_shapes=True`` also checks a second shape set when the ONNX has dynamic inputs
    (:func:`more_input_shapes`); a list gives the shape sets, ``False`` none. ``precision`` defaults to the
    ONNX's (recorded or seen in the graph). Check ``report.passed``; see :func:`validate_onnx`."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    shapes = [tuple(t.shape) for t in example_inputs]
    proto = load_model(onnx_path)
    if more_shapes is True:
        more_shapes = more_input_shapes(proto, shapes)
    elif more_shapes is False:
        more_shapes = []
    return validate_onnx(onnx_path, model, shapes, num_inputs=num_inputs, seed=seed,
                         precision=precision or model_precision(proto), rtol=rtol, atol=atol, more_shapes=more_shapes)


def judge(precision: str, tolerance: Tolerance, errors: tuple[float, float, float], baseline: tuple[float, float],
          rtol: float | None = None, atol: float | None = None) -> tuple[bool, str]:
    """(passed, by what): ``atol`` on max abs, else ``rtol`` on both relative errors, else the precision's
    fixed bound or the bound its float32 ``baseline`` (max rel, rel L2) predicts (:mod:`dcn_deploy.op.tolerances`)."""
    max_abs, max_rel, rel_l2 = errors
    if atol is not None and max_abs <= atol:
        return True, "atol"
    if rtol is not None:
        return max_rel <= rtol and rel_l2 <= rtol, "rtol"
    if max_rel <= tolerance.max_rel and rel_l2 <= tolerance.rel_l2:
        return True, "fixed"
    if max_rel <= max(tolerance.max_rel, baseline_bound(precision, baseline[0])) and \
            rel_l2 <= max(tolerance.rel_l2, baseline_bound(precision, baseline[1])):
        return True, "baseline"
    return False, "fixed"


@dataclass
class Int8NodeParity:
    """One INT8 DCN node's output against :func:`dcn_deploy.op.int8.deform_conv2d_int8` on the
    node's own inputs: identical except flipped float ties (see :func:`dcn_deploy.op.int8.compare_int8`)."""

    name: str
    elements: int
    differing: int
    max_steps: float  # int8 output: steps of Yq; float output: accumulator steps
    allowed_steps: float
    passed: bool


# At most 0.1% of the elements may differ, each by one flipped tie (issue 6's exact check).
INT8_MAX_DIFFERING_FRACTION = 1e-3


def check_int8_nodes(session_factory: Callable[[bytes], object], model, feeds: dict[str, np.ndarray]
                     ) -> list[Int8NodeParity]:
    """Run ``model`` with every INT8 DCN node's inputs and output exposed, and compare each
    output with the exact reference computed from those inputs.

    ``session_factory`` makes a session (with the custom op registered) from model bytes.
    """

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = [n for n in graph.node if n.domain == schema.CUSTOM_DOMAIN and n.op_type in schema.INT8_OP_TYPES]
    if not nodes:
        return []
    initializers = {i.name: i for i in graph.initializer}
    existing = {o.name for o in graph.output}
    wanted: list[str] = []
    for node in nodes:
        for name in [node.input[0], *node.input[2:], node.output[0]]:
            if name and name not in initializers and name not in existing and name not in wanted:
                wanted.append(name)
    graph.output.extend(helper.make_empty_tensor_value_info(name) for name in wanted)
    session = session_factory(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, feeds)))
    values.update(feeds)

    def tensor(name: str):
        if not name:
            return None
        array = numpy_helper.to_array(initializers[name]) if name in initializers else values[name]
        return torch.from_numpy(np.array(array))  # a writable copy

    results = []
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = [tensor(node.input[k]) if k < len(node.input) else None for k in range(5)]
        x, w, offset, bias, mask = inputs
        expected = int8.deform_conv2d_int8(
            x, offset, w, attrs["x_scale"], list(attrs["w_scale"]), bias, stride=list(attrs["strides"]),
            padding=list(attrs["pads"]), dilation=list(attrs["dilations"]), mask=mask, groups=attrs["group"],
            offset_groups=attrs["offset_group"], y_scale=attrs.get("y_scale"),
        )
        scales = int8.Int8Scales.make(attrs["x_scale"], list(attrs["w_scale"]), out_channels=w.shape[0])
        agreement = int8.compare_int8(values[node.output[0]], expected, scales.output_scale())
        allowed = 1.0 if expected.dtype == torch.int8 else float(int8.FLIPPED_TIE_STEPS)
        results.append(Int8NodeParity(
            node.name or node.output[0], agreement.elements, agreement.differing, agreement.max_steps, allowed,
            agreement.within(allowed, INT8_MAX_DIFFERING_FRACTION),
        ))
    return results
