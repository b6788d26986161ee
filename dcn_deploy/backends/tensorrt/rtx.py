"""TensorRT-RTX as a build target (``dcn-deploy build --target rtx``): the import, the unversioned
library name the wheel lacks, and the compute capabilities of an ahead-of-time (AOT) build.

TensorRT-RTX (NVIDIA's ``tensorrt-rtx-cu13-*`` wheels, Python module ``tensorrt_rtx_bindings``) has
TensorRT's builder API with these differences, as handled here:

=====================================  ===============================================================
network typing, precision              always strongly typed, no FP16/INT8 flags: as TensorRT 11
                                       (:func:`~dcn_deploy.backends.tensorrt.build.plan_precision`
                                       with :data:`RTX_INTERFACE_MAJOR`)
plugin library                         the TensorRT 11 interface layout: ``libdcn_deploy_trt11.so``
                                       (built against TensorRT 11.1 headers; loads and builds in
                                       TensorRT-RTX 1.7.1.116)
GPU at build time                      none needed: the build is ahead of time for a list of compute
                                       capabilities (``config.set_compute_capability``), default
                                       the library's own AOT set; ``CURRENT`` needs a GPU
standard ONNX ``DeformConv``           refused by the parser (no built-in importer, no plugin of
                                       that name): export the custom node
int32 bias ``DequantizeLinear``        refused by the parser; ``dcn-deploy quantize`` keeps biases
                                       float
=====================================  ===============================================================

The wheel ships ``libtensorrt_rtx.so.1`` only, yet that library ``dlopen()``s the unversioned
``libtensorrt_rtx.so`` when the ONNX parser adds a plugin layer, and the process aborts when it is
missing. :func:`import_tensorrt_rtx` loads the alias ``build/lib/rtx/libtensorrt_rtx.so`` (built by
CMake, ``plugins/tensorrt/rtx_soname/``) after the real library, so that name resolves to the loaded
instance: no symlink, no environment variable, nothing outside the repository.
"""
from __future__ import annotations

import ctypes
import re
from typing import Iterable, Sequence

from dcn_deploy.backends.native import native_library
from dcn_deploy.backends.tensorrt.common import TensorRTError, TensorRTUnavailable

RTX_MODULE = "tensorrt_rtx_bindings"
RTX_INTERFACE_MAJOR = 11  # TensorRT-RTX's IPluginV3 interfaces have the TensorRT 11 layout
ALIAS_NAME = "rtx/libtensorrt_rtx.so"  # under build/lib/ (or dcn_deploy/lib/)
ALIAS_ENV = "DCN_DEPLOY_RTX_SONAME_LIB"
RTX_INSTALL_HINT = (
    "TensorRT-RTX is needed for --target rtx: ./scripts/setup.sh installs it (the optional 'rtx' lines of "
    "requirements.txt: tensorrt-rtx-cu13-libs and tensorrt-rtx-cu13-bindings); no GPU is needed to build"
)
# sm_86, SM86, 86 and 8.6 all name ComputeCapability.SM86.
_CAPABILITY = re.compile(r"^(?:sm_?)?(\d+)(?:\.(\d))?$", re.IGNORECASE)


def parse_compute_capabilities(values: Iterable[str]) -> tuple[str, ...]:
    """``--compute-capability`` values (``SM86``, ``sm_86``, ``86``, ``8.6``; repeatable, or comma
    separated) as TensorRT-RTX ``ComputeCapability`` member names (``SM86``), in order, without repeats.
    Whether TensorRT-RTX knows each one is checked by :func:`set_compute_capabilities`."""
    names: list[str] = []
    for value in values:
        for text in (t.strip() for t in str(value).split(",")):
            if not text:
                continue
            match = _CAPABILITY.match(text)
            if not match:
                raise ValueError(f"compute capability '{text}' is not like SM86, sm_86, 86 or 8.6")
            digits = match.group(1) + (match.group(2) or "")
            name = f"SM{digits}"
            if name not in names:
                names.append(name)
    return tuple(names)


def set_compute_capabilities(trt, config, names: Sequence[str]) -> None:
    """Make ``config`` build for ``names`` (none: leave TensorRT-RTX's default AOT set), or raise
    ValueError naming the unknown ones and the ones this TensorRT-RTX knows."""
    if not names:
        return
    known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"TensorRT-RTX {trt.__version__} knows no compute capability {', '.join(unknown)}; "
                         f"it knows {', '.join(known)}")
    config.num_compute_capabilities = len(names)
    for index, name in enumerate(names):
        if not config.set_compute_capability(getattr(trt.ComputeCapability, name), index):
            raise TensorRTError(f"TensorRT-RTX refused compute capability {name}")


def rtx_soname_alias() -> str:
    """Path of the ``libtensorrt_rtx.so`` alias (``$DCN_DEPLOY_RTX_SONAME_LIB``, else the build's)."""
    return native_library(ALIAS_NAME, ALIAS_ENV, "./scripts/build_plugins.sh builds it (a C++ compiler is enough)")


def import_tensorrt_rtx():
    """``import tensorrt_rtx_bindings`` with the unversioned library name in place, or
    :class:`TensorRTUnavailable` saying what is missing."""
    try:
        import tensorrt_rtx_libs  # noqa: F401  optional heavy dependency: loads libtensorrt_rtx.so.1 (the wheel)
    except ImportError:
        tensorrt_rtx_libs = None  # a TensorRT-RTX tar/system install: it has libtensorrt_rtx.so itself
    except OSError as error:
        raise TensorRTUnavailable(f"TensorRT-RTX's libraries do not load ({error}). {RTX_INSTALL_HINT}") from None
    if tensorrt_rtx_libs is not None:
        try:
            alias = rtx_soname_alias()
        except FileNotFoundError as error:
            raise TensorRTUnavailable(
                f"TensorRT-RTX's wheel lacks libtensorrt_rtx.so, which it loads when the ONNX parser adds a "
                f"plugin layer (the process would abort), and this project's alias is missing: {error}"
            ) from None
        try:
            ctypes.CDLL(alias)
        except OSError as error:
            raise TensorRTUnavailable(f"could not load the libtensorrt_rtx.so alias {alias}: {error}") from None
    try:
        import tensorrt_rtx_bindings as trt  # optional heavy dependency: only --target rtx needs it
    except (ImportError, OSError) as error:
        raise TensorRTUnavailable(f"TensorRT-RTX is not available (import {RTX_MODULE}: {error}). "
                                  f"{RTX_INSTALL_HINT}") from None
    if not hasattr(trt, "Builder") or not getattr(trt, "__version__", ""):
        raise TensorRTUnavailable(f"the '{RTX_MODULE}' module at {getattr(trt, '__file__', '?')} is not "
                                  f"TensorRT-RTX. {RTX_INSTALL_HINT}")
    return trt
