"""TensorRT: build an engine from an exported ONNX with this project's plugin, and run it.

Everything before TensorRT is plain Python, read from the ONNX with ``onnx``, and tested
without TensorRT: the plugin library's path, the shape profiles (``--shapes``), and the
precision decision (:func:`plan_precision`). The TensorRT calls use the 10.x/11.x Python
API only: tensor-name I/O (``num_io_tensors``, ``get_tensor_name``, ``set_tensor_address``,
``execute_async_v3``), ``IPluginRegistry.load_library``, strongly typed networks.

TensorRT 10 vs 11, as handled here:

=================================  =============================  =============================
                                   TensorRT 10.x                  TensorRT 11.x
=================================  =============================  =============================
network typing                     strongly typed on request      always strongly typed
                                   (``STRONGLY_TYPED`` flag)      (the flag is deprecated,
                                                                  ignored: not passed)
fp16 engine from a float32 ONNX    ``BuilderFlag.FP16`` (weakly   impossible: export a float16
                                   typed network)                 ONNX (``--precision fp16``)
fp16 engine from a float16 ONNX    strongly typed                 strongly typed
TF32                               cleared unless ``tf32=True``   cleared unless ``tf32=True``
=================================  =============================  =============================

The module is not named ``tensorrt`` on purpose: it would shadow the ``tensorrt`` package.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from .native import native_library

__all__ = [
    "LIBRARY_ENV", "PRECISIONS", "BuildResult", "EngineBuildError", "InputInfo", "LoadedEngine", "PrecisionError",
    "PrecisionPlan", "ShapeRange", "ShapeSpecError", "TensorRTError", "TensorRTRunner",
    "TensorRTUnavailable", "build_engine", "device_buffers", "engine_info", "engine_precision", "graph_precision",
    "import_tensorrt", "load_engine", "numpy_dtype_of", "onnx_inputs", "onnx_precision", "parse_shape_specs", "plan_precision",
    "resolve_profiles", "trt_plugin_library", "uses_custom_op",
]

LIBRARY_ENV = "DCN_DEPLOY_TRT_LIB"
LIBRARY_NAME = "libdcn_deploy_trt.so"
MIN_TENSORRT_MAJOR = 10
PRECISIONS = ("fp32", "fp16")
SIDECAR_SUFFIX = ".json"  # model.engine -> model.engine.json: how the engine was built

INSTALL_HINT = (
    "TensorRT 10.x or 11.x is needed, on a machine with an NVIDIA GPU and driver: "
    "pip install tensorrt-cu12 (CUDA 12) or tensorrt-cu13 (CUDA 13), or NVIDIA's TensorRT container "
    "or tar package; build the plugin against the same TensorRT version"
)


class TensorRTError(RuntimeError):
    """TensorRT is missing, or refused to parse, build, load or run."""


class TensorRTUnavailable(TensorRTError):
    """``import tensorrt`` failed or found something that is not TensorRT 10+."""


class EngineBuildError(TensorRTError):
    """TensorRT's parser or builder refused the model; the message carries TensorRT's words."""


class ShapeSpecError(ValueError):
    """A ``--shapes`` spec is malformed or does not fit the ONNX's inputs."""


class PrecisionError(ValueError):
    """The requested precision cannot be built from this ONNX with this TensorRT."""


# --------------------------------------------------------------------------------------
# Plugin library and TensorRT itself
# --------------------------------------------------------------------------------------

def trt_plugin_library() -> str:
    """Path of the TensorRT plugin library: ``$DCN_DEPLOY_TRT_LIB``, else the repository's build."""
    return native_library(
        LIBRARY_NAME, LIBRARY_ENV,
        "it needs TensorRT's headers (scripts/fetch_trt_headers.sh, or cmake "
        "-DTENSORRT_INCLUDE_DIR=/path/to/TensorRT/include) and the CUDA toolkit, then ./scripts/build_plugins.sh; "
        "or pass --plugin-lib",
    )


def import_tensorrt():
    """``import tensorrt``, or :class:`TensorRTUnavailable` saying what is missing and how to install it."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as error:  # OSError: the wheel is there but libnvinfer is not loadable
        raise TensorRTUnavailable(f"TensorRT is not available (import tensorrt: {error}). {INSTALL_HINT}") from None
    version = getattr(trt, "__version__", "")
    if not hasattr(trt, "Builder") or not version:
        raise TensorRTUnavailable(
            f"the 'tensorrt' module at {getattr(trt, '__file__', '?')} is not TensorRT (a PyPI stub whose "
            f"download failed?). {INSTALL_HINT}"
        )
    if tensorrt_major(version) < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {version} is too old: the plugin is an IPluginV3. {INSTALL_HINT}")
    return trt


def tensorrt_major(version: str) -> int:
    match = re.match(r"(\d+)", str(version))
    if not match:
        raise TensorRTUnavailable(f"cannot read TensorRT's version from '{version}'")
    return int(match.group(1))


# --------------------------------------------------------------------------------------
# The ONNX's inputs and precision (onnx only)
# --------------------------------------------------------------------------------------

def _load(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    return onnx.load(str(path), load_external_data=False)


@dataclass(frozen=True)
class InputInfo:
    """A graph input: ``dims`` holds an int per static axis, the symbol (str) or None per dynamic
    axis; ``dims`` is None when the ONNX records no shape at all."""

    name: str
    dims: tuple[int | str | None, ...] | None
    elem_type: int

    @property
    def dynamic(self) -> bool:
        return self.dims is None or any(not isinstance(d, int) for d in self.dims)

    def describe(self) -> str:
        if self.dims is None:
            return "unknown shape"
        return "x".join(str(d) if d is not None else "?" for d in self.dims)


def onnx_inputs(model) -> list[InputInfo]:
    """The graph's real inputs (initializers listed as inputs by old exporters left out)."""
    proto = _load(model)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = None
        if tensor.HasField("shape"):
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
            )
        inputs.append(InputInfo(value.name, dims, tensor.elem_type))
    return inputs


def uses_custom_op(model) -> bool:
    """Whether the graph has this project's custom node (and so needs the plugin)."""
    from .schema import CUSTOM_OP_TYPE

    proto = _load(model)
    graphs = [proto.graph] + [f for f in proto.functions]
    return any(node.op_type == CUSTOM_OP_TYPE for g in graphs for node in g.node)


def graph_precision(model) -> str:
    """``"fp16"`` when the graph holds any float16 tensor (input, output, initializer, value info,
    Cast/constant to float16), ``"fp32"`` when it holds float32 ones only, else ``"unknown"``."""
    import onnx

    proto = _load(model)
    types = set()
    graph = proto.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        types.add(value.type.tensor_type.elem_type)
    for init in graph.initializer:
        types.add(init.data_type)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to":
                types.add(attr.i)
            elif attr.type == onnx.AttributeProto.TENSOR:
                types.add(attr.t.data_type)
    if onnx.TensorProto.FLOAT16 in types:
        return "fp16"
    if onnx.TensorProto.FLOAT in types:
        return "fp32"
    return "unknown"


def onnx_precision(model) -> str:
    """The ONNX's precision: its ``dcn_deploy.precision`` metadata (``dcn-deploy export
    --precision``) when that says fp32/fp16, else what :func:`graph_precision` finds."""
    from .export import get_metadata

    proto = _load(model)
    recorded = get_metadata(proto).get("precision")
    if recorded in PRECISIONS:
        return recorded
    return graph_precision(proto)


# --------------------------------------------------------------------------------------
# Shape profiles
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes; ``name`` is None for a name-less spec."""

    name: str | None
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    source: str = "--shapes"

    def describe(self) -> str:
        shapes = {tuple(self.min), tuple(self.opt), tuple(self.max)}
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        if len(shapes) == 1:
            return fmt(self.opt)
        return f"{fmt(self.min)} / {fmt(self.opt)} / {fmt(self.max)}"


_SHAPE_FORMAT = "NAME:MIN/OPT/MAX with shapes like 1x3x224x224 (or one shape for min=opt=max; NAME: may be " \
                "left out when the model has one input)"


def _parse_dims(text: str, spec: str) -> tuple[int, ...]:
    parts = text.strip().lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ShapeSpecError(f"shape spec '{spec}': '{text}' is not a shape like 1x3x224x224") from None
    if not dims or min(dims) <= 0:
        raise ShapeSpecError(f"shape spec '{spec}': every size in '{text}' must be a positive integer")
    return dims


def parse_shape_specs(specs: Iterable[str]) -> list[ShapeRange]:
    """Parse ``--shapes`` values: ``name:1x3x224x224/4x3x224x224/8x3x224x224`` (min/opt/max), or one
    shape for min=opt=max; ``name:`` may be left out for a single-input model. A value may hold
    several specs separated by commas."""
    ranges = []
    for value in specs:
        for spec in (s.strip() for s in str(value).split(",")):
            if not spec:
                continue
            name, separator, shapes = spec.rpartition(":")  # names may contain ':' ("input:0"), shapes never do
            name = name.strip() or None
            if separator and name is None:
                raise ShapeSpecError(f"shape spec '{spec}': empty input name before ':'")
            parts = shapes.split("/")
            if len(parts) not in (1, 3):
                raise ShapeSpecError(f"shape spec '{spec}': give one shape or MIN/OPT/MAX, got {len(parts)} shapes; "
                                     f"expected {_SHAPE_FORMAT}")
            dims = [_parse_dims(p, spec) for p in parts]
            if len({len(d) for d in dims}) != 1:
                raise ShapeSpecError(f"shape spec '{spec}': min, opt and max have different ranks")
            low, opt, high = (dims * 3) if len(dims) == 1 else dims
            ranges.append(ShapeRange(name, low, opt, high))
    return ranges


def recorded_input_shapes(model) -> list[tuple[int, ...]] | None:
    """The example input shapes ``dcn-deploy export`` recorded (metadata ``dcn_deploy.input_shapes``)."""
    from .export import get_metadata

    recorded = get_metadata(_load(model)).get("input_shapes")
    if not recorded:
        return None
    try:
        return [tuple(int(d) for d in shape) for shape in json.loads(recorded)]
    except (ValueError, TypeError):
        return None


def _check_range(info: InputInfo, shape_range: ShapeRange) -> None:
    name = info.name
    rank = len(shape_range.opt)
    if info.dims is not None and len(info.dims) != rank:
        raise ShapeSpecError(
            f"input '{name}' has rank {len(info.dims)} ({info.describe()}), its shape spec "
            f"{shape_range.describe()} has rank {rank}"
        )
    for axis in range(rank):
        low, opt, high = shape_range.min[axis], shape_range.opt[axis], shape_range.max[axis]
        if not low <= opt <= high:
            raise ShapeSpecError(
                f"input '{name}' axis {axis}: min {low}, opt {opt}, max {high} are not min <= opt <= max "
                f"({shape_range.describe()})"
            )
        static = info.dims[axis] if info.dims is not None else None
        if isinstance(static, int) and {low, opt, high} != {static}:
            raise ShapeSpecError(
                f"input '{name}' axis {axis} is fixed at {static} in the ONNX ({info.describe()}), the shape spec "
                f"says {shape_range.describe()}"
            )


def resolve_profiles(model, specs: Iterable[str] | Sequence[ShapeRange] = (), use_recorded: bool = True
                     ) -> list[ShapeRange]:
    """One :class:`ShapeRange` per graph input, checked against the ONNX.

    Specs come from ``--shapes``; an input without one keeps its static shape, or, when it has
    dynamic axes, the example shape ``dcn-deploy export`` recorded (min=opt=max), else it is an error
    naming the input and its axes.
    """
    proto = _load(model)
    inputs = onnx_inputs(proto)
    by_name = {info.name: info for info in inputs}
    specs = list(specs)
    ranges = [s for s in specs if isinstance(s, ShapeRange)]
    ranges += parse_shape_specs([s for s in specs if not isinstance(s, ShapeRange)])
    chosen: dict[str, ShapeRange] = {}
    for shape_range in ranges:
        if shape_range.name is None:
            if len(inputs) != 1:
                raise ShapeSpecError(
                    f"shape spec {shape_range.describe()} names no input, but the model has {len(inputs)} inputs "
                    f"{[i.name for i in inputs]}: write NAME:{shape_range.describe().replace(' ', '')}"
                )
            shape_range = ShapeRange(inputs[0].name, shape_range.min, shape_range.opt, shape_range.max,
                                     shape_range.source)
        if shape_range.name not in by_name:
            raise ShapeSpecError(
                f"shape spec for '{shape_range.name}': the model has no input of that name; its inputs are "
                f"{[i.name for i in inputs]}"
            )
        if shape_range.name in chosen:
            raise ShapeSpecError(f"input '{shape_range.name}' has more than one shape spec")
        _check_range(by_name[shape_range.name], shape_range)
        chosen[shape_range.name] = shape_range
    recorded = recorded_input_shapes(proto) if use_recorded else None
    if recorded is not None and len(recorded) != len(inputs):
        recorded = None
    result = []
    for index, info in enumerate(inputs):
        if info.name in chosen:
            result.append(chosen[info.name])
            continue
        if not info.dynamic:
            result.append(ShapeRange(info.name, info.dims, info.dims, info.dims, "static in the ONNX"))
            continue
        if recorded is None:
            raise ShapeSpecError(
                f"input '{info.name}' has dynamic axes ({info.describe()}) and the ONNX records no example shape: "
                f"give --shapes {info.name}:MIN/OPT/MAX (each like 1x3x224x224, static axes as in the ONNX)"
            )
        shape = recorded[index]
        default = ShapeRange(info.name, shape, shape, shape, "the export's example shape")
        try:
            _check_range(info, default)
        except ShapeSpecError as error:
            raise ShapeSpecError(f"{error} (the recorded example shape); give --shapes for '{info.name}'") from None
        result.append(default)
    return result


# --------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrecisionPlan:
    """How to build: the engine's precision, whether the network is strongly typed, and the
    TensorRT flag names (``NetworkDefinitionCreationFlag`` / ``BuilderFlag`` members) to set and clear."""

    precision: str
    strongly_typed: bool
    network_flags: tuple[str, ...] = ()
    builder_flags: tuple[str, ...] = ()
    cleared_builder_flags: tuple[str, ...] = ()
    note: str = ""


def plan_precision(trt_major: int, requested: str | None, onnx_precision: str, tf32: bool = False) -> PrecisionPlan:
    """The precision decision, a pure function of TensorRT's major version, the requested precision
    (None: the ONNX's) and the ONNX's precision (:func:`onnx_precision`).

    - TensorRT >= 11: every network is strongly typed, the ONNX's types are the engine's: fp16 needs a
      float16 ONNX (``dcn-deploy export --precision fp16``).
    - TensorRT 10: a network whose precision is the ONNX's is built strongly typed (as 11 does);
      fp16 from a float32 ONNX is a weakly typed network with ``BuilderFlag.FP16``.
    - TF32 (on by default in TensorRT) is cleared unless ``tf32``.
    """
    if trt_major < MIN_TENSORRT_MAJOR:
        raise PrecisionError(f"TensorRT {trt_major}.x is not supported: need 10.x or 11.x")
    if onnx_precision not in PRECISIONS:
        raise PrecisionError(
            f"cannot tell the ONNX's precision (no dcn_deploy.precision metadata and no float32/float16 "
            f"tensors): got '{onnx_precision}'"
        )
    requested = requested or onnx_precision
    if requested not in PRECISIONS:
        raise PrecisionError(f"precision '{requested}' is not one of {list(PRECISIONS)}")
    tf32_flags = {"builder_flags": ("TF32",)} if tf32 else {"cleared_builder_flags": ("TF32",)}
    if requested == "fp32" and onnx_precision == "fp16":
        raise PrecisionError(
            "this ONNX is float16, so its engine would run in fp16: build it with --precision fp16, or export a "
            "float32 ONNX (dcn-deploy export --precision fp32) for an fp32 engine"
        )
    if requested == "fp16" and onnx_precision == "fp32":
        if trt_major >= 11:
            raise PrecisionError(
                f"TensorRT {trt_major} builds every network strongly typed, so the engine's precision is the "
                f"ONNX's, and this ONNX is float32: export a float16 ONNX with `dcn-deploy export --precision fp16` "
                f"and build that (TensorRT 11 has no FP16 builder flag)"
            )
        return PrecisionPlan(
            "fp16", strongly_typed=False, network_flags=(),
            builder_flags=("FP16",) + tf32_flags.get("builder_flags", ()),
            cleared_builder_flags=tf32_flags.get("cleared_builder_flags", ()),
            note="TensorRT 10, float32 ONNX: weakly typed network with BuilderFlag.FP16 (TensorRT picks fp16 "
                 "or fp32 per layer); a float16 ONNX gives the same engine on TensorRT 10 and 11",
        )
    if trt_major >= 11:
        return PrecisionPlan(requested, strongly_typed=True, network_flags=(),
                             note=f"TensorRT {trt_major}: strongly typed, the ONNX's types", **tf32_flags)
    return PrecisionPlan(requested, strongly_typed=True, network_flags=("STRONGLY_TYPED",),
                         note="TensorRT 10: strongly typed network (STRONGLY_TYPED), the ONNX's types", **tf32_flags)


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    engine: str
    onnx: str
    precision: str
    strongly_typed: bool
    tensorrt_version: str
    profiles: list[dict] = field(default_factory=list)
    plugin_library: str | None = None
    plugin_serialized: bool = False
    timing_cache: str | None = None
    tf32: bool = False
    seconds: float = 0.0
    size_bytes: int = 0

    def write_sidecar(self) -> Path:
        path = Path(self.engine + SIDECAR_SUFFIX)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def _make_logger(trt, console=None, verbose: bool = False):
    """A TensorRT logger that prints warnings and errors through rich (everything with ``verbose``)
    and keeps the errors, so exceptions can carry TensorRT's own words."""
    from rich.markup import escape

    severity = trt.ILogger.Severity
    errors_at = {severity.INTERNAL_ERROR, severity.ERROR}
    shown = errors_at | {severity.WARNING} | ({severity.INFO, severity.VERBOSE} if verbose else set())

    class RichLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.buffer: list[str] | None = None  # collect instead of printing while not None

        def log(self, level, msg):
            if level in errors_at:
                self.errors.append(msg)
            if level not in shown:
                return
            label = {severity.INTERNAL_ERROR: "[red]TensorRT internal error[/red]", severity.ERROR:
                     "[red]TensorRT error[/red]", severity.WARNING: "[yellow]TensorRT warning[/yellow]"}.get(
                level, "[dim]TensorRT[/dim]")
            if self.buffer is not None:
                self.buffer.append(msg)
            elif console is not None:
                console.print(f"{label}: {escape(msg)}", highlight=False)

    return RichLogger()


def _tensorrt_messages(logger) -> str:
    return ("; TensorRT said: " + " | ".join(logger.errors[-8:])) if logger.errors else ""


def _creator_registered(registry, logger) -> bool | None:
    """Whether the registry holds our creator (None: this TensorRT cannot tell); a miss is not
    reported as a TensorRT error."""
    from .schema import CUSTOM_OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION

    if not hasattr(registry, "get_creator"):
        return None
    errors, buffer = len(logger.errors), logger.buffer
    logger.buffer = []
    try:
        return registry.get_creator(CUSTOM_OP_TYPE, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    finally:
        del logger.errors[errors:]
        logger.buffer = buffer


def _load_plugin_library(trt, registry, library: str, logger) -> None:
    """Load the plugin library into ``registry``, unless its creator is already registered (an earlier
    build or run in this process): TensorRT's ``load_library`` fails when any creator is."""
    from .schema import CUSTOM_OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION

    if _creator_registered(registry, logger):
        return
    handle = registry.load_library(library)
    if handle is None:
        raise TensorRTError(
            f"TensorRT could not load the plugin library {library} (built against another TensorRT version?)"
            f"{_tensorrt_messages(logger)}"
        )
    if _creator_registered(registry, logger) is False:
        raise TensorRTError(
            f"{library} loaded but registered no creator {CUSTOM_OP_TYPE} version {PLUGIN_VERSION} "
            f"namespace {PLUGIN_NAMESPACE}"
        )


def _registry(trt, owner):
    return owner.get_plugin_registry() if hasattr(owner, "get_plugin_registry") else trt.get_plugin_registry()


def _parser_error(error) -> str:
    text = str(error)
    try:
        node, op = error.node_name(), error.node_operator()
        if node or op:
            text = f"node '{node}' ({op}): {error.desc()}"
    except AttributeError:
        pass
    return text


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    precision: str | None = None,
    shapes: Iterable[str] = (),
    plugin_lib: str | os.PathLike | None = None,
    timing_cache: str | os.PathLike | None = None,
    workspace: int | None = None,
    tf32: bool = False,
    serialize_plugin: bool = True,
    console=None,
    verbose: bool = False,
) -> BuildResult:
    """Build a TensorRT engine (plan) from an ONNX exported by ``dcn-deploy export``.

    Args:
        precision: "fp32" | "fp16" | None (the ONNX's); see :func:`plan_precision`.
        shapes: ``--shapes`` specs (:func:`parse_shape_specs`); inputs without one keep their static
            shape or the export's example shape.
        plugin_lib: the plugin library (default :func:`trt_plugin_library`); needed when the graph has
            the custom node, and serialized into the plan with ``serialize_plugin``.
        timing_cache: a file read when it exists and (re)written after the build.
        workspace: workspace memory pool limit in MiB.
        tf32: allow TF32 for float32 layers (cleared otherwise).

    Everything that needs no TensorRT (ONNX, shapes, plugin path) is checked before TensorRT is imported.
    Writes ``engine_path`` and ``engine_path + ".json"`` (how it was built).
    """
    if workspace is not None and workspace <= 0:
        raise ValueError(f"workspace must be a positive number of MiB, got {workspace}")
    onnx_path = Path(onnx_path)
    proto = _load(onnx_path)
    profiles = resolve_profiles(proto, shapes)
    graph = onnx_precision(proto)
    library = None
    if plugin_lib is not None:
        if not Path(plugin_lib).is_file():
            raise FileNotFoundError(f"no plugin library at {plugin_lib}")
        library = str(Path(plugin_lib).resolve())
    elif uses_custom_op(proto):
        library = trt_plugin_library()

    trt = import_tensorrt()
    plan = plan_precision(tensorrt_major(trt.__version__), precision, graph, tf32)
    logger = _make_logger(trt, console, verbose)
    start = time.perf_counter()
    builder = trt.Builder(logger)
    if library:
        _load_plugin_library(trt, _registry(trt, builder), library, logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        messages = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  " + "\n  ".join(messages or ["?"]))

    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_builder_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace) << 20)

    by_name = {p.name: p for p in profiles}
    dynamic = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            if tensor.name not in by_name:
                raise EngineBuildError(f"TensorRT's network input '{tensor.name}' is not an input of {onnx_path}")
            dynamic.append(by_name[tensor.name])
    if dynamic:
        profile = builder.create_optimization_profile()
        for p in dynamic:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"TensorRT refused the optimization profile {[asdict(p) for p in dynamic]}"
                                   f"{_tensorrt_messages(logger)}")

    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EngineBuildError(
                f"the timing cache {cache_path} does not fit this TensorRT/GPU: delete it or name another file"
                f"{_tensorrt_messages(logger)}"
            )

    serialized = False
    if library and serialize_plugin:
        if hasattr(config, "plugins_to_serialize"):
            config.plugins_to_serialize = [library]
            serialized = True
        elif console is not None:
            console.print("[yellow]this TensorRT cannot serialize plugin libraries into the plan; "
                          "the runtime must load the plugin itself[/yellow]")

    if console is not None:
        with console.status(f"TensorRT {trt.__version__}: building {plan.precision} engine from {onnx_path.name}"):
            plan_bytes = builder.build_serialized_network(network, config)
    else:
        plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path}{_tensorrt_messages(logger)}")

    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with open(engine_path, "wb") as out:
        out.write(plan_bytes)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_path, "wb") as out:
            out.write(config.get_timing_cache().serialize())
    result = BuildResult(
        engine=str(engine_path), onnx=str(onnx_path.resolve()), precision=plan.precision,
        strongly_typed=plan.strongly_typed, tensorrt_version=trt.__version__,
        profiles=[asdict(p) for p in profiles], plugin_library=library, plugin_serialized=serialized,
        timing_cache=str(cache_path) if cache_path else None, tf32=tf32,
        seconds=time.perf_counter() - start, size_bytes=engine_path.stat().st_size,
    )
    result.write_sidecar()
    return result


def engine_info(engine_path: str | os.PathLike) -> dict | None:
    """What :func:`build_engine` recorded next to the engine (``<engine>.json``), or None (e.g. trtexec)."""
    path = Path(str(engine_path) + SIDECAR_SUFFIX)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def engine_precision(engine_path: str | os.PathLike, onnx_model) -> str:
    """The engine's precision, for the parity tolerance: what ``dcn-deploy build`` recorded, else the
    ONNX's (an engine built elsewhere, e.g. by trtexec, from that ONNX)."""
    info = engine_info(engine_path)
    if info and info.get("precision") in PRECISIONS:
        return info["precision"]
    precision = onnx_precision(onnx_model)
    if precision not in PRECISIONS:
        raise PrecisionError(f"cannot tell the precision of {engine_path}: no {SIDECAR_SUFFIX} record and the ONNX "
                             f"has no float32/float16 tensors")
    return precision


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------

_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
                 "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def numpy_dtype_of(trt, dtype) -> np.dtype:
    """The numpy dtype of a TensorRT ``DataType``."""
    for name, np_dtype in _NUMPY_DTYPES.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return np.dtype(np_dtype)
    raise TensorRTError(f"engine I/O type {dtype} has no numpy equivalent")


# The CUDA memory API of the TensorRT runtime (dcn_deploy.runtime.TensorRTBackend), two ways:
# stream() -> .handle; device_buffer(shape, dtype) -> .ptr; pinned_buffer(shape, dtype) -> .array (numpy
# over page-locked memory, so copies are truly asynchronous); upload/download between the two on a
# stream; synchronize(stream); capture(stream, enqueue) -> a CUDA graph with .launch(stream).


class _TorchCudaBuffers:
    """PyTorch's CUDA allocator, streams and graphs (``torch.cuda.CUDAGraph``)."""

    name = "torch.cuda"

    def __init__(self):
        import torch

        self.torch = torch
        torch.cuda.init()

    def stream(self):
        stream = self.torch.cuda.Stream()
        stream.handle = stream.cuda_stream
        return stream

    def _tensor(self, shape, dtype, **where):
        torch = self.torch
        tensor = torch.empty(tuple(shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype, **where)
        tensor.ptr = tensor.data_ptr()
        return tensor

    def device_buffer(self, shape, dtype):
        return self._tensor(shape, dtype, device="cuda")

    def pinned_buffer(self, shape, dtype):
        tensor = self._tensor(shape, dtype, pin_memory=True)
        tensor.array = tensor.numpy()
        return tensor

    def upload(self, device, host, stream):
        with self.torch.cuda.stream(stream):
            device.copy_(host, non_blocking=True)

    def download(self, host, device, stream):
        with self.torch.cuda.stream(stream):
            host.copy_(device, non_blocking=True)

    def synchronize(self, stream):
        stream.synchronize()

    def capture(self, stream, enqueue):
        torch = self.torch
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads' contexts keep running (and allocating) during this capture
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            enqueue()

        class _Graph:
            def launch(self, on_stream):
                with torch.cuda.stream(on_stream):
                    graph.replay()

        return _Graph()


class _CudaPythonBuffers:
    """cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart``)."""

    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.cudart = cudart
        self._check(cudart.cudaFree(0))  # creates the context; fails clearly without a device

    def _check(self, result):
        error, rest = result[0], result[1:]
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise TensorRTError(f"CUDA runtime error: {error}")
        return rest[0] if len(rest) == 1 else rest

    def stream(self):
        cudart, check = self.cudart, self._check

        class _Stream:
            def __init__(self):
                self.raw = check(cudart.cudaStreamCreate())
                self.handle = int(self.raw)

            def __del__(self):
                cudart.cudaStreamDestroy(self.raw)

        return _Stream()

    def device_buffer(self, shape, dtype):
        cudart, check = self.cudart, self._check
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize, 1)

        class _Device:
            def __init__(self):
                self.ptr = int(check(cudart.cudaMalloc(nbytes)))
                self.nbytes = nbytes

            def __del__(self):
                cudart.cudaFree(self.ptr)

        return _Device()

    def pinned_buffer(self, shape, dtype):
        import ctypes

        cudart, check = self.cudart, self._check
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = max(count * np.dtype(dtype).itemsize, 1)

        class _Pinned:
            def __init__(self):
                self.ptr = int(check(cudart.cudaMallocHost(nbytes)))
                raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
                self.array = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

            def __del__(self):
                cudart.cudaFreeHost(self.ptr)

        return _Pinned()

    def upload(self, device, host, stream):
        self._check(self.cudart.cudaMemcpyAsync(device.ptr, host.ptr, host.array.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw))

    def download(self, host, device, stream):
        self._check(self.cudart.cudaMemcpyAsync(host.ptr, device.ptr, host.array.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw))

    def synchronize(self, stream):
        self._check(self.cudart.cudaStreamSynchronize(stream.raw))

    def capture(self, stream, enqueue):
        cudart, check = self.cudart, self._check
        check(cudart.cudaStreamBeginCapture(stream.raw, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue()
        finally:
            graph = check(cudart.cudaStreamEndCapture(stream.raw))
        executable = check(cudart.cudaGraphInstantiate(graph, 0))

        class _Graph:
            def launch(self, on_stream):
                check(cudart.cudaGraphLaunch(executable, on_stream.raw))

            def __del__(self):
                cudart.cudaGraphExecDestroy(executable)
                cudart.cudaGraphDestroy(graph)

        return _Graph()


def device_buffers():
    """The CUDA memory API of the TensorRT runtime: PyTorch's CUDA when ``torch.cuda.is_available()``,
    else cuda-python; an error naming both when neither is there."""
    import torch

    if torch.cuda.is_available():
        return _TorchCudaBuffers()
    try:
        return _CudaPythonBuffers()
    except ImportError:
        pass
    raise TensorRTError(
        "no way to allocate GPU memory: this PyTorch has no CUDA (torch.cuda.is_available() is False) and "
        "cuda-python is not installed; install a CUDA build of PyTorch or `pip install cuda-python`, on a "
        "machine with an NVIDIA GPU and driver"
    )


@dataclass
class LoadedEngine:
    """A deserialized engine and what keeps it alive (TensorRT's runtime and logger)."""

    trt: object
    logger: object
    runtime: object
    engine: object
    plugin_library: str | None


def load_engine(engine_path: str | os.PathLike, plugin_lib: str | os.PathLike | None = None, console=None,
                verbose: bool = False) -> LoadedEngine:
    """Deserialize a TensorRT engine with this project's plugin.

    The plugin: ``plugin_lib`` when given is loaded first. Otherwise the engine is deserialized as it
    is (a plan built with ``plugins_to_serialize`` carries the library), and only if that fails is
    :func:`trt_plugin_library` loaded and the engine deserialized again.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"no TensorRT engine at {engine_path}")
    if plugin_lib is not None and not Path(plugin_lib).is_file():
        raise FileNotFoundError(f"no plugin library at {plugin_lib}")
    trt = import_tensorrt()
    logger = _make_logger(trt, console, verbose)
    runtime = trt.Runtime(logger)
    plan = engine_path.read_bytes()
    plugin_library = None
    if plugin_lib is not None:
        plugin_library = str(Path(plugin_lib).resolve())
        _load_plugin_library(trt, _registry(trt, runtime), plugin_library, logger)
        engine = runtime.deserialize_cuda_engine(plan)
    else:
        logger.buffer = []  # a failure here may only mean the plan does not carry the plugin
        engine = runtime.deserialize_cuda_engine(plan)
        first_try, logger.buffer = logger.buffer, None
        if engine is None:
            try:
                plugin_library = trt_plugin_library()
            except FileNotFoundError as error:
                raise TensorRTError(
                    f"TensorRT could not deserialize {engine_path} on its own "
                    f"({' | '.join(first_try) or 'no reason given'}), and the plugin library to retry with is "
                    f"missing: {error}"
                ) from None
            _load_plugin_library(trt, _registry(trt, runtime), plugin_library, logger)
            engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise TensorRTError(
            f"TensorRT could not deserialize {engine_path} (built by another TensorRT version or for another "
            f"GPU?){_tensorrt_messages(logger)}"
        )
    return LoadedEngine(trt, logger, runtime, engine, plugin_library)


class TensorRTRunner:
    """Runs a serialized engine: ``runner(arrays) -> outputs`` (numpy in, numpy out), the
    ``run_backend`` of :func:`dcn_deploy.validate.validate_onnx`: one execution context of
    :class:`dcn_deploy.runtime.TensorRTBackend`, no CUDA graphs. The plugin is found as
    :func:`load_engine` says.
    """

    def __init__(self, engine_path: str | os.PathLike, plugin_lib: str | os.PathLike | None = None,
                 input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                 console=None, verbose: bool = False):
        from .runtime import TensorRTBackend

        self.backend = TensorRTBackend(engine_path, plugin_lib, contexts=1, cuda_graphs=False, console=console,
                                       verbose=verbose)
        self.engine = self.backend.engine
        self.plugin_library = self.backend.plugin_library
        self.backend_name = self.backend.backend
        self.input_names = self._order([s.name for s in self.backend.inputs], input_names, "inputs")
        self.output_names = self._order([s.name for s in self.backend.outputs], output_names, "outputs")

    @staticmethod
    def _order(found: list[str], wanted: Sequence[str] | None, kind: str) -> list[str]:
        if wanted is None:
            return found
        if sorted(wanted) != sorted(found):
            raise TensorRTError(
                f"the engine's {kind} are {found}, the ONNX's {list(wanted)}: not built from this ONNX?")
        return list(wanted)

    def profile(self, name: str) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) of input ``name`` in optimization profile 0."""
        return tuple(tuple(int(d) for d in dims) for dims in self.engine.get_tensor_profile_shape(name, 0))

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) != len(self.input_names):
            raise ValueError(
                f"the engine has {len(self.input_names)} inputs {self.input_names}, got {len(arrays)} arrays")
        inputs = {}
        for name, array in zip(self.input_names, arrays):
            inputs[name] = np.asarray(array).astype(self.backend.input_spec(name).dtype, copy=False)
        results = self.backend.run(inputs, self.output_names)
        return [results[name] for name in self.output_names]
