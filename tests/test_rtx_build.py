"""TensorRT-RTX: exported recipes through the real TensorRT-RTX ONNX parser and ahead-of-time builder with
this project's plugin, on the CPU (no GPU is needed to build). Every build runs ``dcn-deploy build --target
rtx`` in a subprocess, so an abort inside TensorRT-RTX fails one test instead of killing pytest.

What is asserted: the parse, the plugin layers' output shapes (the plugin's getOutputShapes), that the plan
holds our creator name, namespace, library and every field value of every layer (decoded from the plan),
the sidecar (target, compute capabilities, profiles), TensorRT-RTX's refusal of the standard DeformConv
node, and that bad models fail at build time with our message in TensorRT-RTX's log. The engines are
never deserialized or run (no GPU here).

Models are exported once per module (resnet50_dcn at 1x3x64x64 to keep the export short).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dcn_deploy.backends.tensorrt.common import plugin_library_layout, trt_plugin_library
from dcn_deploy.backends.tensorrt.rtx import RTX_INTERFACE_MAJOR, parse_compute_capabilities
from dcn_deploy.onnx import schema
from dcn_deploy.onnx.fp16 import convert_to_fp16
from dcn_deploy.onnx.quantize import quantize_onnx, synthetic_calibration
from dcn_deploy.onnx.recipes import export_recipe
from dcn_deploy.onnx.rewrite import rewrite_onnx

REPO = Path(__file__).resolve().parents[1]
HAVE_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None
pytestmark = pytest.mark.skipif(not HAVE_RTX, reason="TensorRT-RTX (tensorrt_rtx_bindings) is not installed: "
                                "./scripts/setup.sh installs it where pip can reach it")
DEMO_SHAPES = "x:1x3x32x32/2x3x64x80/4x3x96x128"
R50_SHAPE = (1, 3, 64, 64)
R50_SHAPES = "x:1x3x64x64/2x3x64x64/2x3x96x96"
FIELDS = ("kernel_shape", "strides", "pads", "dilations", "group", "offset_group")


def _rtx_build(onnx_path: Path, engine: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``dcn-deploy build --target rtx`` in a fresh interpreter (an abort stays there)."""
    env = {**os.environ, "COLUMNS": "400", "PYTHONPATH": str(REPO), **(env or {})}
    command = [sys.executable, "-c", "from dcn_deploy.cli import main; main()", "build", str(onnx_path), "-o",
               str(engine), "--target", "rtx", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def _built(onnx_path: Path, engine: Path, *args: str, env: dict | None = None) -> dict:
    result = _rtx_build(onnx_path, engine, *args, env=env)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert engine.stat().st_size > 0
    return json.loads(Path(str(engine) + ".json").read_text())


def _refused(onnx_path: Path, engine: Path, *args: str) -> str:
    result = _rtx_build(onnx_path, engine, *args)
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, f"rc={result.returncode} (2 is a clean refusal; negative: killed)\n{text}"
    assert not engine.exists()
    return text


def _dcn_nodes(path: Path) -> list[onnx.NodeProto]:
    model = onnx.load(str(path), load_external_data=False)
    return [n for n in model.graph.node if n.domain == schema.CUSTOM_DOMAIN]


def _expected_record(node: onnx.NodeProto) -> dict:
    """What the plan must hold for ``node``: creator, version, namespace and the plugin's fields (the
    six int64 attributes; the INT8 nodes' float32 scales as well)."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    fields = {name: [int(v) for v in np.atleast_1d(attributes[name])] for name in FIELDS}
    for name in ("x_scale", "w_scale", "y_scale"):
        if name in attributes:
            fields[name] = [float(np.float32(v)) for v in np.atleast_1d(attributes[name])]
    return {"creator": node.op_type, "version": schema.PLUGIN_VERSION, "namespace": schema.PLUGIN_NAMESPACE,
            "fields": fields}


# The plan's encoding of a plugin layer, as TensorRT-RTX 1.7 writes it (read from its plans): a string is
# STRING_TAG <u64 n> BYTES_TAG <u64 n> <n bytes>; a layer is creator name, version, namespace, COUNT_TAG
# <u32 fields>, then per field its name, COUNT_TAG <u32 values>, its type name ("INT64", "FP32") and
# DATA_TAG <u64 bytes> <values, little endian>.
STRING_TAG, BYTES_TAG = b"\x13\x80\x01\x00", b"\x01\x80\x0c\x80\x01\x00"
COUNT_TAG, DATA_TAG = b"\x07\x80\x01\x00", b"\x01\x80\x03\x80\x01\x00"
DATA_FORMATS = {"INT64": "q", "INT32": "i", "FP32": "f", "FLOAT32": "f", "FP64": "d"}


class _Reader:
    def __init__(self, data: bytes, position: int):
        self.data, self.position = data, position

    def expect(self, tag: bytes) -> None:
        assert self.data.startswith(tag, self.position), (tag, self.data[self.position:self.position + 32])
        self.position += len(tag)

    def unpack(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.position)[0]
        self.position += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        self.expect(STRING_TAG)
        length = self.unpack("<Q")
        self.expect(BYTES_TAG + struct.pack("<Q", length))
        self.position += length
        return self.data[self.position - length:self.position].decode()


def _encoded_string(text: str) -> bytes:
    n = struct.pack("<Q", len(text))
    return STRING_TAG + n + BYTES_TAG + n + text.encode()


def _plan_records(plan: bytes) -> list[dict]:
    """Every plugin layer record of our creators in the plan, decoded (see the tags above)."""
    records = []
    for creator in (schema.CUSTOM_OP_TYPE, *schema.INT8_OP_TYPES):
        for match in re.finditer(re.escape(_encoded_string(creator)), plan):
            reader = _Reader(plan, match.start())
            record = {"creator": reader.string(), "version": reader.string(), "namespace": reader.string()}
            reader.expect(COUNT_TAG)
            fields = {}
            for _ in range(reader.unpack("<I")):
                name = reader.string()
                reader.expect(COUNT_TAG)
                count = reader.unpack("<I")
                fmt = DATA_FORMATS[reader.string()]
                reader.expect(DATA_TAG)
                assert reader.unpack("<Q") == count * struct.calcsize(fmt)
                fields[name] = [reader.unpack("<" + fmt) for _ in range(count)]
            record["fields"] = fields
            records.append(record)
    return records


# --------------------------------------------------------------------------------------
# Exported models, once per module
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rtx_models")
    paths: dict[str, Path] = {}

    def save(name: str, model: onnx.ModelProto) -> None:
        paths[name] = folder / f"{name}.onnx"
        onnx.save(model, str(paths[name]))

    for recipe, shape in (("demo", None), ("resnet50_dcn", R50_SHAPE)):
        key = "r50" if recipe == "resnet50_dcn" else recipe
        fp32 = export_recipe(recipe, folder / f"{key}.onnx", input_shape=shape)
        paths[key] = folder / f"{key}.onnx"
        save(f"{key}_fp16", convert_to_fp16(fp32))
        save(f"{key}_fp16_io", convert_to_fp16(fp32, keep_io_types=True))
        save(f"{key}_int8", quantize_onnx(fp32, synthetic_calibration(fp32, 2)).model)
    export_recipe("demo", folder / "demo_static.onnx", dynamic=False)
    paths["demo_static"] = folder / "demo_static.onnx"
    rewrite_onnx(paths["demo"], to="standard", output=folder / "demo_std.onnx")
    paths["demo_std"] = folder / "demo_std.onnx"
    return paths


# --------------------------------------------------------------------------------------
# Recipes that build
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["demo", "demo_fp16", "demo_fp16_io", "demo_int8"])
def test_demo_builds_ahead_of_time(models, tmp_path, name):
    engine = tmp_path / f"{name}.plan"
    info = _built(models[name], engine, "--shapes", DEMO_SHAPES, "--compute-capability", "SM86",
                  "--compute-capability", "8.9")
    assert info["target"] == "rtx" and info["compute_capabilities"] == ["SM86", "SM89"]
    assert info["tensorrt_version"].startswith("1.")
    assert info["precision"] == {"demo": "fp32", "demo_int8": "fp32"}.get(name, "fp16")
    assert info["plugin_serialized"] and Path(info["plugin_library"]).name == "libdcn_deploy_trt11.so"
    assert info["profiles"][0]["max"] == [4, 3, 96, 128]
    _check_plan(models[name], engine, info, float16=name.startswith("demo_fp16"))


@pytest.mark.parametrize("name", ["r50", "r50_fp16", "r50_fp16_io", "r50_int8"])
def test_resnet50_dcn_builds_ahead_of_time(models, tmp_path, name):
    engine = tmp_path / f"{name}.plan"
    info = _built(models[name], engine, "--shapes", R50_SHAPES)
    assert info["compute_capabilities"] == []  # TensorRT-RTX's default AOT set
    _check_plan(models[name], engine, info, float16=name.startswith("r50_fp16"))


def _check_plan(onnx_path: Path, engine: Path, info: dict, float16: bool) -> None:
    nodes = _dcn_nodes(onnx_path)
    assert nodes
    layers = {layer["name"]: layer for layer in info["plugin_layers"]}
    assert sorted(layers) == sorted(n.name for n in nodes)
    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in nodes:
        layer = layers[node.name]
        out_channels = weights[node.input[1]][0] if node.input[1] in weights else None
        # N, H, W stay dynamic (-1); M is W's first dim: what getOutputShapes gave TensorRT-RTX.
        assert layer["output_shape"][0] == -1 and layer["output_shape"][2:] == [-1, -1], layer
        if out_channels is not None:
            assert layer["output_shape"][1] == out_channels, layer
        expected_type = ("HALF" if float16 else "FLOAT") if node.op_type == schema.CUSTOM_OP_TYPE else None
        if expected_type:
            assert layer["output_dtype"] == expected_type, layer
    plan = engine.read_bytes()
    assert b"libdcn_deploy_trt11" in plan  # the serialized plugin library
    # Every layer's record: our creator name, version, namespace and every field value, decoded.
    records = _plan_records(plan)
    for node in nodes:
        assert _expected_record(node) in records, (node.name, records[:2])
    assert len({json.dumps(r, sort_keys=True) for r in records}) == len({
        json.dumps(_expected_record(n), sort_keys=True) for n in nodes})


def test_static_shapes_and_several_profiles(models, tmp_path):
    info = _built(models["demo_static"], tmp_path / "static.plan")
    assert [layer["output_shape"][0] for layer in info["plugin_layers"]] == [2, 2, 2]
    assert all(-1 not in layer["output_shape"] for layer in info["plugin_layers"])
    assert info["profiles"][0]["source"] == "static in the ONNX"

    info = _built(models["demo"], tmp_path / "profiles.plan", "--shapes", "x:1x3x32x32/1x3x64x64/1x3x64x64",
                  "--profile", "x:2x3x64x80/4x3x64x80/8x3x64x80", "--profile", "x:1x3x128x128",
                  "--compute-capability", "SM120")
    assert [p[0]["max"] for p in info["more_profiles"]] == [[8, 3, 64, 80], [1, 3, 128, 128]]
    assert info["compute_capabilities"] == ["SM120"]


# --------------------------------------------------------------------------------------
# What TensorRT-RTX refuses
# --------------------------------------------------------------------------------------

def test_standard_deformconv_is_refused_by_tensorrt_rtx(models, tmp_path):
    """TensorRT-RTX has no DeformConv importer: the standard node falls back to the plugin registry,
    which has no creator 'DeformConv'. Export the custom node (the default) for TensorRT-RTX."""
    text = _refused(models["demo_std"], tmp_path / "std.plan", "--shapes", DEMO_SHAPES)
    assert "ONNX parser rejected" in text
    assert "(DeformConv)" in text and "Plugin not found" in text


def test_unknown_compute_capability_and_target_are_errors(models, tmp_path):
    text = _refused(models["demo"], tmp_path / "x.plan", "--compute-capability", "SM70")
    assert "knows no compute capability SM70" in text and "SM86" in text
    assert parse_compute_capabilities(["sm_86,8.9", "120", "SM86"]) == ("SM86", "SM89", "SM120")
    with pytest.raises(ValueError, match="is not like SM86"):
        parse_compute_capabilities(["ampere"])


def test_the_plugin_library_has_the_rtx_interface_layout():
    library = trt_plugin_library(RTX_INTERFACE_MAJOR)
    assert plugin_library_layout(library)[0] == 11


# --------------------------------------------------------------------------------------
# Bad models fail at build time with our message (dynamic N, H, W: nothing is known until the
# plugin checks the constant dims)
# --------------------------------------------------------------------------------------

def _one_layer(tmp_path: Path, name: str, pads=(1, 1, 1, 1), offset_group: int = 1, offset_groups_made: int = 1,
               mask_channels: int | None = None, weight_shape=(6, 4, 3, 3), bias_shape=(6,)) -> Path:
    """x [N, 4, H, W] -> offset conv (2*g*9 channels), mask conv (sigmoid) -> DcnDeformConv; N, H, W dynamic."""
    rng = np.random.default_rng(0)
    offset_channels = 2 * offset_groups_made * 9
    mask_channels = offset_groups_made * 9 if mask_channels is None else mask_channels
    init = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in (
        ("w_off", (offset_channels, 4, 3, 3)), ("w_mask", (mask_channels, 4, 3, 3)), ("W", weight_shape))]
    init.append(numpy_helper.from_array(rng.normal(size=bias_shape).astype(np.float32), "B"))
    nodes = [
        helper.make_node("Conv", ["x", "w_off"], ["offset"], pads=[1, 1, 1, 1], name="conv_offset"),
        helper.make_node("Conv", ["x", "w_mask"], ["mask_logits"], pads=[1, 1, 1, 1], name="conv_mask"),
        helper.make_node("Sigmoid", ["mask_logits"], ["mask"], name="sigmoid"),
        helper.make_node(schema.CUSTOM_OP_TYPE, ["x", "W", "offset", "B", "mask"], ["y"], name="dcn_bad",
                         domain=schema.CUSTOM_DOMAIN, kernel_shape=[3, 3], strides=[1, 1], pads=list(pads),
                         dilations=[1, 1], group=1, offset_group=offset_group, **schema.PLUGIN_ATTRIBUTES),
    ]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", schema.STANDARD_OPSET),
                                                    helper.make_opsetid(schema.CUSTOM_DOMAIN, 1)], ir_version=10)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


BAD_MODELS = {
    # name: (builder arguments, our message)
    "bad_pads": ({"pads": (1, 1, 1)}, "plugin field 'pads' has 3 values, expected 4"),
    "negative_pads": ({"pads": (1, -1, 1, 1)}, "attribute 'pads' values must be >= 0, got [1, -1, 1, 1]"),
    "wrong_offset_group": ({"offset_group": 2},
                           "offset has 18 channels, expected 2*offset_group*kh*kw = 36 (offset_group=2, kernel 3x3)"),
    "wrong_mask_channels": ({"mask_channels": 8}, "mask has 8 channels, expected offset_group*kh*kw = 9"),
    "wrong_weight_shape": ({"weight_shape": (6, 4, 3, 2)},
                           "attribute 'kernel_shape' is 3x3 but weight W has spatial size 3x2"),
    "wrong_weight_channels": ({"weight_shape": (6, 2, 3, 3)},
                              "weight W has 2 input channels per group (dim 1), expected C/group = 4"),
    "empty_bias": ({"bias_shape": (0,)}, "bias B has 0 elements, expected M = 6"),
}


def test_a_good_single_layer_builds(tmp_path):
    info = _built(_one_layer(tmp_path, "good"), tmp_path / "good.plan", "--shapes", "x:1x4x8x8/2x4x16x16/4x4x32x32")
    assert info["plugin_layers"] == [{"name": "dcn_bad", "output_shape": [-1, 6, -1, -1], "output_dtype": "FLOAT"}]


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_bad_models_fail_at_build_time_with_our_message(tmp_path, name):
    arguments, message = BAD_MODELS[name]
    text = _refused(_one_layer(tmp_path, name, **arguments), tmp_path / f"{name}.plan",
                    "--shapes", "x:1x4x8x8/2x4x16x16/4x4x32x32")
    assert f"DcnDeformConv node 'dcn_bad': {message}" in text


def test_a_plugin_library_of_another_tensorrt_layout_is_refused(models, tmp_path):
    text = _refused(models["demo"], tmp_path / "x.plan", "--plugin-lib", trt_plugin_library(10))
    assert "was compiled against TensorRT 10.16 headers, but TensorRT-RTX 1." in text
    assert "needs the TensorRT 11.x interface layout: use libdcn_deploy_trt11.so" in text


# --------------------------------------------------------------------------------------
# Registration when the library is only dlopen'ed (Triton's plugins=, LD_PRELOAD), in the real
# TensorRT-RTX registry, and no double registration when loadLibrary follows
# --------------------------------------------------------------------------------------

_REGISTRATION_SCRIPT = r"""
import ctypes, json, sys
from dcn_deploy.backends.tensorrt.build import build_engine
from dcn_deploy.backends.tensorrt.rtx import import_tensorrt_rtx

library, model, engine = sys.argv[1:4]
trt = import_tensorrt_rtx()  # TensorRT-RTX loaded first, as a server loads TensorRT before the plugins
registry = trt.get_plugin_registry()
ours = lambda: sorted([c.name, c.plugin_version, c.plugin_namespace] for c in registry.all_creators
                      if c.plugin_namespace == "dcn_deploy")
report = {"before": ours()}
ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)  # dlopen only: no entry point is called
report["after_dlopen"] = ours()
builder_registry = trt.Builder(trt.Logger(trt.Logger.ERROR)).get_plugin_registry()
report["builder_sees"] = builder_registry.get_creator("DcnDeformConv", "1", "dcn_deploy") is not None
# the plan does not carry the library: the build can only use the creator the dlopen registered
result = build_engine(model, engine, shapes=["x:1x4x8x8/2x4x16x16/4x4x32x32"], plugin_lib=library,
                      serialize_plugin=False, target="rtx")
report["plugin_layers"] = result.plugin_layers
handle = registry.load_library(library)  # TensorRT's own loader: getCreators after the dlopen registration
report["load_library_ok"] = handle is not None
report["after_load_library"] = ours()
registry.deregister_library(handle)
report["after_deregister_library"] = ours()
print("REPORT " + json.dumps(report))
"""


def test_a_dlopen_only_load_registers_the_creators_once(tmp_path):
    library = trt_plugin_library(RTX_INTERFACE_MAJOR)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _REGISTRATION_SCRIPT, library, str(_one_layer(tmp_path, "good")),
                             str(tmp_path / "good.plan")], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    report = json.loads(result.stdout.split("REPORT ", 1)[1])
    ours = [[name, schema.PLUGIN_VERSION, schema.PLUGIN_NAMESPACE]
            for name in ("DcnDeformConv", "DcnDeformConvInt8", "DcnDeformConvInt8Requantized")]
    assert report["before"] == []
    assert report["after_dlopen"] == ours
    assert report["builder_sees"] is True
    assert report["plugin_layers"] == [{"name": "dcn_bad", "output_shape": [-1, 6, -1, -1], "output_dtype": "FLOAT"}]
    assert (tmp_path / "good.plan").stat().st_size > 0
    assert report["load_library_ok"] is True
    assert report["after_load_library"] == ours  # one of each: loadLibrary took over the registration
    assert report["after_deregister_library"] == []  # and they were its own, not left over from the dlopen


_LISTING = ("from dcn_deploy.backends.tensorrt.rtx import import_tensorrt_rtx\n"
            "trt = import_tensorrt_rtx(); registry = trt.get_plugin_registry()\n"
            "ours = lambda: sorted(c.name for c in registry.all_creators if c.plugin_namespace == 'dcn_deploy')\n")


def _python(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_dlclose_and_process_exit_after_a_dlopen_only_load():
    """The creators leave the registry when the library is unloaded, and the process exits cleanly (the
    registry is still alive when they are deregistered at exit)."""
    script = _LISTING + (
        "import ctypes, _ctypes, sys\n"
        "lib = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL); print('LOADED', ours())\n"
        "_ctypes.dlclose(lib._handle); print('CLOSED', ours())\n"
        "lib = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL); print('AGAIN', len(ours()))\n")
    result = _python(script, trt_plugin_library(RTX_INTERFACE_MAJOR))
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "LOADED ['DcnDeformConv', 'DcnDeformConvInt8', 'DcnDeformConvInt8Requantized']" in result.stdout
    assert "CLOSED []" in result.stdout and "AGAIN 3" in result.stdout


@pytest.mark.parametrize("with_tensorrt", [True, False], ids=["tensorrt_preloaded_too", "plugin_alone"])
def test_ld_preload(with_tensorrt):
    """LD_PRELOAD registers when TensorRT's library is preloaded too; alone it loads before TensorRT and
    registers nothing (and must not fail)."""
    import tensorrt_rtx_libs  # noqa: F401  optional heavy dependency: where the wheel keeps libtensorrt_rtx.so.1

    preload = [trt_plugin_library(RTX_INTERFACE_MAJOR)]
    if with_tensorrt:
        preload.insert(0, str(Path(tensorrt_rtx_libs.__file__).parent / "libtensorrt_rtx.so.1"))
    result = _python(_LISTING + "print('LISTED', len(ours()))", LD_PRELOAD=" ".join(preload))
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"LISTED {3 if with_tensorrt else 0}" in result.stdout


def test_the_library_loads_without_tensorrt_and_registers_nothing():
    """No TensorRT in the process (getPluginRegistry nowhere): the load must neither fail nor crash."""
    script = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL); n = ctypes.c_int32(0); "
              "lib.getCreators.restype = ctypes.c_void_p; p = lib.getCreators(ctypes.byref(n)); "
              "print('CREATORS', n.value, p is not None)")
    result = subprocess.run([sys.executable, "-c", script, trt_plugin_library(RTX_INTERFACE_MAJOR)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "CREATORS 3 True" in result.stdout


# --------------------------------------------------------------------------------------
# Format negotiation next to real convolutions: what the builder offers our plugin for X,
# what the plugin accepts, and the configurations the builder then makes
# (DCN_DEPLOY_TRT_FORMAT_LOG, written by the plugin's supportsFormatCombination and
# configurePlugin)
# --------------------------------------------------------------------------------------

def _conv_dcn_conv(channels: int = 13) -> onnx.ModelProto:
    """x [N, 3, H, W] -> Conv -> Relu -> h [N, 13, H, W] -> DcnDeformConv (offset and mask from Convs on h,
    10 output channels) -> Conv -> y: TensorRT's own convolutions on both sides of our node, C and M not
    multiples of 8 (the padded formats' padding is exercised)."""
    rng = np.random.default_rng(0)
    shapes = {"w_in": (channels, 3, 3, 3), "b_in": (channels,), "w_off": (18, channels, 3, 3),
              "w_mask": (9, channels, 3, 3), "W": (10, channels, 3, 3), "B": (10,), "w_out": (8, 10, 3, 3)}
    init = [numpy_helper.from_array((rng.normal(size=shape) * 0.1).astype(np.float32), name)
            for name, shape in shapes.items()]
    conv = dict(pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["x", "w_in", "b_in"], ["h0"], name="conv_in", **conv),
        helper.make_node("Relu", ["h0"], ["h"], name="relu"),
        helper.make_node("Conv", ["h", "w_off"], ["offset"], name="conv_offset", **conv),
        helper.make_node("Conv", ["h", "w_mask"], ["mask_logits"], name="conv_mask", **conv),
        helper.make_node("Sigmoid", ["mask_logits"], ["mask"], name="sigmoid"),
        helper.make_node(schema.CUSTOM_OP_TYPE, ["h", "W", "offset", "B", "mask"], ["d"], name="dcn",
                         domain=schema.CUSTOM_DOMAIN, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                         dilations=[1, 1], group=1, offset_group=1, **schema.PLUGIN_ATTRIBUTES),
        helper.make_node("Conv", ["d", "w_out"], ["y"], name="conv_out", **conv),
    ]
    graph = helper.make_graph(
        nodes, "conv_dcn_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "H", "W"])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", schema.STANDARD_OPSET),
                                                   helper.make_opsetid(schema.CUSTOM_DOMAIN, 1)], ir_version=10)


def _format_log(path: Path) -> tuple[dict[str, bool], list[list[dict]]]:
    """X's formats the builder asked about (format -> accepted) and the tensors of every configuration."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert events and all(e["layer"] == "dcn" for e in events)
    offered = {e["tensor"]["format"]: e["accepted"] for e in events if e["event"] == "query" and e["pos"] == 0}
    configured = [e["tensors"] for e in events if e["event"] == "configure"]
    assert all(e["accepted"] for e in events if e["event"] == "configure")
    return offered, configured


# precision: (X's channels-last format the builder must configure, every format the plugin must accept for X,
# Y type). float16 channels-last X runs only on the tensor-core kernel, whose smallest tile needs 66 KiB of
# shared memory; ahead of time (no device) the plugin assumes sm_75's 64 KiB, the smallest target
# TensorRT-RTX builds for, so a float16 layer (here 3x3, one offset group: 76 KiB) is offered kLINEAR only.
CHANNELS_LAST = {
    "fp16": (None, {"kLINEAR"}, "float16"),
    # DcnDeformConvInt8: float32 Y, whose only blocked format is kCHW32: X kCHW4/kHWC16 refused up front
    "int8": ("kCHW32", {"kLINEAR", "kCHW32"}, "float32"),
}


@pytest.mark.parametrize("precision", sorted(CHANNELS_LAST))
def test_the_builder_configures_channels_last_formats_next_to_real_convolutions(tmp_path, precision):
    model = _conv_dcn_conv()
    if precision == "fp16":
        model = convert_to_fp16(model)
    else:
        model = quantize_onnx(model, synthetic_calibration(model, 2, shapes=[(1, 3, 16, 16)])).model
        assert [n.op_type for n in model.graph.node if n.name == "dcn"] == [schema.INT8_OP_TYPE]
    path = tmp_path / f"{precision}.onnx"
    onnx.save(model, str(path))
    log = tmp_path / "formats.jsonl"
    _built(path, tmp_path / f"{precision}.plan", "--shapes", "x:1x3x16x16/2x3x32x32/4x3x64x64",
           env={"DCN_DEPLOY_TRT_FORMAT_LOG": str(log)})
    offered, configured = _format_log(log)
    channels_last, accepted, y_type = CHANNELS_LAST[precision]
    # TensorRT-RTX 1.7 offers X in every format of its type; the plugin takes exactly its table's.
    assert {f for f, ok in offered.items() if ok} == accepted, offered
    assert len(offered) > len(accepted)
    # int8: it configures the plugin with the channels-last format (and with kLINEAR); float16: kLINEAR only.
    # Y follows X, the rest linear.
    x_formats = {tensors[0]["format"] for tensors in configured}
    assert x_formats <= accepted and (channels_last is None or channels_last in x_formats), configured
    assert configured
    for tensors in configured:
        assert tensors[-1] == {"format": tensors[0]["format"], "type": y_type}
        assert all(t["format"] == "kLINEAR" for t in tensors[1:-1])
