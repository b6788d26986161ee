"""TensorRT engine building: everything before TensorRT for real (shape profiles against exported
ONNX models, the precision decision table, the plugin library's path, the CLI's errors), and a
real build + parity run that is skipped where TensorRT or a CUDA GPU is missing."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from dcn_deploy.backends.tensorrt.build import (
    BuildResult,
    PrecisionPlan,
    ShapeRange,
    build_engine,
    parse_shape_specs,
    plan_precision,
    resolve_profiles,
)
from dcn_deploy.backends.tensorrt.common import (
    LIBRARY_ENV,
    PluginLayoutError,
    PrecisionError,
    ShapeSpecError,
    TensorRTError,
    TensorRTUnavailable,
    check_plugin_layout,
    import_tensorrt,
    plugin_library_layout,
    tensorrt_major,
    trt_plugin_library,
)
from dcn_deploy.backends.tensorrt.engine import engine_info, engine_precision
from dcn_deploy.backends.tensorrt.memory import device_buffers
from dcn_deploy.backends.tensorrt.runtime import TensorRTRunner
from dcn_deploy.cli import app
from dcn_deploy.onnx.model_info import (
    graph_precision,
    onnx_precision,
    set_metadata,
    uses_custom_op,
)
from dcn_deploy.onnx.recipes import export_recipe

runner = CliRunner()
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    """The demo recipe, dynamic N/H/W, custom DcnDeformConv nodes; records its example shape 2x3x64x80."""
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    export_recipe("demo", path)
    return path


@pytest.fixture(scope="module")
def demo_static_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo_static") / "demo_static.onnx"
    export_recipe("demo", path, dynamic=False, input_shape=(1, 3, 32, 48))
    return path


def two_input_model(dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", dtype, ["N", 3, "H", "W"])
    b = helper.make_tensor_value_info("b", dtype, [1, 3, 1, 1])
    y = helper.make_tensor_value_info("y", dtype, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two_inputs", [a, b], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


# --------------------------------------------------------------------------------------
# --shapes parsing
# --------------------------------------------------------------------------------------

def test_parse_min_opt_max_and_single_shapes():
    ranges = parse_shape_specs(["x:1x3x224x224/4x3x224x224/8x3x320x320", "2x3x64x80"])
    assert ranges[0] == ShapeRange("x", (1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 320, 320))
    assert ranges[1] == ShapeRange(None, (2, 3, 64, 80), (2, 3, 64, 80), (2, 3, 64, 80))


def test_parse_comma_separated_and_names_with_colons():
    ranges = parse_shape_specs(["input:0:1x3/2x3/4x3, b:1X3X1X1"])
    assert [r.name for r in ranges] == ["input:0", "b"]
    assert ranges[0].max == (4, 3) and ranges[1].opt == (1, 3, 1, 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("x:1x3xHx224", "is not a shape like"),
        ("x:1x3x0x224", "must be a positive integer"),
        ("x:1x3x8x8/4x3x8x8", "give one shape or MIN/OPT/MAX"),
        ("x:1x3x8x8/1x3x8/1x3x8x8", "different ranks"),
        (":1x3x8x8", "empty input name"),
        ("x:", "is not a shape like"),
    ],
)
def test_parse_errors(spec, message):
    with pytest.raises(ShapeSpecError, match=message) as error:
        parse_shape_specs([spec])
    assert spec in str(error.value)


# --------------------------------------------------------------------------------------
# --shapes against a real exported ONNX
# --------------------------------------------------------------------------------------

def test_nameless_spec_binds_to_the_only_input(demo_onnx):
    (profile,) = resolve_profiles(demo_onnx, ["1x3x64x64/2x3x96x128/4x3x128x160"])
    assert profile == ShapeRange("x", (1, 3, 64, 64), (2, 3, 96, 128), (4, 3, 128, 160))


def test_dynamic_input_without_spec_gets_the_exports_example_shape(demo_onnx):
    (profile,) = resolve_profiles(demo_onnx)
    assert profile.name == "x" and profile.min == profile.opt == profile.max == (2, 3, 64, 80)
    assert "example shape" in profile.source


def test_dynamic_input_without_spec_or_recorded_shape_is_an_error(demo_onnx):
    proto = onnx.load(str(demo_onnx))
    kept = [p for p in proto.metadata_props if p.key != "dcn_deploy.input_shapes"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    with pytest.raises(ShapeSpecError) as error:
        resolve_profiles(proto)
    text = str(error.value)
    assert "input 'x' has dynamic axes" in text and "x3x" in text and "--shapes x:MIN/OPT/MAX" in text
    assert resolve_profiles(proto, ["x:1x3x64x64"])[0].opt == (1, 3, 64, 64)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("y:1x3x64x64", "shape spec for 'y': the model has no input of that name; its inputs are ['x']"),
        ("x:1x3x64", "input 'x' has rank 4"),
        ("x:1x4x64x64", "input 'x' axis 1 is fixed at 3 in the ONNX"),
        ("x:1x3x64x64/1x3x32x64/1x3x64x64", "input 'x' axis 2: min 64, opt 32, max 64 are not min <= opt <= max"),
        ("x:2x3x64x64/1x3x64x64/4x3x64x64", "input 'x' axis 0: min 2, opt 1, max 4"),
    ],
)
def test_specs_that_do_not_fit_the_onnx_name_the_input(demo_onnx, spec, message):
    with pytest.raises(ShapeSpecError) as error:
        resolve_profiles(demo_onnx, [spec])
    assert message in str(error.value)


def test_two_specs_for_one_input(demo_onnx):
    with pytest.raises(ShapeSpecError, match="input 'x' has more than one shape spec"):
        resolve_profiles(demo_onnx, ["x:1x3x64x64", "1x3x32x32"])


def test_static_export(demo_static_onnx):
    (profile,) = resolve_profiles(demo_static_onnx)
    assert profile.min == profile.opt == profile.max == (1, 3, 32, 48) and "static" in profile.source
    assert resolve_profiles(demo_static_onnx, ["x:1x3x32x48"])[0].max == (1, 3, 32, 48)
    with pytest.raises(ShapeSpecError, match="input 'x' axis 0 is fixed at 1 in the ONNX"):
        resolve_profiles(demo_static_onnx, ["x:1x3x32x48/2x3x32x48/4x3x32x48"])


def test_several_inputs():
    model = two_input_model()
    with pytest.raises(ShapeSpecError, match=r"names no input, but the model has 2 inputs \['a', 'b'\]"):
        resolve_profiles(model, ["1x3x8x8"])
    with pytest.raises(ShapeSpecError, match="input 'a' has dynamic axes \\(Nx3xHxW\\)"):
        resolve_profiles(model, [])
    a, b = resolve_profiles(model, ["a:1x3x8x8/2x3x16x16/4x3x32x32"])
    assert (a.name, a.max, b.name, b.opt) == ("a", (4, 3, 32, 32), "b", (1, 3, 1, 1))
    with pytest.raises(ShapeSpecError, match="input 'b' axis 2 is fixed at 1"):
        resolve_profiles(model, ["a:1x3x8x8", "b:1x3x2x1"])


# --------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------

def test_onnx_precision_from_metadata_else_the_graph(demo_onnx):
    proto = onnx.load(str(demo_onnx))
    assert graph_precision(proto) == "fp32" and onnx_precision(proto) == "fp32"
    set_metadata(proto, {"precision": "fp16"})
    assert onnx_precision(proto) == "fp16"  # the export's record wins
    set_metadata(proto, {"precision": "int8?"})
    assert onnx_precision(proto) == "fp32"  # not a precision we know: inspect the graph
    assert graph_precision(two_input_model(TensorProto.FLOAT16)) == "fp16"
    assert graph_precision(two_input_model(TensorProto.INT64)) == "unknown"


def test_graph_precision_sees_float16_inside_a_float32_graph():
    model = two_input_model()
    cast = helper.make_node("Cast", ["y"], ["y16"], to=TensorProto.FLOAT16)
    back = helper.make_node("Cast", ["y16"], ["z"], to=TensorProto.FLOAT)
    model.graph.node.extend([cast, back])
    model.graph.output[0].name = "z"
    assert graph_precision(model) == "fp16"


STRONG10 = ("STRONGLY_TYPED",)
NO_TF32 = {"cleared_builder_flags": ("TF32",)}

# (TensorRT major, requested, ONNX precision, tf32) -> PrecisionPlan fields, or the error's words
DECISIONS = [
    (10, None, "fp32", False, dict(precision="fp32", strongly_typed=True, network_flags=STRONG10, **NO_TF32)),
    (10, "fp32", "fp32", False, dict(precision="fp32", strongly_typed=True, network_flags=STRONG10, **NO_TF32)),
    (10, "fp32", "fp32", True, dict(precision="fp32", strongly_typed=True, network_flags=STRONG10,
                                    builder_flags=("TF32",))),
    (10, "fp16", "fp32", False, dict(precision="fp16", strongly_typed=False, builder_flags=("FP16",), **NO_TF32)),
    (10, "fp16", "fp32", True, dict(precision="fp16", strongly_typed=False, builder_flags=("FP16", "TF32"))),
    (10, None, "fp16", False, dict(precision="fp16", strongly_typed=True, network_flags=STRONG10, **NO_TF32)),
    (10, "fp16", "fp16", False, dict(precision="fp16", strongly_typed=True, network_flags=STRONG10, **NO_TF32)),
    (10, "fp32", "fp16", False, "this ONNX is float16"),
    (11, None, "fp32", False, dict(precision="fp32", strongly_typed=True, **NO_TF32)),
    (11, "fp32", "fp32", False, dict(precision="fp32", strongly_typed=True, **NO_TF32)),
    (11, "fp32", "fp32", True, dict(precision="fp32", strongly_typed=True, builder_flags=("TF32",))),
    (11, "fp16", "fp32", False, "dcn-deploy export --precision fp16"),
    (11, "fp16", "fp32", True, "dcn-deploy export --precision fp16"),
    (11, None, "fp16", False, dict(precision="fp16", strongly_typed=True, **NO_TF32)),
    (11, "fp16", "fp16", False, dict(precision="fp16", strongly_typed=True, **NO_TF32)),
    (11, "fp32", "fp16", False, "this ONNX is float16"),
    (12, "fp16", "fp16", False, dict(precision="fp16", strongly_typed=True, **NO_TF32)),
    (12, "fp16", "fp32", False, "TensorRT 12 builds every network strongly typed"),
    (9, "fp32", "fp32", False, "need 10.x or 11.x"),
    (10, "int8", "fp32", False, "precision 'int8' is not one of"),
    (11, None, "unknown", False, "cannot tell the ONNX's precision"),
]


@pytest.mark.parametrize("major, requested, graph, tf32, expected", DECISIONS)
def test_precision_decision_table(major, requested, graph, tf32, expected):
    if isinstance(expected, str):
        with pytest.raises(PrecisionError, match=expected.replace(".", r"\.")):
            plan_precision(major, requested, graph, tf32)
        return
    plan = plan_precision(major, requested, graph, tf32)
    assert plan == PrecisionPlan(**expected, note=plan.note)
    assert "FP16" not in plan.builder_flags or major == 10  # TensorRT 11 has no FP16 flag
    assert not (plan.strongly_typed and "FP16" in plan.builder_flags)  # TensorRT forbids the mix


# --------------------------------------------------------------------------------------
# Plugin library, TensorRT import, engine records
# --------------------------------------------------------------------------------------

def test_plugin_library_resolution(tmp_path, monkeypatch):
    from dcn_deploy.backends import native

    monkeypatch.setattr(native, "_REPO_ROOT", tmp_path)
    monkeypatch.setattr(native, "_PACKAGE_DIR", tmp_path / "dcn_deploy")
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as error:
        trt_plugin_library(10)
    assert "libdcn_deploy_trt10.so is not built" in str(error.value)
    assert "scripts/fetch_trt_headers.sh" in str(error.value) and "TENSORRT_INCLUDE_DIR" in str(error.value)

    built10 = tmp_path / "build" / "lib" / "libdcn_deploy_trt10.so"
    built10.parent.mkdir(parents=True)
    built10.write_bytes(b"")
    assert trt_plugin_library(10) == str(built10)
    assert trt_plugin_library() == str(built10)  # the newest layout built
    with pytest.raises(FileNotFoundError, match="libdcn_deploy_trt11.so is not built"):
        trt_plugin_library(11)
    built11 = built10.with_name("libdcn_deploy_trt11.so")
    built11.write_bytes(b"")
    assert trt_plugin_library() == trt_plugin_library(11) == str(built11)

    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "elsewhere.so"))
    with pytest.raises(FileNotFoundError, match="DCN_DEPLOY_TRT_LIB=.*elsewhere.so does not name a file"):
        trt_plugin_library()
    (tmp_path / "elsewhere.so").write_bytes(b"")
    assert trt_plugin_library(10) == trt_plugin_library(11) == str((tmp_path / "elsewhere.so").resolve())


def test_plugin_library_layout_is_read_from_the_file_and_a_mismatch_refused(tmp_path):
    library = tmp_path / "lib.so"
    library.write_bytes(b"\x7fELF...DCN_DEPLOY_TRT_HEADERS=10.16;...")
    assert plugin_library_layout(library) == (10, 16)
    check_plugin_layout(library, 10, "TensorRT 10.16.0")
    with pytest.raises(PluginLayoutError) as error:
        check_plugin_layout(library, 11, "TensorRT 11.1.0")
    text = str(error.value)
    assert "compiled against TensorRT 10.16 headers, but TensorRT 11.1.0 needs the TensorRT 11.x interface layout" in text
    assert "use libdcn_deploy_trt11.so" in text and "DCN_DEPLOY_TRT_LIB" in text
    foreign = tmp_path / "foreign.so"
    foreign.write_bytes(b"\x7fELF no marker")
    assert plugin_library_layout(foreign) is None
    check_plugin_layout(foreign, 11, "TensorRT 11.1.0")  # not ours: TensorRT's own loader decides


def test_the_built_plugin_libraries_carry_their_layout():
    for major in (11, 10):
        try:
            library = trt_plugin_library(major)
        except FileNotFoundError:
            continue  # no TensorRT headers or nvcc: build_plugins.sh skipped it, saying so
        if os.environ.get(LIBRARY_ENV):
            continue
        assert plugin_library_layout(library)[0] == major, library


def test_build_checks_target_and_capabilities_before_tensorrt(demo_onnx, tmp_path):
    with pytest.raises(ValueError, match="target must be one of"):
        build_engine(demo_onnx, tmp_path / "x.engine", target="tensorrt-llm")
    with pytest.raises(ValueError, match="compute capabilities are for --target rtx"):
        build_engine(demo_onnx, tmp_path / "x.engine", compute_capabilities=["SM86"])
    result = invoke("build", demo_onnx, "-o", tmp_path / "x.engine", "--target", "gpu")
    assert result.exit_code == 2 and "--target must be one of ['tensorrt', 'rtx']" in flat(result.output)


def test_custom_nodes_need_the_plugin_standard_ones_do_not(demo_onnx, tmp_path):
    from dcn_deploy.onnx.rewrite import rewrite_onnx

    assert uses_custom_op(demo_onnx)
    standard, count = rewrite_onnx(demo_onnx, to="standard", output=tmp_path / "std.onnx")
    assert count == 3 and not uses_custom_op(standard)


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_import_tensorrt_says_what_is_missing():
    with pytest.raises(TensorRTUnavailable) as error:
        import_tensorrt()
    text = str(error.value)
    assert "import tensorrt" in text and "tensorrt-cu12" in text and "tensorrt-cu13" in text


def test_tensorrt_version_parsing():
    assert tensorrt_major("10.16.0.72") == 10 and tensorrt_major("11.1.0") == 11
    with pytest.raises(TensorRTUnavailable):
        tensorrt_major("unknown")


def test_engine_precision_prefers_the_build_record(demo_onnx, tmp_path):
    engine = tmp_path / "demo.engine"
    assert engine_precision(engine, demo_onnx) == "fp32"  # no record (e.g. trtexec): the ONNX's
    BuildResult(engine=str(engine), onnx=str(demo_onnx), precision="fp16", strongly_typed=False,
                   tensorrt_version="10.16.0").write_sidecar()
    assert engine_precision(engine, demo_onnx) == "fp16"  # TensorRT 10 BuilderFlag.FP16 from a float32 ONNX
    assert engine_info(engine)["tensorrt_version"] == "10.16.0"


def test_build_checks_shapes_before_needing_tensorrt(demo_onnx, tmp_path):
    with pytest.raises(ShapeSpecError, match="input 'x' axis 1 is fixed at 3"):
        build_engine(demo_onnx, tmp_path / "x.engine", shapes=["x:1x1x64x64"])
    with pytest.raises(FileNotFoundError, match="no plugin library at"):
        build_engine(demo_onnx, tmp_path / "x.engine", plugin_lib=tmp_path / "missing.so")
    assert not (tmp_path / "x.engine").exists()


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_cli_build_without_tensorrt_fails_clearly(demo_onnx, tmp_path):
    plugin = tmp_path / "libdcn_deploy_trt.so"
    plugin.write_bytes(b"")
    engine = tmp_path / "demo.engine"
    result = invoke("build", demo_onnx, "-o", engine, "--plugin-lib", plugin,
                    "--shapes", "x:1x3x64x64/2x3x64x80/4x3x96x96", "--tf32")
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert "TensorRT is not available" in text and "pip install tensorrt-cu12" in text, text
    assert not engine.exists()


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_cli_validate_trt_without_tensorrt_fails_clearly(demo_onnx, tmp_path):
    engine = tmp_path / "demo.engine"
    engine.write_bytes(b"not a plan")
    result = invoke("validate", demo_onnx, "--trt", engine, "-n", "1")
    assert result.exit_code == 2, result.output
    assert "TensorRT is not available" in flat(result.output)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--shapes", "y:1x3x64x64"), "shape spec for 'y': the model has no input of that name; its inputs are ['x']"),
        (("--shapes", "1x3x64"), "input 'x' has rank 4"),
        (("--precision", "int8"), "--precision must be one of ['fp32', 'fp16']"),
        (("--plugin-lib", "nowhere.so"), "no plugin library at nowhere.so"),
        (("--workspace", "0"), "workspace must be a positive number of MiB"),
    ],
)
def test_cli_build_argument_errors(demo_onnx, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(demo_onnx.parent)
    result = invoke("build", demo_onnx, "-o", tmp_path / "demo.engine", *extra)
    assert result.exit_code == 2, result.output
    assert message in flat(result.output), result.output


def test_cli_build_and_validate_missing_files(tmp_path, demo_onnx):
    result = invoke("build", tmp_path / "nowhere.onnx", "-o", tmp_path / "x.engine")
    assert result.exit_code == 2 and "no ONNX file at" in flat(result.output)
    result = invoke("validate", demo_onnx, "--trt", tmp_path / "nowhere.engine", "-n", "1")
    assert result.exit_code == 2 and "no TensorRT engine at" in flat(result.output)


# --------------------------------------------------------------------------------------
# The real thing (TensorRT, a CUDA GPU and the built plugin)
# --------------------------------------------------------------------------------------

def _gpu_reason() -> str | None:
    if not HAVE_TENSORRT:
        return "TensorRT (the tensorrt Python package) is not installed"
    try:
        import_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    import torch

    if not torch.cuda.is_available():
        try:
            device_buffers()
        except TensorRTError as error:
            return f"no CUDA GPU usable from Python: {error}"
    try:
        trt_plugin_library()
    except FileNotFoundError as error:
        return str(error)
    return None


@pytest.fixture(scope="module")
def gpu_ready():
    reason = _gpu_reason()
    if reason:
        pytest.skip(reason)


def test_real_build_and_parity(gpu_ready, demo_onnx, tmp_path):
    import onnx as onnx_module

    from dcn_deploy.onnx.recipes import reference_for
    from dcn_deploy.parity.validate import validate_onnx

    engine, cache = tmp_path / "demo.engine", tmp_path / "timing.cache"
    result = build_engine(demo_onnx, engine, precision="fp32", timing_cache=cache, workspace=1024,
                             shapes=["x:1x3x32x32/2x3x64x80/4x3x96x128"])
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    assert result.precision == "fp32" and result.strongly_typed
    assert json.loads((tmp_path / "demo.engine.json").read_text())["profiles"][0]["max"] == [4, 3, 96, 128]

    proto = onnx_module.load(str(demo_onnx))
    reference, _ = reference_for(proto)
    trt_runner = TensorRTRunner(engine, input_names=["x"], output_names=["logits"])
    for shape in ([2, 3, 64, 80], [3, 3, 96, 128]):
        report = validate_onnx(demo_onnx, reference, [shape], num_inputs=2, run_backend=trt_runner,
                               output_names=trt_runner.output_names, backend=trt_runner.backend_name)
        assert report.passed, report.to_dict()
        assert report.outputs[0].max_abs > 0
    with pytest.raises(ValueError, match="does not fit the engine"):
        trt_runner([np.zeros((8, 3, 64, 64), "float32")])

    # the second build reads the cache (set_timing_cache(..., ignore_mismatch=False) accepted it)
    build_engine(demo_onnx, tmp_path / "again.engine", timing_cache=cache,
                    shapes=["x:1x3x32x32/2x3x64x80/4x3x96x128"])
    assert (tmp_path / "again.engine").stat().st_size > 0

    cli = invoke("validate", demo_onnx, "--trt", engine, "-n", "1")
    assert cli.exit_code == 0, cli.output
    assert "TensorRT" in cli.output and "pass" in cli.output


def test_the_tensorrt_runtime_refuses_a_tensorrt_rtx_plan(tmp_path):
    from dcn_deploy.backends.tensorrt.engine import load_engine

    engine = tmp_path / "demo.plan"
    engine.write_bytes(b"plan")
    BuildResult(engine=str(engine), onnx="demo.onnx", precision="fp32", strongly_typed=True,
                tensorrt_version="1.7.1.116", target="rtx", compute_capabilities=["SM86"]).write_sidecar()
    with pytest.raises(TensorRTError, match="was built for rtx .*TensorRT-RTX's own runtime"):
        load_engine(engine)
