"""Whether concurrent requests may be stacked along axis 0: the one rule behind ``dcn-deploy serve``'s
dynamic batcher and ``dcn-deploy triton-repo``'s ``max_batch_size``.

Stacking requests into one run and cutting every output back by rows is right only when axis 0 of
every output *is* the batch: row i of each output comes from row i of the inputs alone. A dynamic
axis 0 is not enough. An NMS-style output ``(num_selected, k)``, ``torch.nonzero`` rows, or any
data-dependent first axis is dynamic too, and cutting it by request rows hands clients each other's
answers without any error. So the evidence is read in this order:

| what the model shows                                                  | verdict |
|-----------------------------------------------------------------------|---------|
| an input or output whose axis 0 is fixed, or no inputs                 | ``alone``: never stacked |
| inputs whose axis 0 carry different symbols                            | ``alone`` |
| every output's axis 0 carries the inputs' batch symbol (ONNX ``dim_param``) | ``stack``: proven by the graph's shapes |
| some output's axis 0 has another symbol, or none (TensorRT engines)    | ``probe`` (below); ``alone`` until it passes |

The probe runs on real inputs (a request's, or random ones of a known shape): the inputs alone (``a``),
a varied copy alone (``b``: every axis but 0 reversed), and both stacked (``a`` then ``b``). It
passes when each unproven output has as many rows as the batch in all three runs and the stacked
output's rows equal the two lone runs' (integers exactly, floats to 1e-4 of the output's scale). A
model that mixes rows or whose axis 0 counts something else fails it with a reason naming the output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

STACK, PROBE, ALONE = "stack", "probe", "alone"


# relative to the output's largest magnitude: a batch size may change float rounding, not the answer
PROBE_TOLERANCE = 1e-4
RunFn = Callable[[dict[str, np.ndarray], list[str]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class BatchAxis:
    """A verdict (``stack``, ``probe`` or ``alone``), the reason in words, and the outputs a probe must check."""

    verdict: str
    reason: str
    unproven: tuple[str, ...] = ()

    @property
    def stack(self) -> bool:
        return self.verdict == STACK


def _axis0(spec) -> tuple[int, str | None]:
    """(size, symbol) of a TensorSpec's axis 0: size -1 when dynamic, symbol None when unnamed."""
    names = spec.axis_names
    return spec.shape[0], (names[0] if names else None)


def batch_axis_from_graph(inputs: Sequence, outputs: Sequence, max_batch: int | None = None) -> BatchAxis:
    """The verdict the model's declared shapes allow (TensorSpecs with optional ``axis_names``)."""
    if not inputs:
        return BatchAxis(ALONE, "the model has no inputs to stack")
    if max_batch is not None and max_batch <= 1:
        return BatchAxis(ALONE, f"the model takes at most {max_batch} row(s) on axis 0")
    for kind, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            if not spec.shape or spec.shape[0] >= 0:
                axis = "no axis 0" if not spec.shape else f"a fixed axis 0 of {spec.shape[0]}"
                return BatchAxis(ALONE, f"{kind} '{spec.name}' has {axis}")
    symbols = {_axis0(spec)[1] for spec in inputs}
    if len(symbols) > 1 and None not in symbols:
        return BatchAxis(ALONE, f"the inputs' axis 0 carry different symbols {sorted(symbols)}: not one batch axis")
    batch = symbols.pop() if len(symbols) == 1 else None
    unproven = tuple(spec.name for spec in outputs if batch is None or _axis0(spec)[1] != batch)
    if not unproven:
        return BatchAxis(STACK, f"every output's axis 0 is the inputs' batch axis '{batch}' in the graph")
    shown = ", ".join(f"'{name}' ({_axis0(spec)[1] or 'unnamed'})" for name in unproven
                      for spec in outputs if spec.name == name)
    against = f"'{batch}'" if batch else "unnamed"
    return BatchAxis(PROBE, f"axis 0 of output(s) {shown} is not provably the batch axis ({against}) in the graph",
                     unproven)


def _varied(array: np.ndarray) -> np.ndarray:
    """Other data of the same shape and values: every axis but the batch reversed."""
    axes = tuple(range(1, array.ndim)) or (0,)
    return np.ascontiguousarray(np.flip(array, axis=axes))


def _rows_equal(stacked: np.ndarray, alone: np.ndarray) -> bool:
    if stacked.shape != alone.shape or stacked.dtype != alone.dtype:
        return False
    if not np.issubdtype(alone.dtype, np.floating):
        return bool(np.array_equal(stacked, alone))
    finite = np.isfinite(alone)
    if not np.array_equal(finite, np.isfinite(stacked)) or not np.array_equal(stacked[~finite], alone[~finite],
                                                                              equal_nan=True):
        return False
    scale = float(np.max(np.abs(alone[finite]), initial=0.0)) or 1.0
    difference = np.abs(stacked[finite].astype(np.float64) - alone[finite].astype(np.float64))
    return bool(np.all(difference <= PROBE_TOLERANCE * scale))


def probe_batch_axis(run: RunFn, arrays: dict[str, np.ndarray], outputs: Sequence[str],
                     alone: Mapping[str, np.ndarray] | None = None) -> BatchAxis:
    """Check on ``arrays`` (one request, every input) that ``outputs`` follow the batch (module docstring).

    ``run(arrays, output_names)`` runs the model; ``alone``, when given, is its result for ``arrays``
    already (the request's own answer), so the probe costs two more runs. Returns ``stack`` or
    ``alone`` with the reason; an exception from the model is the model's, not the probe's, and
    propagates."""
    names = list(outputs)
    rows = next(iter(arrays.values())).shape[0]
    if alone is None:
        alone = run(arrays, names)
    other_arrays = {name: _varied(value) for name, value in arrays.items()}
    other = run(other_arrays, names)
    stacked_arrays = {name: np.concatenate([arrays[name], other_arrays[name]]) for name in arrays}
    stacked = run(stacked_arrays, names)
    for name in names:
        for what, result, want in (("alone", alone, rows), ("alone (varied input)", other, rows),
                                   ("stacked", stacked, 2 * rows)):
            value = np.asarray(result[name])
            got = value.shape[0] if value.ndim else None
            if got != want:
                return BatchAxis(ALONE, f"output '{name}' has {got if got is not None else 'no'} rows on axis 0 for "
                                        f"a batch of {want} ({what}): its axis 0 is not the batch")
        value = np.asarray(stacked[name])
        if not (_rows_equal(value[:rows], np.asarray(alone[name]))
                and _rows_equal(value[rows:], np.asarray(other[name]))):
            return BatchAxis(ALONE, f"output '{name}': the rows of a stacked run differ from the requests run "
                                    f"alone (the model mixes rows)")
    return BatchAxis(STACK, f"a probe showed that axis 0 of output(s) {names} follows the batch")


def probe_inputs(specs: Sequence, shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays to probe the batch axis with: ``shapes`` by input name (every input), float normal, integers in [0, 8)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape, dtype = tuple(shapes[spec.name]), spec.dtype
        if np.issubdtype(dtype, np.floating):
            arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            arrays[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            arrays[spec.name] = rng.integers(0, 8, shape).astype(dtype)
    return arrays
