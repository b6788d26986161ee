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
import torch
from torch.utils._pytree import tree_flatten

from .tolerances import Tolerance, tolerance_for

__all__ = ["OutputParity", "ParityReport", "compare_arrays", "validate_onnx"]


@dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs: float
    max_rel: float
    rel_l2: float
    passed: bool


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

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

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
                f"rel_l2={output.rel_l2:.3e} (tol {self.tolerance.rel_l2:.1e})"
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


def random_inputs(shapes: Sequence[Sequence[int]], seed: int) -> list[np.ndarray]:
    """Seeded standard-normal float32 inputs."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for shape in shapes]


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
) -> ParityReport:
    """Run the model on ``num_inputs`` seeded random inputs in ONNX Runtime with the custom op
    (or ``run_backend``, named ``backend`` in the report, e.g. a TensorRT engine) and compare every
    output with ``reference`` evaluated in float64.

    Each output's errors are the worst over all inputs.
    """
    if num_inputs < 1:
        raise ValueError(f"num_inputs must be at least 1, got {num_inputs}")
    tolerance = tolerance_for(precision)
    if run_backend is None:
        backend = backend or "onnxruntime-custom-op"
        from .ort import ort_session

        session = ort_session(onnx_path)
        names = [i.name for i in session.get_inputs()]
        if len(names) != len(input_shapes):
            raise ValueError(f"{onnx_path} has {len(names)} inputs {names}, got {len(input_shapes)} input shapes")
        output_names = output_names or [o.name for o in session.get_outputs()]
        # A float16 graph exported without keep_io_types takes float16 inputs: the float32
        # random inputs are rounded for it (the reference sees the unrounded values).
        dtypes = [np.float16 if i.type == "tensor(float16)" else np.float32 for i in session.get_inputs()]

        def run_backend(arrays):
            return session.run(None, {name: a.astype(dtype) for name, dtype, a in zip(names, dtypes, arrays)})

    reference64 = copy.deepcopy(reference).double().eval()
    worst: dict[int, list[float]] = {}
    shapes: dict[int, list[int]] = {}
    times = []
    for index in range(num_inputs):
        arrays = random_inputs(input_shapes, seed + index)
        start = time.perf_counter()
        outputs = run_backend(arrays)
        times.append(time.perf_counter() - start)
        with torch.no_grad():
            expected, _ = tree_flatten(reference64(*[torch.from_numpy(a).double() for a in arrays]))
        if len(outputs) != len(expected):
            raise ValueError(f"the backend returned {len(outputs)} outputs, the reference {len(expected)}")
        for k, (out, ref) in enumerate(zip(outputs, expected)):
            errors = compare_arrays(out, ref.numpy())
            worst[k] = [max(a, b) for a, b in zip(worst.get(k, [0.0, 0.0, 0.0]), errors)]
            shapes[k] = list(np.shape(out))
        if progress:
            progress(index + 1)
    report = ParityReport(
        model=str(onnx_path),
        backend=backend or "custom",
        precision=precision,
        tolerance=tolerance,
        num_inputs=num_inputs,
        seed=seed,
        input_shapes=[list(s) for s in input_shapes],
        backend_ms=float(np.median(times) * 1000),
    )
    names = list(output_names or [f"output_{k}" for k in worst])
    for k, (max_abs, max_rel, rel_l2) in sorted(worst.items()):
        passed = max_rel <= tolerance.max_rel and rel_l2 <= tolerance.rel_l2
        report.outputs.append(OutputParity(names[k], shapes[k], max_abs, max_rel, rel_l2, passed))
    return report
