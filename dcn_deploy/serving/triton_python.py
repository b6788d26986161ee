"""The model behind a Triton Python-backend repository (``dcn-deploy triton-repo --backend python``).

Triton's Python backend imports ``<model>/1/model.py`` in its own interpreter (the stub process) and
calls ``TritonPythonModel().initialize(args)``, ``execute(requests)`` and ``finalize()``. The generated
``model.py`` is a shim over :class:`DcnTritonModel`, so the repository runs this project's runtime
(:class:`~dcn_deploy.backends.onnxruntime.OnnxRuntimeBackend` with the custom-op library copied beside
``config.pbtxt``), not a second copy of it. This module needs numpy, onnxruntime and dcn_deploy only
(no torch, no onnx), so it runs in a small environment beside Triton's.

=========================  ==========================================================================
Triton's dynamic batcher   on when ``max_batch_size`` > 0 (the generator sets it only where
                           :mod:`dcn_deploy.serving.batch_axis` proves axis 0 is the batch); one
                           ``execute`` then gets several requests, stacked here along axis 0 into one
                           run when their other dims and types agree, answered row by row
bad request                an error response naming the input (the runtime's own check), the other
                           requests of the call still answered
failed run                 an error response for each request of that run
=========================  ==========================================================================
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dcn_deploy.backends.onnxruntime import LIBRARY_NAME, OnnxRuntimeBackend

MODEL_FILE = "model.onnx"
THREADS_PARAMETER = "intra_op_threads"  # config.pbtxt parameters: ONNX Runtime threads per instance


class DcnTritonModel:
    """``initialize``/``execute``/``finalize`` as Triton's Python backend calls them. ``pb_utils`` is
    the backend's ``triton_python_backend_utils`` module (the tests pass a stand-in)."""

    def __init__(self, pb_utils):
        self.pb_utils = pb_utils
        self.runtime: OnnxRuntimeBackend | None = None
        self.batched = False
        self.output_names: list[str] = []

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        model_dir = Path(args["model_repository"])
        threads = config.get("parameters", {}).get(THREADS_PARAMETER, {}).get("string_value")
        self.runtime = OnnxRuntimeBackend(model_dir / str(args["model_version"]) / MODEL_FILE,
                                          threads=int(threads) if threads else None,
                                          library=model_dir / LIBRARY_NAME)
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                arrays, _ = self.runtime.check_inputs(
                    {spec.name: self._input(request, spec.name) for spec in self.runtime.inputs})
            except ValueError as error:
                responses[index] = self._error(str(error))
                continue
            # requests stack when everything but axis 0 agrees; without batching each runs alone
            key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in arrays.items()) if self.batched else (index,)
            groups.setdefault(key, []).append((index, arrays))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def finalize(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None

    def _input(self, request, name: str) -> np.ndarray:
        tensor = self.pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"missing input '{name}'; the model's inputs are {[s.name for s in self.runtime.inputs]}")
        return tensor.as_numpy()

    def _run_group(self, members: list[tuple[int, dict[str, np.ndarray]]], responses: list) -> None:
        names = list(members[0][1])
        stacked = ({n: members[0][1][n] for n in names} if len(members) == 1
                   else {n: np.concatenate([arrays[n] for _, arrays in members]) for n in names})
        try:
            outputs = self.runtime.run_checked(stacked, self.output_names)
        except Exception as error:  # answer every request of the run; the stub must keep serving
            for index, _ in members:
                responses[index] = self._error(f"the run failed: {error}")
            return
        start = 0
        for index, arrays in members:
            rows = arrays[names[0]].shape[0] if len(members) > 1 else None
            part = {n: (v if rows is None else v[start:start + rows]) for n, v in outputs.items()}
            start += rows or 0
            responses[index] = self.pb_utils.InferenceResponse(
                output_tensors=[self.pb_utils.Tensor(n, np.ascontiguousarray(part[n])) for n in self.output_names])

    def _error(self, message: str):
        return self.pb_utils.InferenceResponse(output_tensors=[], error=self.pb_utils.TritonError(message))
