"""scripts/gpu_check.sh without a GPU: the script parses, refuses plainly where there is no GPU,
and its Python parts run on the CPU (the sanitizer cases on the kernels' emulation, the summary
that writes the one JSON and prints the final table)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dcn_deploy.bench.config import IMPLEMENTATIONS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check_summary  # noqa: E402

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_the_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_without_a_gpu_the_script_says_so_and_stops(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "has no CUDA PyTorch or no GPU is visible; nothing to check" in result.stdout
    assert "nothing to check" in (tmp_path / "gpu_check.log").read_text()


def test_steps_that_cannot_fit_the_budget_are_skipped_not_timed_out(tmp_path):
    """A python that claims a GPU, and a 40 s budget: no step has half its limit left or a library to
    test, so each is SKIP with its reason, and the summary still writes gpu_check.json."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/bash\ncase "$*" in *"torch.cuda.is_available() else 1"*) exit 0;; esac\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    build = tmp_path / "build-gpu"
    env = {**os.environ, "PYTHON": str(fake), "OUT": str(tmp_path), "GPU_CHECK_BUDGET_S": "40",
           "GPU_CHECK_BUILD_DIR": str(build), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {s["name"]: s for s in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert all(s["status"] == "SKIP" for s in steps.values()), steps
    assert re.fullmatch(r"\d+s of the 40s budget left, under half its 200s limit",
                        next(s for name, s in steps.items() if name.startswith("build"))["note"])
    assert steps["CUDA kernel tests (pytest)"]["note"] == f"no {build}/lib/libdcn_deploy_cuda.so: not built"
    assert "nothing to check" not in result.stdout and "gpu_check: 0 step(s) failed" in result.stdout


def test_the_sanitizer_cases_run_on_the_emulation():
    pytest.importorskip("dcn_deploy.backends.cuda_kernels").cuda_kernel_library()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_sanitize_cases.py"), "--emulate"],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    refused = result.stdout.count("refused as expected: ")
    launches = int(re.search(r"sanitized cases ran: (\d+) launches", result.stdout).group(1))
    # per case: FP32 once; FP16 default, simt, tensor_core_nhwc and 3 layouts; INT8 2 algorithms x 4 forms.
    # tensor_core_nhwc on planar X runs on groups_of_8 only (C/group % 8 == 0): refused on the other 4.
    assert refused == 4 and launches == 5 * (1 + 6 + 8) - refused


def _steps_tsv(path: Path) -> Path:
    path.write_text("build (sm_90)\tPASS\t80\t0\t200\t\n"
                    "CUDA kernel tests (pytest)\tFAIL\t95\t1\t240\t\n"
                    "compute-sanitizer racecheck\tTIMEOUT\t150\t124\t150\t\n"
                    "TensorRT engine\tSKIP\t0\t\t\tthe tensorrt Python package does not import\n")
    return path


def test_the_summary_writes_one_json_and_prints_the_table(tmp_path, capsys):
    bench = {"gpu_layers": [{"shape": "64x64x64", "batch": 8, "ratios": {
        "ours_fp16/cudnn_fp16": 3.25, "ours_fp16_channels_last/cudnn_fp16": 1.4,
        "torchvision_fp16/ours_fp16": 0.9, "ours_int8/ours_fp16_tensor_core": 0.61}}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    out = tmp_path / "gpu_check.json"
    code = gpu_check_summary.main(["--steps", str(_steps_tsv(tmp_path / "steps.tsv")), "--bench",
                                   str(tmp_path / "bench.json"), "--parity", str(tmp_path / "missing.json"),
                                   "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    written = json.loads(out.read_text())
    assert [s["status"] for s in written["steps"]] == ["PASS", "FAIL", "TIMEOUT", "SKIP"]
    assert written["steps"][2] == {"name": "compute-sanitizer racecheck", "status": "TIMEOUT", "seconds": 150,
                                   "exit_code": 124, "limit_s": 150, "note": ""}
    assert written["passed"] is False and written["parity"] is None and written["bench"] == bench
    assert "1 pass, 1 fail, 1 timeout, 1 skip; 325 s in steps" in printed
    assert "exit 124, limit 150s" in printed and "parity table: not written" in printed
    row = next(line for line in printed.splitlines() if line.startswith("64x64x64"))
    assert row.split()[2:] == ["3.25", "1.40", "0.90", "-", "0.61", "-"]


def test_the_summary_reports_a_truncated_json_instead_of_failing(tmp_path, capsys):
    (tmp_path / "bench.json").write_text('{"gpu_layers": [{"shape": "64x')  # cut off by a timeout
    out = tmp_path / "gpu_check.json"
    code = gpu_check_summary.main(["--steps", str(_steps_tsv(tmp_path / "steps.tsv")), "--bench",
                                   str(tmp_path / "bench.json"), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    written = json.loads(out.read_text())
    assert written["bench"] is None and written["missing"]["bench"].startswith("unreadable (bench.json: ")
    assert "benchmark: unreadable (bench.json: Unterminated string" in printed
    assert "parity table: not written" in printed


def test_the_summary_names_a_malformed_step_line(tmp_path):
    steps = tmp_path / "steps.tsv"
    steps.write_text("build\tMAYBE\t1\t0\t10\t\n")
    with pytest.raises(ValueError, match=r"steps.tsv:1: expected 6 tab-separated fields with a status in"):
        gpu_check_summary.main(["--steps", str(steps), "--json", str(tmp_path / "x.json")])


def test_the_summary_columns_are_benchmark_rows():
    for _, key in gpu_check_summary.RATIO_COLUMNS:
        assert all(name in IMPLEMENTATIONS for name in key.split("/")), key
