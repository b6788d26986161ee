"""The reference of ``dcn-deploy validate --reference file.py:factory``: your own model, from any Python file."""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from dcn_deploy.convert.checkpoints import load_weights
from dcn_deploy.onnx.recipes import check_state_dict, load_python_file

_MODULE_NAME = "dcn_deploy_reference"


def load_reference(spec: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """``file.py:factory``: call ``factory()`` (any callable returning an ``nn.Module``) from that file, load
    ``weights`` (:func:`dcn_deploy.convert.checkpoints.load_weights`, strict: every key and shape must fit)
    and return the model in eval mode."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"--reference '{spec}' is not of the form file.py:factory")
    module = load_python_file(Path(path), _MODULE_NAME)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{path} defines no callable '{name}'")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}:{name}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = load_weights(weights)
        check_state_dict(model, state, f"{weights} does not fit {path}:{name}()")
        model.load_state_dict(state, strict=True)
    return model.eval()
