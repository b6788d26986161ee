"""TensorRT common ground of build, load and run: the plugin library, the import, the errors, the logger
and the plugin registry. The package as a whole builds an engine from an exported ONNX with this project's
plugin, and runs it.

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

Absolute imports keep ``import tensorrt`` here the NVIDIA package, never this sub-package.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from rich.markup import escape

from dcn_deploy.backends.native import native_library
from dcn_deploy.onnx.schema import CUSTOM_OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION

LIBRARY_ENV = "DCN_DEPLOY_TRT_LIB"
# One plugin library per TensorRT interface layout (the major version of the headers it was compiled
# against): build/lib/libdcn_deploy_trt11.so for TensorRT 11.x and TensorRT-RTX, ...trt10.so for 10.x.
LIBRARY_NAME_FORMAT = "libdcn_deploy_trt{major}.so"
LIBRARY_LAYOUTS = (11, 10)  # what scripts/build_plugins.sh builds, newest first
# The text plugins/tensorrt/plugin_entry.cc stores in the library: "DCN_DEPLOY_TRT_HEADERS=11.1;".
_LAYOUT_MARKER = re.compile(rb"DCN_DEPLOY_TRT_HEADERS=(\d+)\.(\d+);")
MIN_TENSORRT_MAJOR = 10
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


class PluginLayoutError(TensorRTError):
    """The plugin library was compiled against the headers of another TensorRT major version."""


class ShapeSpecError(ValueError):
    """A ``--shapes`` spec is malformed or does not fit the ONNX's inputs."""


class PrecisionError(ValueError):
    """The requested precision cannot be built from this ONNX with this TensorRT."""


def plugin_library_name(major: int) -> str:
    """``libdcn_deploy_trt<major>.so``: the plugin library for TensorRT interface layout ``major``."""
    return LIBRARY_NAME_FORMAT.format(major=int(major))


def trt_plugin_library(major: int | None = None) -> str:
    """Path of the TensorRT plugin library: ``$DCN_DEPLOY_TRT_LIB``, else the repository's build of
    ``libdcn_deploy_trt<major>.so`` (``major`` None: the newest layout built)."""
    how = ("it needs TensorRT's headers (scripts/fetch_trt_headers.sh, or cmake "
           "-DTENSORRT_INCLUDE_DIR=/path/to/TensorRT/include) and the CUDA toolkit, then ./scripts/build_plugins.sh; "
           "or pass --plugin-lib")
    if major is not None:
        return native_library(plugin_library_name(major), LIBRARY_ENV, how)
    for layout in LIBRARY_LAYOUTS[:-1]:
        try:
            return native_library(plugin_library_name(layout), LIBRARY_ENV, how)
        except FileNotFoundError:
            continue
    return native_library(plugin_library_name(LIBRARY_LAYOUTS[-1]), LIBRARY_ENV, how)


def plugin_library_layout(path: str | os.PathLike) -> tuple[int, int] | None:
    """The TensorRT header version ``(major, minor)`` a plugin library was compiled against, read from the
    file (nothing is loaded); None for a library without the marker (not built by this project)."""
    match = _LAYOUT_MARKER.search(Path(path).read_bytes())
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_plugin_layout(path: str | os.PathLike, interface_major: int, runtime: str) -> None:
    """Refuse a plugin library compiled against another TensorRT major version than ``interface_major``
    (the layout of the IPluginV3 interfaces ``runtime``, e.g. "TensorRT 10.16.0", calls through)."""
    layout = plugin_library_layout(path)
    if layout is None or layout[0] == interface_major:
        return
    raise PluginLayoutError(
        f"the plugin library {path} was compiled against TensorRT {layout[0]}.{layout[1]} headers, but {runtime} "
        f"needs the TensorRT {interface_major}.x interface layout: use {plugin_library_name(interface_major)} "
        f"(./scripts/build_plugins.sh builds it into build/lib/), or pass --plugin-lib / set {LIBRARY_ENV} to a "
        f"library built against TensorRT {interface_major}.x headers"
    )


def import_tensorrt():
    """``import tensorrt``, or :class:`TensorRTUnavailable` saying what is missing and how to install it."""
    try:
        import tensorrt as trt  # optional heavy dependency: only the TensorRT paths need it
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


def make_logger(trt, console=None, verbose: bool = False):  # pragma: no cover - TensorRT only: a trt.ILogger
    """A TensorRT logger that prints warnings and errors through rich (everything with ``verbose``)
    and keeps the errors, so exceptions can carry TensorRT's own words."""

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


def tensorrt_messages(logger) -> str:
    return ("; TensorRT said: " + " | ".join(logger.errors[-8:])) if logger.errors else ""


def creator_registered(registry, logger) -> bool | None:  # pragma: no cover - TensorRT only: its plugin registry
    """Whether the registry holds our creator (None: this TensorRT cannot tell); a miss is not
    reported as a TensorRT error."""

    if not hasattr(registry, "get_creator"):
        return None
    errors, buffer = len(logger.errors), logger.buffer
    logger.buffer = []
    try:
        return registry.get_creator(CUSTOM_OP_TYPE, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None
    finally:
        del logger.errors[errors:]
        logger.buffer = buffer


def load_plugin_library(trt, registry, library: str, logger) -> None:  # pragma: no cover - TensorRT only
    """Load the plugin library into ``registry``, unless its creator is already registered (an earlier
    build or run in this process): TensorRT's ``load_library`` fails when any creator is."""
    if creator_registered(registry, logger):
        return
    handle = registry.load_library(library)
    if handle is None:
        raise TensorRTError(
            f"TensorRT could not load the plugin library {library} (built against another TensorRT version?)"
            f"{tensorrt_messages(logger)}"
        )
    if creator_registered(registry, logger) is False:
        raise TensorRTError(
            f"{library} loaded but registered no creator {CUSTOM_OP_TYPE} version {PLUGIN_VERSION} "
            f"namespace {PLUGIN_NAMESPACE}"
        )


def plugin_registry(trt, owner):  # pragma: no cover - TensorRT only: its plugin registry
    return owner.get_plugin_registry() if hasattr(owner, "get_plugin_registry") else trt.get_plugin_registry()


_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64,
                 "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def numpy_dtype_of(trt, dtype) -> np.dtype:  # pragma: no cover - TensorRT only: trt.DataType
    """The numpy dtype of a TensorRT ``DataType``."""
    for name, np_dtype in _NUMPY_DTYPES.items():
        if hasattr(trt.DataType, name) and dtype == getattr(trt.DataType, name):
            return np.dtype(np_dtype)
    raise TensorRTError(f"engine I/O type {dtype} has no numpy equivalent")
