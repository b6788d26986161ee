"""Bad arguments of the Ray Serve application builder (``serve run dcn_deploy.serving.ray_app:app key=value``, a
RayService's ``args``, ``DCN_DEPLOY_RAY_*`` variables): :class:`RaySettingsError` naming the argument, before
Ray deploys anything. No Ray needed: the settings module is the builder's whole argument handling."""
from __future__ import annotations

import re

import pytest

from dcn_deploy.serving.ray_config import RayServeSettings, RaySettingsError

pytestmark = pytest.mark.bad_input

# (id, args, environment, message)
CASES = [
    ("no_model", {}, {}, "needs 'model' \\(or \\$DCN_DEPLOY_RAY_MODEL\\)"),
    ("unknown_argument", {"model": "m.onnx", "replica": "2"}, {}, "unknown argument\\(s\\) \\['replica'\\]"),
    ("int_text", {"model": "m.onnx", "replicas": "two"}, {}, "replicas must be an integer, got 'two'"),
    ("int_fraction", {"model": "m.onnx", "replicas": "1.5"}, {}, "replicas must be an integer, got '1.5'"),
    ("bool_text", {"model": "m.onnx", "cuda_graphs": "maybe"}, {}, "cuda_graphs must be true or false, got 'maybe'"),
    ("number_bool", {"model": "m.onnx", "num_cpus": True}, {}, "num_cpus must be a number, got True"),
    ("env_int", {"model": "m.onnx"}, {"DCN_DEPLOY_RAY_WORKERS": "x"}, "DCN_DEPLOY_RAY_WORKERS must be an integer"),
    ("env_range", {"model": "m.onnx"}, {"DCN_DEPLOY_RAY_MAX_BATCH_SIZE": "0"}, "--max-batch-size must be at least 1, got 0"),
    ("max_below_min", {"model": "m.onnx", "min_replicas": 2, "max_replicas": 1}, {},
     "--max-replicas \\(1\\) must be at least --min-replicas \\(2\\)"),
    ("negative_cpus", {"model": "m.onnx", "num_cpus": -1}, {}, "--num-cpus must be >= 0, got -1.0"),
    ("device", {"model": "m.onnx", "device": "tpu"}, {}, "device must be cpu, cuda or auto, got 'tpu'"),
    ("timeout", {"model": "m.onnx", "request_timeout_s": 0}, {}, "--request-timeout-s must be a positive number"),
    ("required_none", {"model": "m.onnx", "workers": None}, {}, "workers needs a value"),
]


@pytest.mark.parametrize("bad", CASES, ids=lambda b: b[0])
def test_ray_application_rejects_bad_arguments(bad):
    _, args, environ, message = bad
    with pytest.raises(RaySettingsError) as raised:
        RayServeSettings.from_args(args, environ=environ)
    assert re.search(message, str(raised.value)), str(raised.value)


def test_arguments_from_text_and_environment():
    """What serve run passes (text) and the environment give the same settings as typed values."""
    settings = RayServeSettings.from_args({"model": "m.onnx", "max_replicas": "3", "cuda_graphs": "false"},
                                          environ={"DCN_DEPLOY_RAY_THREADS": "2", "DCN_DEPLOY_RAY_MAX_REPLICAS": "9"})
    assert (settings.max_replicas, settings.cuda_graphs, settings.threads) == (3, False, 2)
    assert RayServeSettings.from_args(settings.to_args(), environ={}) == settings
