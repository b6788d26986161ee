"""Loading a serialized engine with the plugin library, and what ``dcn-deploy build`` recorded beside it
(the sidecar JSON: profiles, precision, the ONNX it came from)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dcn_deploy.backends.tensorrt.common import (
    SIDECAR_SUFFIX,
    PrecisionError,
    TensorRTError,
    load_plugin_library,
    make_logger,
    plugin_registry,
    tensorrt_messages,
    check_plugin_layout,
    import_tensorrt,
    tensorrt_major,
    trt_plugin_library,
)
from dcn_deploy.onnx.model_info import PRECISIONS, onnx_precision


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
    info = engine_info(engine_path)
    if info and info.get("target", "tensorrt") != "tensorrt":
        raise TensorRTError(
            f"{engine_path} was built for {info['target']} (TensorRT-RTX: {info.get('tensorrt_version', '?')}); "
            f"this runtime deserializes TensorRT engines only: run it with TensorRT-RTX's own runtime"
        )
    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    logger = make_logger(trt, console, verbose)
    runtime = trt.Runtime(logger)
    plan = engine_path.read_bytes()
    plugin_library = None
    if plugin_lib is not None:
        plugin_library = str(Path(plugin_lib).resolve())
        check_plugin_layout(plugin_library, major, f"TensorRT {trt.__version__}")
        load_plugin_library(trt, plugin_registry(trt, runtime), plugin_library, logger)
        engine = runtime.deserialize_cuda_engine(plan)
    else:
        logger.buffer = []  # a failure here may only mean the plan does not carry the plugin
        engine = runtime.deserialize_cuda_engine(plan)
        first_try, logger.buffer = logger.buffer, None
        if engine is None:
            try:
                plugin_library = trt_plugin_library(major)
            except FileNotFoundError as error:
                raise TensorRTError(
                    f"TensorRT could not deserialize {engine_path} on its own "
                    f"({' | '.join(first_try) or 'no reason given'}), and the plugin library to retry with is "
                    f"missing: {error}"
                ) from None
            check_plugin_layout(plugin_library, major, f"TensorRT {trt.__version__}")
            load_plugin_library(trt, plugin_registry(trt, runtime), plugin_library, logger)
            engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise TensorRTError(
            f"TensorRT could not deserialize {engine_path} (built by another TensorRT version or for another "
            f"GPU?){tensorrt_messages(logger)}"
        )
    return LoadedEngine(trt, logger, runtime, engine, plugin_library)
