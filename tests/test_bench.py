"""dcn-deploy bench on tiny shapes: the result's structure and values, the PNG, the errors.

Nothing here asserts on speed: the timings only have to exist, be positive and be
summarised consistently (ratio = ratio of the medians).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcn_deploy.bench.config import (
    DEFAULT_BATCHES,
    FORMAT,
    BenchConfig,
    BenchError,
    command_line,
)
from dcn_deploy.bench.cpu import time_cpu_implementations
from dcn_deploy.bench.layers import DEFAULT_SHAPES, parse_shape_spec
from dcn_deploy.bench.report import short_ms
from dcn_deploy.bench.run import run_benchmark
from dcn_deploy.bench.timing import time_interleaved
from dcn_deploy.cli import app

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CPU_IMPLEMENTATIONS = {"custom", "native", "dense", "reference"}
runner = CliRunner()

try:
    from dcn_deploy.backends.cuda_kernels import cuda_kernel_library

    cuda_kernel_library()
    HAVE_GPU_PART = torch.cuda.is_available()
except FileNotFoundError:
    HAVE_GPU_PART = False


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "160", **(env or {})})


def tiny(**overrides) -> BenchConfig:
    settings = dict(shapes=[parse_shape_spec("4x8x8")], batches=[1], warmup=1, repeat=2, threads=1,
                    device="cpu")
    settings.update(overrides)
    return BenchConfig(**settings)


def check_timing(timing: dict, repeat: int, discarded: int = 1) -> None:
    assert timing["runs"] == repeat == len(timing["times_ms"])
    assert all(t > 0 for t in timing["times_ms"])
    assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]
    assert timing["min_ms"] == pytest.approx(min(timing["times_ms"]), abs=1e-6)
    assert timing["max_ms"] == pytest.approx(max(timing["times_ms"]), abs=1e-6)
    assert timing["discarded_rounds"] == discarded  # the warm-up rounds: run, never counted


def check_ratios(row: dict) -> None:
    for key, value in row["ratios"].items():
        numerator, denominator = key.split("/")
        expected = row["implementations"][numerator]["median_ms"] / row["implementations"][denominator]["median_ms"]
        assert value == pytest.approx(expected, rel=1e-12), key


# ---------------------------------------------------------------------------------------------
# shape specs


@pytest.mark.parametrize("text, expected", [
    ("4x8x8", (4, 4, 8, 8)), ("64x64x64", (64, 64, 64, 64)), ("256X50X68", (256, 256, 50, 68)),
    ("64:128x56x56", (64, 128, 56, 56)), (" 8x9x7 ", (8, 8, 9, 7)),
])
def test_shape_specs(text, expected):
    shape = parse_shape_spec(text)
    assert (shape.in_channels, shape.out_channels, shape.height, shape.width) == expected
    assert (shape.kernel, shape.pad, shape.stride) == (3, 1, 1)
    assert parse_shape_spec(shape.spec) == shape


@pytest.mark.parametrize("text", ["4x8", "1x4x8x8", "ax8x8", "4x8x", "0x8x8", "4x0x8", "-4x8x8", "4*8*8", ""])
def test_bad_shape_specs_name_the_spec(text):
    with pytest.raises(BenchError, match=re.escape(f"bad shape spec '{text}'")):
        parse_shape_spec(text)


def test_default_shapes_are_those_of_issue_7():
    assert [s.spec for s in DEFAULT_SHAPES] == ["64x64x64", "256x50x68", "512x25x34", "128x100x136"]
    assert tuple(DEFAULT_BATCHES) == (1, 8)


def test_command_line():
    argv = ["/repo/dcn_deploy/cli.py", "bench", "--shape", "64x64x64", "--json", "out dir/b.json"]
    assert command_line(argv) == "python -m dcn_deploy.cli bench --shape 64x64x64 --json 'out dir/b.json'"
    assert command_line(["/usr/bin/dcn-deploy", "bench"]) == "dcn-deploy bench"


def test_interleaved_timing_counts_and_order():
    calls = []
    steps = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = time_interleaved(functions, warmup=2, repeat=3, step=lambda: steps.append(1))
    assert set(timings) == {"a", "b", "c"} and all(len(t.times_ms) == 3 for t in timings.values())
    assert all(t.discarded == 2 for t in timings.values())  # the warm-up calls: calls[:6], not timed
    assert len(steps) == 5
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated each round


# ---------------------------------------------------------------------------------------------
# CPU part (ONNX Runtime custom op)


def test_reference_is_timed_apart_from_the_sessions():
    """torch's OpenMP threads spin after a call: the reference must not run between sessions."""
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in ("custom", "native", "dense", "reference")}
    timings = time_cpu_implementations(functions, BenchConfig(repeat=3, warmup=1), step=None)
    assert set(timings) == set(functions) and all(len(t.times_ms) == 3 for t in timings.values())
    first_reference = calls.index("reference")
    assert len(calls) == 4 * (1 + 3) and set(calls[first_reference:]) == {"reference"}
    assert set(calls[:first_reference]) == {"custom", "native", "dense"}


@pytest.mark.custom_op
def test_library_cpu_layers_structure_and_values():
    config = tiny(shapes=[parse_shape_spec("4x8x8"), parse_shape_spec("4:6x5x7")], batches=[1, 2])
    seen = []
    result = run_benchmark(config, progress=lambda text, done, total: seen.append((text, done, total)))
    assert result["format"] == FORMAT
    rows = result["cpu_layers"]
    assert len(rows) == 2 * 2  # shapes x batches
    assert [(r["shape"], r["batch"]) for r in rows] == [("4x8x8", 1), ("4x8x8", 2), ("4:6x5x7", 1), ("4:6x5x7", 2)]
    assert rows[3]["in_channels"] == 4 and rows[3]["out_channels"] == 6
    for row in rows:
        assert set(row["implementations"]) == CPU_IMPLEMENTATIONS
        for timing in row["implementations"].values():
            check_timing(timing, repeat=2)
        assert set(row["ratios"]) == {"custom/native", "custom/dense", "custom/reference"}
        check_ratios(row)
        assert row["kernel"] == [3, 3] and row["pads"] == [1, 1, 1, 1] and row["mask"] and row["bias"]
        # The implementations computed the same layer.
        assert row["max_abs_diff"]["custom_vs_native"] < 1e-4
        assert row["max_abs_diff"]["reference_vs_native"] < 1e-4
    machine = result["machine"]
    for key in ("cpu_model", "cores", "threads", "python", "onnxruntime", "torch", "date_utc", "command"):
        assert machine[key], key
    assert machine["threads"] == 1 and result["settings"]["repeat_cpu"] == 2
    assert set(result["implementations"]) == CPU_IMPLEMENTATIONS
    assert result["gpu_layers"] == [] and result["skipped"]["gpu_layers"] == "--device cpu"
    # rows x (warm-up + rounds) x (the sessions' rounds, then the reference's own)
    assert seen and seen[-1][1] == seen[-1][2] == 4 * (1 + 2) * 2


@pytest.mark.custom_op
def test_cli_json_and_plot(tmp_path):
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    result = invoke("bench", "--shape", "4x8x8", "--batch", "1", "--repeat", "2", "--warmup", "1", "--threads", "1",
                    "--json", json_path, "--plot", plot_path)
    assert result.exit_code == 0, result.output
    assert "custom" in result.output and "4x8x8" in result.output
    assert "median over min-max ms of 2 rounds, 1 warm-up round discarded" in " ".join(result.output.split())
    data = json.loads(json_path.read_text())
    custom = data["cpu_layers"][0]["implementations"]["custom"]
    # every cell: the median, then min-max of the timed rounds
    assert f"{custom['median_ms']:.3f}" in result.output
    assert f"{short_ms(custom['min_ms'])}-{short_ms(custom['max_ms'])}" in result.output
    assert len(data["cpu_layers"]) == 1
    row = data["cpu_layers"][0]
    assert set(row["implementations"]) == CPU_IMPLEMENTATIONS
    check_ratios(row)
    assert isinstance(data["machine"]["command"], str)  # sys.argv: pytest's here (see test_command_line)
    if not torch.cuda.is_available():  # the GPU part is skipped, saying why
        assert data["gpu_layers"] == [] and "CUDA" in data["skipped"]["gpu_layers"]
        assert "gpu_layers: skipped" in result.output
    assert plot_path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    image = matplotlib.image.imread(plot_path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.custom_op
def test_cli_recipe_end_to_end(tmp_path):
    json_path = tmp_path / "e2e.json"
    result = invoke("bench", "--recipe", "demo", "--input-shape", "1x3x32x40", "--no-layers", "--repeat", "2",
                    "--warmup", "1", "--threads", "1", "--json", json_path, "--plot", tmp_path / "e2e.png")
    assert result.exit_code == 0, result.output
    data = json.loads(json_path.read_text())
    assert data["cpu_layers"] == [] and data["skipped"]["cpu_layers"] == "--no-layers"
    (row,) = data["end_to_end"]
    assert row["recipe"] == "demo" and row["input_shape"] == [1, 3, 32, 40] and row["dcn_nodes"] == 3
    assert set(row["implementations"]) == {"custom", "native", "reference"}
    for timing in row["implementations"].values():
        check_timing(timing, repeat=2)
    assert set(row["ratios"]) == {"custom/native", "custom/reference"}
    check_ratios(row)
    assert row["max_abs_diff"]["custom_vs_native"] < 1e-4 and row["max_abs_diff"]["reference_vs_native"] < 1e-4
    assert (tmp_path / "e2e.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.custom_op
def test_no_reference_leaves_the_reference_out():
    result = run_benchmark(tiny(reference=False, repeat=1, warmup=0))
    (row,) = result["cpu_layers"]
    assert set(row["implementations"]) == {"custom", "native", "dense"}
    assert set(row["ratios"]) == {"custom/native", "custom/dense"}


@pytest.mark.custom_op
def test_int8_rows(tmp_path):
    # The INT8 op in the layer rows (8 channels: its channels-last path) and the quantized recipe end to
    # end; the outputs are the float ones up to quantization error.
    json_path = tmp_path / "int8.json"
    result = invoke("bench", "--shape", "8x9x10", "--batch", "1", "--recipe", "demo", "--input-shape", "1x3x32x40",
                    "--int8", "--no-reference", "--repeat", "2", "--warmup", "1", "--threads", "1", "--json", json_path,
                    "--plot", tmp_path / "int8.png")
    assert result.exit_code == 0, result.output
    assert "int8" in result.output
    data = json.loads(json_path.read_text())
    assert data["settings"]["int8"] is True
    ((layer,), (e2e,)) = data["cpu_layers"], data["end_to_end"]
    for row in (layer, e2e):
        assert "custom_int8" in row["implementations"]
        check_timing(row["implementations"]["custom_int8"], repeat=2)
        assert row["ratios"]["custom_int8/custom"] > 0
        assert 0 < row["max_abs_diff"]["custom_int8_vs_native_relative"] < 0.1
    assert "custom_int8" in data["implementations"]
    assert (tmp_path / "int8.png").read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------------------------------------
# errors (exit code 2, a message naming the problem)


@pytest.mark.parametrize("args, message", [
    (("--shape", "4x8"), "bad shape spec '4x8'"),
    (("--shape", "4x8x8", "--shape", "fourx8x8"), "bad shape spec 'fourx8x8'"),
    (("--shape", "4x8x8", "--batch", "0"), "batch sizes must be positive"),
    (("--shape", "4x8x8", "--threads", "0"), "--threads must be >= 1"),
    (("--shape", "4x8x8", "--repeat", "0"), "--repeat must be >= 1"),
    (("--recipe", "resnet_9000", "--no-layers"), "no recipe 'resnet_9000'"),
    (("--recipe", "demo", "--input-shape", "1x3x32"), "four positive sizes"),
    (("--no-layers",), "nothing to time"),
    (("--device", "tpu"), "--device must be auto, cpu or cuda"),
])
def test_bad_arguments(args, message):
    result = invoke("bench", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_missing_custom_op_library_says_how_to_build_it(tmp_path):
    result = invoke("bench", "--shape", "4x8x8", "--device", "cpu",
                    env={"DCN_DEPLOY_ORT_LIB": str(tmp_path / "missing.so")})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "custom-op library" in text and "./scripts/build_plugins.sh" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_device_cuda_without_cuda_is_an_error():
    result = invoke("bench", "--device", "cuda", "--shape", "4x8x8")
    assert result.exit_code == 2, result.output
    assert "--device cuda" in result.output and "CUDA" in result.output


def test_cli_and_gpu_path_import_no_onnx():
    """`--help`, and `bench --device cuda` up to its first error, import neither onnx nor onnxruntime:
    the GPU machine has no custom-op library (and need not have onnxruntime)."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dcn_deploy.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['bench', '--help'])\n"
        "assert r.exit_code == 0 and '--device' in r.output, r.output\n"
        "r = CliRunner().invoke(app, ['bench', '--device', 'cuda', '--shape', '4x8x8', '--repeat', '2'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxscript'))\n"
        "assert not heavy, heavy\n"
        "print('ok', r.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok" in done.stdout


# ---------------------------------------------------------------------------------------------
# GPU part (where torch sees CUDA and the CUDA kernels are built)


@pytest.mark.skipif(not HAVE_GPU_PART, reason="needs a CUDA device and the CUDA kernel library")
def test_gpu_layers(tmp_path):
    json_path, plot_path = tmp_path / "gpu.json", tmp_path / "gpu.png"
    result = invoke("bench", "--device", "cuda", "--shape", "8x16x16", "--batch", "1", "--batch", "2",
                    "--repeat", "3", "--json", json_path, "--plot", plot_path)
    assert result.exit_code == 0, result.output
    data = json.loads(json_path.read_text())
    assert data["cpu_layers"] == [] and len(data["gpu_layers"]) == 2
    assert data["machine"]["gpu"]
    for row in data["gpu_layers"]:
        assert {"ours_fp16", "ours_fp32", "cudnn_fp16"} <= set(row["implementations"])
        for timing in row["implementations"].values():
            check_timing(timing, repeat=3, discarded=3)  # GPU: at least 3 warm-up rounds
        check_ratios({"implementations": row["implementations"],
                      "ratios": {k: v for k, v in row["ratios"].items() if v is not None}})
        space = row["workspace"]
        assert space["im2col_elements_per_image"] == 8 * 9 * 16 * 16
        assert space["ours_bytes"]["fp16"] >= 0
    assert plot_path.read_bytes()[:8] == PNG_MAGIC
