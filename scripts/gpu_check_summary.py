#!/usr/bin/env python3
"""The final table and the one JSON of scripts/gpu_check.sh.

    python3 scripts/gpu_check_summary.py --steps STEPS.tsv [--parity P.json] [--bench B.json]
                                         [--log LOG] --json OUT.json

STEPS.tsv has one line per step: name, status (PASS, FAIL, TIMEOUT, SKIP), seconds, exit code,
limit in seconds, note. The JSON holds the steps, the parity table (scripts/gpu_parity.py --json)
and the GPU benchmark rows (dcn-deploy bench --json), whichever exist. The table printed: every
step, then per benchmark row the ratios the targets of issue 22 are stated in (ours FP16 / cuDNN
dense conv <= 1.5, torchvision FP16 / ours >= 3, ours INT8 / ours FP16 <= 0.7), for planar and
channels-last X. Standard library only: it must run wherever the check does.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STATUSES = ("PASS", "FAIL", "TIMEOUT", "SKIP")
# (column title, ratio key in a bench row); the targets of issue 22
RATIO_COLUMNS = (
    ("fp16/cuDNN", "ours_fp16/cudnn_fp16"),
    ("fp16 CL/cuDNN", "ours_fp16_channels_last/cudnn_fp16"),
    ("tv/fp16", "torchvision_fp16/ours_fp16"),
    ("tv/fp16 CL", "torchvision_fp16/ours_fp16_channels_last"),
    ("int8/fp16 TC", "ours_int8/ours_fp16_tensor_core"),
    ("int8 CL/fp16 TC", "ours_int8_channels_last/ours_fp16_tensor_core"),
)


def read_steps(path: Path) -> list[dict]:
    steps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 6 or fields[1] not in STATUSES:
            raise ValueError(f"{path}:{number}: expected 6 tab-separated fields with a status in {STATUSES}, "
                             f"got {line!r}")
        name, status, seconds, code, limit, note = fields
        steps.append({"name": name, "status": status, "seconds": int(seconds),
                      "exit_code": int(code) if code else None, "limit_s": int(limit) if limit else None,
                      "note": note})
    return steps


def read_json(path: Path | None) -> tuple[dict | None, str | None]:
    """(the JSON object at ``path``, None), or (None, why not): the step that writes it did not get
    that far, or stopped in the middle of writing it (a timeout): reported, never raised."""
    if path is None or not path.is_file():
        return None, "not written"
    try:
        data = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError) as error:
        return None, f"unreadable ({path.name}: {error})"
    if not isinstance(data, dict):
        return None, f"unreadable ({path.name}: a JSON {type(data).__name__}, expected an object)"
    return data, None


def ratio_table(bench: dict | None) -> list[str]:
    rows = (bench or {}).get("gpu_layers") or []
    if not rows:
        return []
    header = f"{'shape':<22} {'N':>2} " + " ".join(f"{title:>15}" for title, _ in RATIO_COLUMNS)
    lines = ["", "GPU layer ratios of medians (targets: fp16/cuDNN <= 1.5, tv/fp16 >= 3, int8/fp16 TC <= 0.7)",
             header]
    for row in rows:
        ratios = row.get("ratios", {})
        cells = []
        for _, key in RATIO_COLUMNS:
            value = ratios.get(key)
            cells.append(f"{value:>15.2f}" if isinstance(value, (int, float)) else f"{'-':>15}")
        lines.append(f"{str(row.get('shape')):<22} {row.get('batch', ''):>2} " + " ".join(cells))
    return lines


def summarize(steps: list[dict], parity: dict | None, bench: dict | None,
              problems: dict[str, str] | None = None) -> list[str]:
    """The table; ``problems``: why the parity table or the benchmark is missing (read_json)."""
    problems = problems or {}
    lines = ["gpu_check summary", f"{'step':<40} {'status':<8} {'seconds':>7}  note"]
    for step in steps:
        note = step["note"] or (f"exit {step['exit_code']}, limit {step['limit_s']}s"
                                if step["status"] in ("FAIL", "TIMEOUT") else "")
        lines.append(f"{step['name']:<40} {step['status']:<8} {step['seconds']:>7}  {note}".rstrip())
    counts = {status: sum(s["status"] == status for s in steps) for status in STATUSES}
    lines.append(", ".join(f"{count} {status.lower()}" for status, count in counts.items()) +
                 f"; {sum(s['seconds'] for s in steps)} s in steps")
    if parity is None:
        lines.append(f"parity table: {problems.get('parity', 'not written')}")
    if bench is None:
        lines.append(f"benchmark: {problems.get('bench', 'not written')}")
    return lines + ratio_table(bench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=Path, required=True)
    parser.add_argument("--parity", type=Path)
    parser.add_argument("--bench", type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    steps = read_steps(args.steps)
    (parity, parity_problem), (bench, bench_problem) = read_json(args.parity), read_json(args.bench)
    problems = {name: problem for name, problem in (("parity", parity_problem), ("bench", bench_problem)) if problem}
    print("\n".join(summarize(steps, parity, bench, problems)))
    args.json.write_text(json.dumps({
        "steps": steps,
        "passed": all(s["status"] in ("PASS", "SKIP") for s in steps),
        "log": str(args.log) if args.log else None,
        "parity": parity,
        "bench": bench,
        "missing": problems,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
