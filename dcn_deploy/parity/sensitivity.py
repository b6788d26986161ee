"""``dcn-deploy quantize --sensitivity``: which layers the INT8 error comes from.

One calibration run, then one INT8 model per quantizable layer with only that layer quantized (every
other one float), each run on the calibration inputs in ONNX Runtime with this project's library and
compared with the float model's outputs (rel L2 per output over all inputs). Then the smallest prefix
of the layers sorted by that error whose float-keeping brings every output under the target
(default: the ``int8`` rel L2 bound ``validate`` judges by) is the suggestion for ``--keep-float``.

The error is measured against the float ONNX model, not PyTorch float64: it isolates what quantizing
costs. Layers' errors are not additive (they interact through the network), hence the greedy prefix
is re-measured step by step rather than summed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import onnx

from dcn_deploy.backends.onnxruntime import ort_session
from dcn_deploy.onnx.model_info import recorded_layers
from dcn_deploy.onnx.layers import quantizable_nodes
from dcn_deploy.onnx.quantize import Calibration, quantize_calibrated
from dcn_deploy.onnx.schema import is_dcn_node
from dcn_deploy.op.tolerances import tolerance_for
from dcn_deploy.parity.validate import compare_arrays


@dataclass
class LayerError:
    node: str
    op_type: str  # Conv, MatMul, Gemm or DCN
    layer: str  # the PyTorch module path export recorded ("" if unknown)
    rel_l2: dict[str, float]  # per output, only this layer quantized

    @property
    def worst(self) -> float:
        return max(self.rel_l2.values())


@dataclass
class SensitivityReport:
    method: str
    samples: int
    target: float  # rel L2 every output should stay under
    all_quantized: dict[str, float]  # per output, every layer quantized
    layers: list[LayerError]  # most sensitive first
    suggested: list[str] = field(default_factory=list)  # nodes to keep float, most sensitive first
    suggested_rel_l2: dict[str, float] = field(default_factory=dict)  # per output, with those kept float
    steps: list[dict] = field(default_factory=list)  # the greedy prefix: kept nodes -> worst rel L2

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry in data["layers"]:
            entry["worst_rel_l2"] = max(entry["rel_l2"].values())
        data["suggested_keep_float"] = suggested_names(self)
        return data


def _outputs(session, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, sample) for sample in samples]
    return {name: np.concatenate([np.asarray(run[k], np.float64).ravel() for run in runs])
            for k, name in enumerate(names)}


def _errors(model: onnx.ModelProto, samples, reference: dict[str, np.ndarray], threads: int | None) -> dict[str, float]:
    got = _outputs(ort_session(model.SerializeToString(), intra_op_threads=threads), samples)
    return {name: compare_arrays(got[name], reference[name])[2] for name in reference}


def layer_sensitivity(
    calibration: Calibration,
    samples: list[dict[str, np.ndarray]],
    target: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    threads: int | None = None,
) -> SensitivityReport:
    """Quantize one layer at a time (see the module docstring); ``samples``: the calibration inputs."""
    model = calibration.model
    target = tolerance_for("int8").rel_l2 if target is None else target
    nodes = quantizable_nodes(model)
    names = [n.name for n in nodes]
    layers = recorded_layers(model)
    total = 2 + len(nodes)
    done = 0

    def step(text: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(text, done, total)

    reference = _outputs(ort_session(model.SerializeToString(), intra_op_threads=threads), samples)
    step("float model")
    every = _errors(quantize_calibrated(calibration).model, samples, reference, threads)
    step("every layer quantized")
    errors = []
    for node in nodes:
        alone = quantize_calibrated(calibration, keep_float=[n for n in names if n != node.name]).model
        errors.append(LayerError(node.name, "DCN" if is_dcn_node(node) else node.op_type, layers.get(node.name, ""),
                                 _errors(alone, samples, reference, threads)))
        step(f"only {node.name} quantized")
    errors.sort(key=lambda e: e.worst, reverse=True)
    report = SensitivityReport(calibration.method, calibration.samples, target, every, errors)
    kept: list[str] = []
    current = every
    for entry in errors:  # greedy: keep the most sensitive float until every output is under the target
        if max(current.values()) <= target:
            break
        kept.append(entry.node)
        current = _errors(quantize_calibrated(calibration, keep_float=kept).model, samples, reference, threads)
        report.steps.append({"kept_float": list(kept), "worst_rel_l2": max(current.values())})
        if progress:
            progress(f"keeping {len(kept)} float", done, total)
    report.suggested, report.suggested_rel_l2 = kept, current
    return report


def suggested_names(report: SensitivityReport) -> list[str]:
    """The suggestion as ``--keep-float`` takes it: the layer (module) name where export recorded it and
    it means that node alone (a layer name also keeps its submodules' nodes float, which were not measured
    with it), else the node name."""
    by_node = {entry.node: entry for entry in report.layers}

    def means_only(layer: str, node: str) -> bool:
        covered = {e.node for e in report.layers if e.layer and (e.layer == layer or e.layer.startswith(layer + "."))}
        return covered == {node} and (layer not in by_node or layer == node)

    return [by_node[n].layer if by_node[n].layer and means_only(by_node[n].layer, n) else n for n in report.suggested]
