"""Where this project's native libraries are found (ONNX Runtime op, CUDA kernels, TensorRT plugin)."""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # dcn_deploy/
_REPO_ROOT = _PACKAGE_DIR.parent


def native_library(name: str, env: str, how_to_build: str) -> str:
    """Path of ``name``: ``$env`` when set, else ``build/lib/`` of this checkout, else ``dcn_deploy/lib/``.

    Raises FileNotFoundError naming the variable, or saying how to build the library.
    """
    override = os.environ.get(env)
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"{env}={override} does not name a file")
        return str(Path(override).resolve())
    for candidate in (_REPO_ROOT / "build" / "lib" / name, _PACKAGE_DIR / "lib" / name):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{name} is not built: {how_to_build} (or set {env} to its path)")
