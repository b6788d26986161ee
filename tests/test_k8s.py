"""``dcn-deploy k8s``: the InferenceService and RayService manifests against the CRDs' own OpenAPI schemas.

The schemas (tests/data/k8s/, README there) are the ``openAPIV3Schema`` of KServe's InferenceService CRD and
KubeRay's RayService CRD. They are checked strictly: the API server silently prunes a field a schema does not
know, so here every object with declared properties refuses any other (a misspelt field fails the test
instead of vanishing on the cluster).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from dcn_deploy.cli import app
from dcn_deploy.serving.k8s import MOUNT, PodResources, write_manifests
from dcn_deploy.serving.ray_config import APP_NAME, IMPORT_PATH, RayServeSettings

SCHEMAS = Path(__file__).parent / "data" / "k8s"


def strict(schema):
    """The schema with ``additionalProperties: false`` wherever properties are declared and nothing else is allowed."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if ("properties" in result and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")):
        result["additionalProperties"] = False
    return result


def validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads(gzip.decompress((SCHEMAS / f"{name}.schema.json.gz").read_bytes()))
    return jsonschema.Draft7Validator(strict(schema))


def problems(validate: jsonschema.Draft7Validator, document: dict) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validate.iter_errors(document)]


@pytest.fixture(scope="module")
def manifests(serving_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("k8s")
    result = CliRunner().invoke(app, ["k8s", str(serving_onnx), "-o", str(out), "--storage-uri", "s3://models/dcn",
                                      "--namespace", "vision", "--min-replicas", "1", "--max-replicas", "4",
                                      "--threads", "2", "--cpus", "2", "--memory", "3Gi", "--model-pvc", "dcn-models"])
    assert result.exit_code == 0, result.output
    names = ("inferenceservice", "rayservice")
    return out, {name: yaml.safe_load((out / f"{name}.yaml").read_text()) for name in names}


def test_inference_service_fits_the_crd_and_points_at_the_triton_repository(manifests):
    out, documents = manifests
    service = documents["inferenceservice"]
    assert problems(validator("inferenceservice.v1beta1"), service) == []
    assert (service["apiVersion"], service["kind"], service["metadata"]) == (
        "serving.kserve.io/v1beta1", "InferenceService", {"name": "demo", "namespace": "vision"})
    predictor = service["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"] == "s3://models/dcn" and model["protocolVersion"] == "v2"
    assert model["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}
    # the repository to upload: its config names the custom-op library where KServe will put it
    config = text_format.Parse((out / "triton-repo" / "demo" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.name == "demo" and config.backend == "onnxruntime"
    assert config.model_operations.op_library_filename == [f"{MOUNT}/demo/libdcn_deploy_ort.so"]
    assert (out / "triton-repo" / "demo" / "libdcn_deploy_ort.so").is_file()
    assert (out / "triton-repo" / "demo" / "1" / "model.onnx").is_file()


def test_ray_service_fits_the_crd_and_its_serve_config_builds_the_application(manifests):
    _, documents = manifests
    service = documents["rayservice"]
    assert problems(validator("rayservice.v1"), service) == []
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0" and cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}  # replicas go to the workers
    workers = cluster["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 4)
    for template in (cluster["headGroupSpec"]["template"], workers["template"]):
        assert template["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "dcn-models"
        assert template["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == MOUNT
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    [application] = config["applications"]
    assert (application["name"], application["import_path"]) == (APP_NAME, IMPORT_PATH)
    assert application["route_prefix"] == "/"
    # the args are the application builder's own: they parse, and size one replica per worker pod
    settings = RayServeSettings.from_args(application["args"], environ={})
    assert settings.model == f"{MOUNT}/demo.onnx" and settings.threads == 2
    assert (settings.min_replicas, settings.max_replicas, settings.num_cpus) == (1, 4, 2.0)
    assert settings.deployment_options()["autoscaling_config"]["max_replicas"] == 4


@pytest.mark.parametrize("recorded, preload", [
    ({"plugin_serialized": True}, None),  # dcn-deploy build's default: TensorRT loads the plugin from the plan
    ({"plugin_serialized": False}, f"libnvinfer.so.10 {MOUNT}/demo/libdcn_deploy_trt.so"),  # TensorRT first
    ({}, None),  # the record does not say: nothing preloaded (the repository's README gives both routes)
])
def test_tensorrt_inference_service_preloads_only_for_a_plan_without_its_plugin(serving_onnx, tmp_path, recorded,
                                                                                 preload):
    """Preloading the plugin library for a plan that carries it would register its creators twice (the plan's
    copy then fails to load); preloaded alone, before TensorRT, it would register nothing."""
    engine = tmp_path / "demo.engine"
    engine.write_bytes(b"a serialized plan")
    (tmp_path / "demo.engine.json").write_text(json.dumps({"onnx": str(serving_onnx), "profiles": [],
                                                            "tensorrt_version": "10.13.0.35", **recorded}))
    settings = RayServeSettings.from_args({"model": str(engine)}, environ={})
    manifests = write_manifests(engine, tmp_path / "k8s", settings, "s3://models/dcn", resources=PodResources(gpus=1))
    service = yaml.safe_load(manifests.inference_service.read_text())
    assert problems(validator("inferenceservice.v1beta1"), service) == []
    model = service["spec"]["predictor"]["model"]
    assert model.get("env") == ([{"name": "LD_PRELOAD", "value": preload}] if preload else None)
    assert manifests.repository.preload == preload
    assert (tmp_path / "k8s" / "triton-repo" / "demo" / "libdcn_deploy_trt.so").is_file()


@pytest.mark.parametrize("name, path, value, words", [
    ("inferenceservice.v1beta1", ["spec", "predictor", "model", "storageURI"], "s3://x", "'storageURI' was unexpected"),
    ("inferenceservice.v1beta1", ["spec", "predictor", "minReplicas"], "one", "'one' is not of type 'integer'"),
    ("rayservice.v1", ["spec", "rayClusterConfig", "headGroupSpec"], None, "'headGroupSpec' is a required property"),
    ("rayservice.v1", ["spec", "serveConfigV2"], {"applications": []}, "is not of type 'string'"),
])
def test_the_schema_check_catches_a_wrong_manifest(manifests, name, path, value, words):
    """The check can fail: a misspelt field, a wrong type, a missing required object."""
    document = json.loads(json.dumps(manifests[1][name.split(".")[0]]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    found = problems(validator(name), document)
    assert any(words in problem for problem in found), found
