"""``dcn-deploy build``: an ONNX model to a serialized TensorRT (or TensorRT-RTX) engine with this
project's plugin: optimization profiles from ``--shapes`` (or the shape the export recorded) and
``--profile``, the precision plan, and for TensorRT-RTX the compute capabilities (:mod:`.rtx`)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from dcn_deploy.backends.tensorrt.common import (
    MIN_TENSORRT_MAJOR,
    SIDECAR_SUFFIX,
    EngineBuildError,
    PrecisionError,
    ShapeSpecError,
    load_plugin_library,
    make_logger,
    plugin_registry,
    tensorrt_messages,
    check_plugin_layout,
    import_tensorrt,
    tensorrt_major,
    trt_plugin_library,
)
from dcn_deploy.backends.tensorrt.rtx import (
    RTX_INTERFACE_MAJOR,
    import_tensorrt_rtx,
    parse_compute_capabilities,
    set_compute_capabilities,
)
from dcn_deploy.onnx.model_info import (
    PRECISIONS,
    InputInfo,
    load_model,
    onnx_inputs,
    onnx_precision,
    recorded_input_shapes,
    uses_custom_op,
)


# What dcn-deploy build can build for: TensorRT (10.x/11.x, on the GPU it runs on) or TensorRT-RTX
# (ahead of time for compute capabilities, no GPU needed).
TARGETS = ("tensorrt", "rtx")
DEFAULT_TARGET = "tensorrt"
TARGET_NAMES = {"tensorrt": "TensorRT", "rtx": "TensorRT-RTX"}


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
    proto = load_model(model)
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


@dataclass
class BuildResult:
    engine: str
    onnx: str
    precision: str
    strongly_typed: bool
    tensorrt_version: str
    profiles: list[dict] = field(default_factory=list)  # the first optimization profile, one entry per input
    more_profiles: list[list[dict]] = field(default_factory=list)  # --profile: profiles 1, 2, ...
    target: str = DEFAULT_TARGET
    compute_capabilities: list[str] | None = None  # rtx: what the plan was built for; [] = the library's default
    plugin_layers: list[dict] = field(default_factory=list)  # name, output shape (-1: dynamic) and type per layer
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


def _plugin_layers(trt, network) -> list[dict]:
    """The parsed network's plugin layers (our DCN nodes): name, output shape as the plugin's
    getOutputShapes gave it (-1 for a dynamic axis) and output type."""
    kinds = {getattr(trt.LayerType, n) for n in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN") if hasattr(trt.LayerType, n)}
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            out = layer.get_output(0)
            layers.append({"name": layer.name, "output_shape": [int(d) for d in out.shape],
                           "output_dtype": str(out.dtype).rsplit(".", 1)[-1]})
    return layers


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
    target: str = DEFAULT_TARGET,
    compute_capabilities: Iterable[str] = (),
    more_profiles: Sequence[Iterable[str]] = (),
) -> BuildResult:
    """Build a TensorRT or TensorRT-RTX engine (plan) from an ONNX exported by ``dcn-deploy export``.

    Args:
        precision: "fp32" | "fp16" | None (the ONNX's); see :func:`plan_precision`.
        shapes: ``--shapes`` specs (:func:`parse_shape_specs`) of the first optimization profile; inputs
            without one keep their static shape or the export's example shape.
        more_profiles: one more optimization profile per entry, each a list of specs as ``shapes``.
        plugin_lib: the plugin library (default :func:`trt_plugin_library` of the target's interface
            layout); needed when the graph has the custom node, and serialized into the plan with
            ``serialize_plugin``. A library built against another TensorRT major version is refused.
        timing_cache: a file read when it exists and (re)written after the build.
        workspace: workspace memory pool limit in MiB.
        tf32: allow TF32 for float32 layers (cleared otherwise).
        target: "tensorrt" (``import tensorrt``, builds for the GPU here) or "rtx" (TensorRT-RTX,
            ahead of time for ``compute_capabilities``, no GPU needed).
        compute_capabilities: rtx only: e.g. ``["SM86", "SM89"]`` (:func:`parse_compute_capabilities`);
            none: TensorRT-RTX's default AOT set.

    Everything that needs no TensorRT (ONNX, shapes, plugin path, capabilities) is checked before
    TensorRT is imported. Writes ``engine_path`` and ``engine_path + ".json"`` (how it was built).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got '{target}'")
    capabilities = parse_compute_capabilities(compute_capabilities)
    if capabilities and target != "rtx":
        raise ValueError("compute capabilities are for --target rtx (an ahead-of-time build); TensorRT builds "
                         "for the GPU it runs on")
    if workspace is not None and workspace <= 0:
        raise ValueError(f"workspace must be a positive number of MiB, got {workspace}")
    onnx_path = Path(onnx_path)
    proto = load_model(onnx_path)
    profiles = resolve_profiles(proto, shapes)
    extra_profiles = [resolve_profiles(proto, specs, use_recorded=False) if list(specs) else None
                      for specs in more_profiles]
    if any(p is None for p in extra_profiles):
        raise ShapeSpecError("an extra optimization profile (--profile) needs shape specs")
    graph = onnx_precision(proto)
    library = None
    if plugin_lib is not None:
        if not Path(plugin_lib).is_file():
            raise FileNotFoundError(f"no plugin library at {plugin_lib}")
        library = str(Path(plugin_lib).resolve())
    elif uses_custom_op(proto) and target == "rtx":
        library = trt_plugin_library(RTX_INTERFACE_MAJOR)

    if target == "rtx":
        trt = import_tensorrt_rtx()
        interface_major, runtime = RTX_INTERFACE_MAJOR, f"TensorRT-RTX {trt.__version__}"
    else:
        trt = import_tensorrt()
        interface_major, runtime = tensorrt_major(trt.__version__), f"TensorRT {trt.__version__}"
        if library is None and uses_custom_op(proto):
            library = trt_plugin_library(interface_major)
    if library:
        check_plugin_layout(library, interface_major, runtime)
    plan = plan_precision(interface_major, precision, graph, tf32)
    logger = make_logger(trt, console, verbose)
    start = time.perf_counter()
    builder = trt.Builder(logger)
    if library:
        load_plugin_library(trt, plugin_registry(trt, builder), library, logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        messages = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{TARGET_NAMES[target]}'s ONNX parser rejected {onnx_path}:\n  "
                               + "\n  ".join(messages or ["?"]) + tensorrt_messages(logger))

    plugin_layers = _plugin_layers(trt, network)
    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_builder_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))
    if workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace) << 20)
    if target == "rtx":
        set_compute_capabilities(trt, config, capabilities)

    dynamic_names = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(int(d) < 0 for d in tensor.shape):
            if tensor.name not in {p.name for p in profiles}:
                raise EngineBuildError(f"TensorRT's network input '{tensor.name}' is not an input of {onnx_path}")
            dynamic_names.append(tensor.name)
    if extra_profiles and not dynamic_names:
        raise ShapeSpecError(f"{onnx_path.name} has no dynamic input: more than one optimization profile "
                             f"(--profile) means nothing")
    for ranges in [profiles, *extra_profiles] if dynamic_names else []:
        by_name = {p.name: p for p in ranges}
        profile = builder.create_optimization_profile()
        for name in dynamic_names:
            p = by_name[name]
            profile.set_shape(p.name, p.min, p.opt, p.max)
        if config.add_optimization_profile(profile) < 0:
            raise EngineBuildError(f"TensorRT refused the optimization profile "
                                   f"{[asdict(by_name[n]) for n in dynamic_names]}{tensorrt_messages(logger)}")

    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EngineBuildError(
                f"the timing cache {cache_path} does not fit this TensorRT/GPU: delete it or name another file"
                f"{tensorrt_messages(logger)}"
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
        with console.status(f"{runtime}: building {plan.precision} engine from {onnx_path.name}"):
            plan_bytes = builder.build_serialized_network(network, config)
    else:
        plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise EngineBuildError(f"{TARGET_NAMES[target]} could not build an engine from {onnx_path}"
                               f"{tensorrt_messages(logger)}")

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
        profiles=[asdict(p) for p in profiles], more_profiles=[[asdict(p) for p in r] for r in extra_profiles],
        target=target, compute_capabilities=list(capabilities) if target == "rtx" else None,
        plugin_layers=plugin_layers,
        plugin_library=library, plugin_serialized=serialized,
        timing_cache=str(cache_path) if cache_path else None, tf32=tf32,
        seconds=time.perf_counter() - start, size_bytes=engine_path.stat().st_size,
    )
    result.write_sidecar()
    return result
