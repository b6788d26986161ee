"""dcn-deploy triton-repo: the generated config.pbtxt parsed into Triton's own ModelConfig message
(tritonclient.grpc.model_config_pb2; text_format rejects unknown fields and bad enum values)."""
from __future__ import annotations

import json

import pytest
import tritonclient.grpc.model_config_pb2 as model_config
from google.protobuf import text_format
from serving import INPUT_SHAPE, export_demo
from typer.testing import CliRunner

from dcn_deploy.backends.onnxruntime import ort_custom_op_library
from dcn_deploy.cli import app
from dcn_deploy.serving.triton_repo import TritonRepoError, write_triton_repo

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def parse(path) -> model_config.ModelConfig:
    return text_format.Parse(path.read_text(), model_config.ModelConfig())


def tensors(entries):
    return [(t.name, model_config.DataType.Name(t.data_type), list(t.dims)) for t in entries]


def test_onnx_repository_through_the_cli(serving_onnx, tmp_path):
    repo = tmp_path / "repo"
    result = invoke("triton-repo", serving_onnx, "-o", repo, "--max-batch-size", "16", "--max-delay-ms", "0.5",
                    "--instances", "2")
    assert result.exit_code == 0, result.output
    config = parse(repo / "demo" / "config.pbtxt")
    assert (config.name, config.platform, config.backend) == ("demo", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 16
    assert tensors(config.input) == [("x", "TYPE_FP32", [3, -1, -1])]  # axis 0 is Triton's batch axis
    assert tensors(config.output) == [("logits", "TYPE_FP32", [5, -1, -1])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == model_config.ModelInstanceGroup.KIND_CPU
    # an absolute path: the onnxruntime backend dlopens op_library_filename as given
    library = repo.resolve() / "demo" / "libdcn_deploy_ort.so"
    assert list(config.model_operations.op_library_filename) == [str(library)]
    assert library.read_bytes() == open(ort_custom_op_library(), "rb").read()
    assert (repo / "demo" / "1" / "model.onnx").read_bytes() == serving_onnx.read_bytes()
    readme = (repo / "README.md").read_text()
    assert f"tritonserver --model-repository={repo.resolve()}" in readme and "op_library_filename" in readme


def test_generated_onnx_model_loads_with_the_copied_library(serving_onnx, tmp_path):
    """What Triton's onnxruntime backend does with the repository: a session of 1/model.onnx with
    op_library_filename registered."""
    import numpy as np
    import onnxruntime as ort

    repo = write_triton_repo(serving_onnx, tmp_path / "repo")
    options = ort.SessionOptions()
    (library,) = parse(repo.config).model_operations.op_library_filename
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(str(repo.model_file), options, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": np.zeros(INPUT_SHAPE, np.float32)})
    assert output.shape == (1, 5, 8, 10)


def test_mount_static_model_and_gpu_kind(serving_onnx, tmp_path):
    static = export_demo(tmp_path / "static.onnx", dynamic=False)
    repo = write_triton_repo(static, tmp_path / "repo", model_name="dcn", mount="/models", kind="gpu")
    config = parse(repo.config)
    assert config.name == "dcn" and config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert tensors(config.input) == [("x", "TYPE_FP32", list(INPUT_SHAPE))]  # whole shapes: no batch axis
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.KIND_GPU
    assert list(config.model_operations.op_library_filename) == ["/models/dcn/libdcn_deploy_ort.so"]
    assert any("max_batch_size 0" in note for note in repo.notes)
    with pytest.raises(TritonRepoError, match="exists: pass --force"):
        write_triton_repo(static, tmp_path / "repo", model_name="dcn")
    write_triton_repo(serving_onnx, tmp_path / "repo", model_name="dcn", force=True)
    assert parse(repo.config).max_batch_size == 8


def fake_engine(tmp_path, onnx_path=None, profile=None, **recorded):
    """A plan file and, given any of the arguments, the record ``dcn-deploy build`` writes beside it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = tmp_path / "demo.engine"
    engine.write_bytes(b"a serialized plan")
    if onnx_path is not None or profile is not None or recorded:
        record = {"onnx": str(onnx_path) if onnx_path else "", "profiles": [profile] if profile else [], **recorded}
        (tmp_path / "demo.engine.json").write_text(json.dumps(record))
    return engine


def test_tensorrt_plugin_loading_follows_the_build_record(serving_onnx, tmp_path):
    """A plan that carries the plugin (dcn-deploy build's default) needs nothing loaded, and loading the library
    too would register its creators twice; one built without it needs TensorRT's library, then the plugin."""
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"plugin bytes")
    carried = write_triton_repo(fake_engine(tmp_path / "a", serving_onnx, plugin_serialized=True,
                                            tensorrt_version="10.13.0.35"),
                                tmp_path / "a" / "repo", library=plugin, mount="/models")
    assert (carried.plugin_in_plan, carried.preload) == (True, None)
    readme = carried.readme.read_text()
    assert "TensorRT loads it from the plan, so nothing is to be loaded" in readme
    assert "plugins=/" not in readme and "LD_PRELOAD=" not in readme and "creator exists already" in readme

    bare = write_triton_repo(fake_engine(tmp_path / "b", serving_onnx, plugin_serialized=False,
                                         tensorrt_version="10.13.0.35"),
                             tmp_path / "b" / "repo", library=plugin, mount="/models")
    assert (bare.plugin_in_plan, bare.preload) == (False, "libnvinfer.so.10 /models/demo/libdcn_deploy_trt.so")
    readme = bare.readme.read_text()
    assert "The plan does not carry the plugin library" in readme
    assert "--backend-config=tensorrt,plugins=/models/demo/libdcn_deploy_trt.so" in readme

    unknown = write_triton_repo(fake_engine(tmp_path / "c", serving_onnx), tmp_path / "c" / "repo", library=plugin)
    assert (unknown.plugin_in_plan, unknown.preload) == (None, None)
    readme = unknown.readme.read_text()  # both routes: nothing for a plan that carries it, else load the library
    assert "start tritonserver with nothing else" in readme and "A plan built without it" in readme


def test_tensorrt_repository_with_the_onnx_given(serving_onnx, tmp_path):
    engine = fake_engine(tmp_path)
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"plugin bytes")
    result = invoke("triton-repo", engine, "-o", tmp_path / "repo", "--onnx", serving_onnx, "--library", plugin,
                    "--mount", "/models")
    assert result.exit_code == 0, result.output
    config = parse(tmp_path / "repo" / "demo" / "config.pbtxt")
    assert (config.platform, config.backend, config.max_batch_size) == ("tensorrt_plan", "tensorrt", 8)
    assert tensors(config.input) == [("x", "TYPE_FP32", [3, -1, -1])]
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.KIND_GPU
    assert not config.HasField("model_operations")  # TensorRT loads plugins its own way
    assert (tmp_path / "repo" / "demo" / "1" / "model.plan").read_bytes() == b"a serialized plan"
    assert (tmp_path / "repo" / "demo" / "libdcn_deploy_trt.so").read_bytes() == b"plugin bytes"
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "--backend-config=tensorrt,plugins=/models/demo/libdcn_deploy_trt.so" in readme
    assert 'LD_PRELOAD="libnvinfer.so.<major> /models/demo/libdcn_deploy_trt.so" tritonserver' in readme
    assert "the library then registers its creators" in readme  # on dlopen: no getCreators call needed
    assert "Nothing here records whether the plan carries" in readme  # no build record: both routes


def test_tensorrt_io_from_the_build_record_and_its_profile(serving_onnx, tmp_path):
    profile = {"name": "x", "min": [1, 3, 32, 32], "opt": [2, 3, 64, 80], "max": [4, 3, 96, 128], "source": "--shapes"}
    repo = write_triton_repo(fake_engine(tmp_path, serving_onnx, profile), tmp_path / "repo", library=serving_onnx)
    assert parse(repo.config).max_batch_size == 4  # the profile ends at batch 4
    assert any("profile for 'x' ends there" in note for note in repo.notes)
    profile["min"][0] = 2
    with pytest.raises(TritonRepoError, match="starts at batch 2"):
        write_triton_repo(fake_engine(tmp_path, serving_onnx, profile), tmp_path / "repo2", library=serving_onnx)


def test_tensorrt_without_io_description_fails_clearly(tmp_path):
    result = invoke("triton-repo", fake_engine(tmp_path), "-o", tmp_path / "repo")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "pass --onnx MODEL.onnx, the ONNX the engine was built from" in text
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("args, words", [
    (("--kind", "tpu"), "instance kind must be cpu or gpu"),
    (("--instances", "0"), "instances must be at least 1"),
    (("--model-name", "a/b"), "is not a usable model name"),
    (("--max-delay-ms", "-1"), "max_delay_ms must be >= 0"),
])
def test_argument_errors(serving_onnx, tmp_path, args, words):
    result = invoke("triton-repo", serving_onnx, "-o", tmp_path / "repo", *args)
    assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output
