"""Loading and saving weight files without executing code from them."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dcn_deploy.convert.mxnet import read_params

_WRAPPERS = ("state_dict", "model", "module", "params")


def _numpy_safe_globals() -> list:
    """What numpy values in a checkpoint (mmdetection's ``meta``: ``np.int64`` epochs, arrays) unpickle
    through: scalars, dtypes and arrays, under numpy 2's and numpy 1's module names. Nothing else is
    allowed: an object array's items still go through the restricted unpickler."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list = [np.dtype, np.ndarray, multiarray.scalar, multiarray._reconstruct,
                     (multiarray.scalar, "numpy.core.multiarray.scalar"),
                     (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    allowed += [getattr(np.dtypes, name) for name in getattr(np.dtypes, "__all__", ())]
    return allowed


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Name -> tensor from ``.safetensors``, ``.pt``/``.pth``/``.ckpt`` (``weights_only=True``:
    no pickle code runs), MXNet ``.params`` or numpy ``.npz`` (Paddle weights, no pickle).
    A checkpoint that wraps its weights in ``state_dict``/``model`` is unwrapped; numpy scalars and arrays
    beside the weights (mmdetection's ``meta``) are allowed, nothing else that would run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path}: not a valid safetensors file (truncated or corrupt?): {error}") from None
    if suffix == ".params":

        return {k: torch.from_numpy(v) for k, v in read_params(path).items()}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {k: _npz_tensor(path, k, arrays) for k in arrays.files}
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a valid .npz file (truncated or corrupt?): {error}") from None
    if suffix in (".pt", ".pth", ".ckpt", ".bin"):
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # the unpickler refuses anything but tensors, numpy values and containers
            raise ValueError(f"{path}: not loadable as plain weights (weights_only=True, nothing in it was run): "
                             f"{_unpickler_reason(error)}") from None
        for wrapper in _WRAPPERS:
            if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            raise ValueError(f"{path}: holds no tensors")
        return tensors
    raise ValueError(f"{path}: unknown weight file type '{suffix}' (use .safetensors, .pt/.pth, .params or .npz)")


def _npz_tensor(path: Path, key: str, arrays) -> torch.Tensor:
    try:
        array = arrays[key]
    except ValueError as error:  # an object array: it would need pickle
        raise ValueError(f"{path}: array '{key}' is not numeric ({error}); only numeric arrays are loaded") from None
    return torch.from_numpy(array)


def _unpickler_reason(error: Exception) -> str:
    """What torch's weights_only unpickler refused (e.g. "Trying to load unsupported GLOBAL posix.system"),
    without its boilerplate, which advises loading with weights_only=False (this project never does)."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = [line for line in lines if not line.startswith(boilerplate)]
    return " ".join(reason or lines[:1]) or type(error).__name__


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Save to ``.safetensors`` or ``.pt`` by the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":

        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
    elif path.suffix.lower() in (".pt", ".pth"):
        torch.save({k: v.detach() for k, v in state.items()}, path)
    else:
        raise ValueError(f"{path}: write .safetensors or .pt")
