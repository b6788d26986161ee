"""``dcn-deploy triton-repo``: a model repository for NVIDIA Triton Inference Server.

Layout written (``<repo>/README.md`` says how to start tritonserver with it)::

    <repo>/README.md
    <repo>/<model>/config.pbtxt
    <repo>/<model>/1/model.onnx | model.plan | model.onnx + model.py   (onnxruntime | tensorrt | python)
    <repo>/<model>/libdcn_deploy_ort.so | libdcn_deploy_trt.so   (the custom op / plugin library)

Backends: ``onnxruntime`` and ``tensorrt`` are Triton's own (the model runs inside Triton's ONNX Runtime or
TensorRT); ``python`` is Triton's Python backend running this project's runtime
(:mod:`dcn_deploy.serving.triton_python`, ONNX Runtime with the custom-op library) through a generated
``model.py``: the route when Triton's ONNX Runtime is too old for the library, and the one CI runs against a
real tritonserver (``tests/test_tritonserver.py``).

The library is copied into the model's directory so the repository is self-contained, and the
config names it by the path tritonserver will see (``mount``: the repository's absolute path here
by default, ``/models`` when it is mounted there in a container). An absolute path, because the
onnxruntime backend hands ``op_library_filename`` to ``dlopen`` as it is: a relative name would be
looked up in the library search path, not in the model's directory.

The config is plain text with comments; the tests parse it with ``google.protobuf.text_format``
into Triton's ``ModelConfig`` message (shipped with ``tritonclient[grpc]``), which rejects unknown
fields, so this module itself needs no Triton package.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import onnx
from onnx import helper

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.backends.onnxruntime import LIBRARY_NAME as ORT_LIBRARY_NAME
from dcn_deploy.backends.onnxruntime import ort_custom_op_library
from dcn_deploy.backends.runtime import TensorSpec, backend_for, datatype_of
from dcn_deploy.backends.tensorrt.common import TensorRTError, tensorrt_major, trt_plugin_library
from dcn_deploy.backends.tensorrt.engine import engine_info
from dcn_deploy.backends.tensorrt.runtime import TensorRTBackend
from dcn_deploy.onnx.model_info import get_metadata, uses_custom_op
from dcn_deploy.serving.batch_axis import (
    ALONE,
    PROBE,
    BatchAxis,
    batch_axis_from_graph,
    probe_batch_axis,
    probe_inputs,
)
from dcn_deploy.serving.protocol import MODEL_VERSION
from dcn_deploy.serving.triton_python import MODEL_FILE, THREADS_PARAMETER

TRITON_BACKENDS = ("onnxruntime", "tensorrt", "python")
TRT_LIBRARY_NAME = "libdcn_deploy_trt.so"  # the plugin library's name in the model's directory (any layout)
# The Python backend's model.py: a shim, the model itself is dcn_deploy.serving.triton_python.
PYTHON_MODEL = '''# Written by dcn-deploy triton-repo --backend python. Triton's Python backend runs this file; the model
# is dcn_deploy.serving.triton_python (ONNX Runtime with this project's custom-op library, copied beside
# config.pbtxt), which the backend's Python must be able to import: README.md at the repository's root.
import triton_python_backend_utils as pb_utils

from dcn_deploy.serving.triton_python import DcnTritonModel


class TritonPythonModel(DcnTritonModel):
    def __init__(self):
        super().__init__(pb_utils)
'''


class TritonRepoError(ValueError):
    """The repository cannot be written as asked; the message says why and what to do."""


def onnx_io(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The ONNX graph's inputs (initializers left out) and outputs, -1 for every dynamic axis."""

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    initializers = {init.name for init in proto.graph.initializer}

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type == onnx.TensorProto.STRING:
            datatype = "BYTES"
        else:
            datatype = datatype_of(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        names = tuple(d.dim_param or None for d in tensor.shape.dim)
        return TensorSpec(value.name, datatype, dims, names)

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in proto.graph.output]


def _triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _tensors(kind: str, specs: Sequence[TensorSpec], batched: bool) -> list[str]:
    lines = [f"{kind} ["]
    for index, spec in enumerate(specs):
        dims = spec.shape[1:] if batched else spec.shape
        lines += ["  {", f'    name: "{spec.name}"', f"    data_type: {_triton_type(spec.datatype)}",
                  f"    dims: [ {', '.join(str(d) for d in dims)} ]", "  }" + ("," if index < len(specs) - 1 else "")]
    return lines + ["]"]


def model_config_text(name: str, backend: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                      max_batch_size: int, max_delay_ms: float, instances: int, kind: str,
                      op_library: str | None = None, source: str = "", threads: int | None = None) -> str:
    """Triton's config.pbtxt. ``max_batch_size`` 0: the model has no batch axis (dims are whole shapes,
    no dynamic batching); else dims leave axis 0 out and Triton stacks requests up to it. ``threads``: the
    python backend's ONNX Runtime intra-op threads per instance (a ``parameters`` entry its model reads)."""
    platform = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "python": None}[backend]
    batched = max_batch_size > 0
    lines = [f"# Written by dcn-deploy triton-repo{' from ' + source if source else ''}; README.md at the "
             f"repository's root says how to start tritonserver.",
             f'name: "{name}"'] + ([f'platform: "{platform}"'] if platform else []) + [
             f'backend: "{backend}"', f"max_batch_size: {max_batch_size}"]
    lines += _tensors("input", inputs, batched)
    lines += _tensors("output", outputs, batched)
    if batched:
        lines += ["# Triton stacks concurrent requests along axis 0 up to max_batch_size, waiting at most this long.",
                  "dynamic_batching {", f"  max_queue_delay_microseconds: {int(round(max_delay_ms * 1000))}", "}"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: KIND_{kind.upper()}", "  }", "]"]
    if threads is not None:
        lines += ["# ONNX Runtime intra-op threads per instance (instances x threads: the cores it may use).",
                  "parameters [", "  {", f'    key: "{THREADS_PARAMETER}"',
                  f'    value: {{ string_value: "{threads}" }}', "  }", "]"]
    if op_library:
        lines += ["# The DcnDeformConv custom-op library, registered with each ONNX Runtime session.",
                  "model_operations {", f'  op_library_filename: "{op_library}"', "}"]
    return "\n".join(lines) + "\n"


@dataclass
class TritonRepository:
    """What :func:`write_triton_repo` wrote."""

    root: Path
    model_name: str
    backend: str
    config: Path
    model_file: Path
    readme: Path
    library: Path | None
    library_in_server: str | None
    max_batch_size: int
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plugin_in_plan: bool | None = None  # tensorrt: the plan carries the plugin (None: no build record says)
    preload: str | None = None  # tensorrt: the LD_PRELOAD tritonserver needs (None: nothing, or unknown)


def plugin_loading(info: dict | None, library_in_server: str | None) -> tuple[bool | None, str | None]:
    """Whether a plan carries the plugin library (what ``dcn-deploy build`` recorded: ``plugin_serialized``,
    by default True, ``plugins_to_serialize``; None without a record), and the ``LD_PRELOAD`` tritonserver
    then needs: none for a plan that carries it (TensorRT loads it from the plan; a preloaded copy would
    register the creators first and the plan's own copy would then fail to load, "creator exists
    already"), none when unknown (README.md gives both routes), else TensorRT's library and then the plugin
    (preloaded alone, the plugin loads before TensorRT and registers nothing)."""
    if not info or not isinstance(info.get("plugin_serialized"), bool):
        return None, None
    if info["plugin_serialized"] or not library_in_server:
        return info["plugin_serialized"], None
    try:
        major = str(tensorrt_major(info.get("tensorrt_version", "")))
    except TensorRTError:
        major = "<major>"
    return False, f"libnvinfer.so.{major} {library_in_server}"


def _engine_io(engine: Path, onnx_model: Path | None) -> tuple[list[TensorSpec], list[TensorSpec], dict | None, str]:
    """The engine's I/O: from ``onnx_model``, else the ONNX ``dcn-deploy build`` recorded beside the engine,
    else from TensorRT itself; with the build record (profiles) when there is one."""

    info = engine_info(engine)
    if onnx_model is None and info and info.get("onnx") and Path(info["onnx"]).is_file():
        onnx_model = Path(info["onnx"])
    if onnx_model is not None:
        if not Path(onnx_model).is_file():
            raise FileNotFoundError(f"no ONNX file at {onnx_model}")
        inputs, outputs = onnx_io(onnx_model)
        return inputs, outputs, info, f"{engine.name} (I/O of {Path(onnx_model).name})"
    try:

        backend = TensorRTBackend(engine, contexts=1, cuda_graphs=False)
        try:
            return list(backend.inputs), list(backend.outputs), info, engine.name
        finally:
            backend.close()
    except TensorRTError as error:
        raise TritonRepoError(
            f"reading the inputs and outputs of {engine} needs TensorRT and a GPU ({error}); pass --onnx MODEL.onnx, "
            f"the ONNX the engine was built from"
        ) from None


def _batch_limit(inputs, outputs, info: dict | None, requested: int, onnx_model: Path | None = None
                 ) -> tuple[int, list[str]]:
    """Triton's max_batch_size: 0 unless axis 0 of every output is the batch axis (the rule of
    :mod:`dcn_deploy.serving.batch_axis`: the graph's shapes, else a probe of ``onnx_model`` at the input shape
    its export recorded); capped by the engine's optimization profile when the build record has one."""
    notes = []
    if requested <= 0:
        return 0, notes
    axis = batch_axis_from_graph(inputs, outputs)
    if axis.verdict == PROBE:
        axis = _probe_onnx(onnx_model, inputs, axis)
    if not axis.stack:
        notes.append(f"max_batch_size 0 (no dynamic batching): {axis.reason}")
        return 0, notes
    for profile in (info or {}).get("profiles", []):
        low, high = profile["min"][0], profile["max"][0]
        if low > 1:
            raise TritonRepoError(
                f"the engine's profile for '{profile['name']}' starts at batch {low}, but Triton sends batches of 1 "
                f"to max_batch_size: rebuild it with --shapes {profile['name']}:1x... covering batch 1")
        if high < requested:
            notes.append(f"max_batch_size {high}: the engine's profile for '{profile['name']}' ends there")
            requested = high
    return requested, notes


def _probe_onnx(onnx_model: Path | None, inputs, axis: BatchAxis) -> BatchAxis:
    """:func:`probe_batch_axis` on random inputs of the shape ``dcn-deploy export`` recorded (batch 1)."""

    if onnx_model is None or not Path(onnx_model).is_file():
        return BatchAxis(ALONE, f"{axis.reason}, and no ONNX is at hand to probe it with")
    recorded = get_metadata(onnx.load(str(onnx_model), load_external_data=False)).get("input_shapes")
    if not recorded:
        return BatchAxis(ALONE, f"{axis.reason}, and the ONNX records no input shape to probe it with")
    shapes = {spec.name: [1, *shape[1:]] for spec, shape in zip(inputs, json.loads(recorded))}
    with load_runtime(onnx_model, "onnxruntime") as runtime:
        verdict = probe_batch_axis(runtime.run_checked, probe_inputs(inputs, shapes), axis.unproven)
    return verdict if verdict.stack else BatchAxis(ALONE, f"{axis.reason}; {verdict.reason}")


def write_triton_repo(model: str | os.PathLike, repo: str | os.PathLike, model_name: str | None = None,
                      backend: str | None = None, onnx_model: str | os.PathLike | None = None,
                      max_batch_size: int = 8, max_delay_ms: float = 1.0, instances: int = 1,
                      kind: str | None = None, library: str | os.PathLike | None = None,
                      mount: str | None = None, force: bool = False, threads: int | None = None
                      ) -> TritonRepository:
    """Write (or add to) a Triton model repository for ``model`` (.onnx or a TensorRT engine).

    Args:
        backend: onnxruntime | tensorrt (default: by the file's suffix) | python (an ONNX model run by this
            project's runtime in Triton's Python backend).
        model_name: the model's directory and name (default: the file's stem).
        onnx_model: for an engine, the ONNX it was built from (its I/O; needed where TensorRT is missing
            and the engine has no ``dcn-deploy build`` record naming it).
        max_batch_size, max_delay_ms: Triton's dynamic batching (0: none); capped by the engine's profile.
        instances, kind: the instance group (kind: cpu | gpu; default gpu for TensorRT, else cpu).
        library: the custom-op (ONNX) or plugin (TensorRT) library to copy (default: this checkout's build).
        mount: the repository's path as tritonserver sees it (default: its absolute path here).
        force: replace an existing model directory of that name.
        threads: python backend: ONNX Runtime intra-op threads per instance (default 1: ``instances``
            x ``threads`` cores in all; written to the config's ``parameters``); refused for the others.
    """

    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"no model file at {model}")
    if backend == "python":
        if model.suffix.lower() != ".onnx":
            raise TritonRepoError(f"--backend python runs an ONNX model, got '{model.name}'")
    elif backend is not None and backend not in TRITON_BACKENDS:
        raise TritonRepoError(f"backend must be one of {list(TRITON_BACKENDS)}, got '{backend}'")
    else:
        backend = backend_for(model, backend)
    name = model_name or model.stem
    if not name or "/" in name or name.startswith("."):
        raise TritonRepoError(f"'{name}' is not a usable model name (a directory name without '/')")
    kind = (kind or ("gpu" if backend == "tensorrt" else "cpu")).lower()
    if kind not in ("cpu", "gpu"):
        raise TritonRepoError(f"instance kind must be cpu or gpu, got '{kind}'")
    if backend == "tensorrt" and kind != "gpu":
        raise TritonRepoError("a TensorRT plan runs on the GPU only: instance kind must be gpu")
    if backend == "python" and kind != "cpu":
        raise TritonRepoError("the python backend's model runs ONNX Runtime on the CPU: instance kind must be cpu")
    if instances < 1:
        raise TritonRepoError(f"instances must be at least 1, got {instances}")
    if max_delay_ms < 0:
        raise TritonRepoError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
    if threads is not None and backend != "python":
        raise TritonRepoError(f"--threads sets the python backend's ONNX Runtime threads; Triton's {backend} "
                              f"backend has its own settings (got --threads {threads} for --backend {backend})")
    threads = 1 if threads is None else threads
    if threads < 1:
        raise TritonRepoError(f"threads must be at least 1, got {threads}")

    notes: list[str] = []
    if backend in ("onnxruntime", "python"):
        inputs, outputs = onnx_io(model)
        info, source, probe_model = None, model.name, model
        needs_library = uses_custom_op(model) or backend == "python"  # our runtime always registers it
        library_name = ORT_LIBRARY_NAME
        find_library = ort_custom_op_library
    else:
        inputs, outputs, info, source = _engine_io(model, Path(onnx_model) if onnx_model else None)
        probe_model = Path(onnx_model) if onnx_model else (Path(info["onnx"]) if info and info.get("onnx") else None)
        needs_library = True
        library_name = TRT_LIBRARY_NAME
        find_library = trt_plugin_library
    unsupported = [s.name for s in inputs + outputs if s.datatype in ("BYTES", "BF16")]
    if unsupported:
        raise TritonRepoError(f"tensors {unsupported} have types this project's models do not use (strings/bfloat16)")
    batch, batch_notes = _batch_limit(inputs, outputs, info, max_batch_size, probe_model)
    notes += batch_notes

    library_path = None
    if needs_library:
        if library is not None:
            if not Path(library).is_file():
                raise FileNotFoundError(f"no library at {library}")
            library_path = Path(library)
        else:
            try:
                library_path = Path(find_library())
            except FileNotFoundError as error:
                if backend != "tensorrt":
                    raise
                notes.append(f"no plugin library copied ({error}); the plan must carry it, or load it as README.md says")

    root = Path(repo)
    model_dir = root / name
    if model_dir.exists():
        if not force:
            raise TritonRepoError(f"{model_dir} exists: pass --force to replace it, or choose another --model-name")
        shutil.rmtree(model_dir)
    (model_dir / MODEL_VERSION).mkdir(parents=True)
    model_file = model_dir / MODEL_VERSION / (MODEL_FILE if backend != "tensorrt" else "model.plan")
    shutil.copyfile(model, model_file)
    if backend == "python":
        (model_dir / MODEL_VERSION / "model.py").write_text(PYTHON_MODEL)
    copied = None
    if library_path is not None:
        copied = model_dir / library_name
        shutil.copyfile(library_path, copied)
    server_root = (mount or str(root.resolve())).rstrip("/") or "/"
    library_in_server = f"{server_root}/{name}/{library_name}" if copied else None

    config = model_dir / "config.pbtxt"
    config.write_text(model_config_text(
        name, backend, inputs, outputs, batch, max_delay_ms, instances, kind,
        op_library=library_in_server if backend == "onnxruntime" else None, source=source,
        threads=threads if backend == "python" else None))
    in_plan, preload = plugin_loading(info, library_in_server) if backend == "tensorrt" else (None, None)
    result = TritonRepository(root, name, backend, config, model_file, root / "README.md", copied, library_in_server,
                              batch, list(inputs), list(outputs), notes, in_plan, preload)
    result.readme.write_text(_readme(result, server_root))
    return result


def _tensorrt_start(repo: TritonRepository, server_root: str) -> list[str]:
    """README lines for a plan: how TensorRT finds the plugin (:func:`plugin_loading`), routes that work."""
    library = repo.library_in_server or f"/path/to/{TRT_LIBRARY_NAME}"
    plain = ["```bash", f"tritonserver --model-repository={server_root}", "```"]
    load_it = [
        "```bash",
        "# the tensorrt backend dlopens the library after loading TensorRT (several libraries: separated by ';')",
        f"tritonserver --model-repository={server_root} --backend-config=tensorrt,plugins={library}",
        "# or preloaded, TensorRT's own library first (the major version the plan and plugin were built for)",
        f'LD_PRELOAD="libnvinfer.so.<major> {library}" tritonserver --model-repository={server_root}',
        "```",
    ]
    twice = ("Do not also pass `plugins=` or `LD_PRELOAD` the copied library: its creators would be registered "
             "before TensorRT loads the plan's own copy, and that load fails (\"creator exists already\").")
    if repo.plugin_in_plan:
        lines = ["The plan carries the `DcnDeformConv` plugin library (`dcn-deploy build` serialized it into the "
                 "plan, its default; its build record says so): TensorRT loads it from the plan, so nothing is "
                 "to be loaded. " + twice, ""] + plain
    elif repo.plugin_in_plan is False:
        lines = ["The plan does not carry the plugin library (built with `--no-serialize-plugin`, or by a "
                 "TensorRT that cannot serialize it; its build record says so): load the copied library into "
                 "tritonserver, in one of these ways (`dcn-deploy k8s` uses the second, with the major version "
                 "of the build record):", ""] + load_it
    else:
        lines = ["Nothing here records whether the plan carries the `DcnDeformConv` plugin library (no "
                 "`dcn-deploy build` record beside the engine). A plan built by `dcn-deploy build` carries it "
                 "by default: TensorRT loads it from the plan, start tritonserver with nothing else. " + twice,
                 ""] + plain + ["", "A plan built without it (`--no-serialize-plugin`, `trtexec` without "
                                "`--setPluginsToSerialize`) needs the copied library loaded, in one of these ways:",
                                ""] + load_it
    return lines + [
        "",
        "Loaded by `plugins=` or `LD_PRELOAD`, the library is only `dlopen`ed, after TensorRT; the library then "
        "registers its creators (`DcnDeformConv`, `DcnDeformConvInt8`, `DcnDeformConvInt8Requantized`, version 1, "
        "namespace `dcn_deploy`) with the registry of the TensorRT already in the process (found by its soname, "
        "never loaded by the library). `LD_PRELOAD` works that way only when TensorRT's library is preloaded "
        "too, as above: a plugin library preloaded alone loads before TensorRT and registers nothing. Tested "
        "with the real TensorRT-RTX registry (dlopen only, then `loadLibrary`), not yet in a real tritonserver "
        "with TensorRT (no GPU where this was written). The plan, the plugin (`libdcn_deploy_trt10.so` for "
        "TensorRT 10.x, `libdcn_deploy_trt11.so` for 11.x) and tritonserver must share one TensorRT major "
        "version; build the plan on the serving GPU with the TensorRT of the Triton release.",
    ]


_BACKEND_TITLES = {"onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT",
                   "python": "Python backend running dcn_deploy's ONNX Runtime runtime"}


def _readme(repo: TritonRepository, server_root: str) -> str:
    """How to start tritonserver with this repository (the last model written is the example)."""
    name = repo.model_name
    lines = [
        "# Triton Inference Server model repository",
        "",
        "Written by `dcn-deploy triton-repo`. Each directory is one model: `config.pbtxt`, the model in "
        f"`{MODEL_VERSION}/`, and this project's library beside them. Paths in the configs are as tritonserver "
        f"sees them: `{server_root}` is this repository (`--mount` changes it; a container that mounts it "
        "elsewhere needs the repository written again with that `--mount`).",
        "",
        f"Model `{name}` ({_BACKEND_TITLES[repo.backend]}), "
        f"max_batch_size {repo.max_batch_size}:",
        "",
        "| | name | datatype | dims (-1: any size) |",
        "|---|---|---|---|",
    ]
    for kind, specs in (("input", repo.inputs), ("output", repo.outputs)):
        for spec in specs:
            lines.append(f"| {kind} | `{spec.name}` | {spec.datatype} | {list(spec.shape)} |")
    lines += ["", "## Start tritonserver", ""]
    if repo.backend == "onnxruntime":
        lines += [
            "The onnxruntime backend registers the custom-op library named in `model_operations` "
            "(`op_library_filename`) with every session it creates; nothing else is needed:",
            "",
            "```bash",
            f"tritonserver --model-repository={server_root}",
            "# or in NVIDIA's container, the repository mounted where --mount said:",
            f"docker run --rm -p 8000:8000 -p 8001:8001 -v \"$PWD\":{server_root} nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\",
            f"  tritonserver --model-repository={server_root}",
            "```",
            "",
            "The library talks to ONNX Runtime through its C API: it must come from a build against ONNX Runtime "
            "headers no newer than the ONNX Runtime inside Triton, on a compatible glibc (build it inside the "
            "container with `./scripts/build_plugins.sh` when in doubt). Its kernels run on the CPU; with "
            "`KIND_GPU` instances ONNX Runtime runs the other nodes on the GPU and these on the CPU.",
        ]
    elif repo.backend == "python":
        lines += [
            "Triton's Python backend runs `model.py`, which imports `dcn_deploy.serving.triton_python`: the "
            "Python of the backend (its stub finds its packages through the first `python3` on `PATH`, a "
            "virtual environment's included) needs `dcn_deploy` (installed with `--no-deps`: no torch or onnx "
            "is needed), `onnxruntime` and `numpy`. The custom-op library is loaded from this model's "
            "directory, so the repository can move (no path in `config.pbtxt`):",
            "",
            "```bash",
            "python3.11 -m venv triton-env && triton-env/bin/pip install onnxruntime nvidia-pytriton",
            "triton-env/bin/pip install --no-deps /path/to/dcn-deploy",
            f"PATH=$PWD/triton-env/bin:$PATH tritonserver --model-repository={server_root}",
            "```",
            "",
            "The `tritonserver` of the `nvidia-pytriton` wheel (`pytriton/tritonserver/`) runs this on a CPU-only "
            "machine: give it `--backend-directory` with `python/` holding `libtriton_python.so`, "
            "`triton_python_backend_utils.py` and the `triton_python_backend_stub` of your Python version "
            "(`python_backend_stubs/3.11/`), and `LD_LIBRARY_PATH` with the wheel's `nvidia_pytriton.libs/`; "
            "the stub links the system's `libpython3.11.so.1.0`. `tests/test_tritonserver.py` does exactly this.",
        ]
    else:
        lines += _tensorrt_start(repo, server_root)
    lines += [
        "",
        "## Ask it",
        "",
        "Triton speaks the KServe v2 / Open Inference Protocol, as `dcn-deploy serve` does, so the same "
        "clients work against both:",
        "",
        "```bash",
        "curl localhost:8000/v2/health/ready",
        f"curl localhost:8000/v2/models/{name}",
        f"dcn-deploy bench --serve http://localhost:8000 --model {name} --input-shape <NxCxHxW>",
        "```",
    ]
    if repo.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in repo.notes]
    return "\n".join(lines) + "\n"
