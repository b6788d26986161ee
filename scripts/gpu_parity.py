#!/usr/bin/env python3
"""Parity and timing table of the CUDA kernels, for scripts/gpu_check.sh.

For every configuration: FP32 max |err| / max |ref| and FP16 relative L2 against the
float64 PyTorch reference (on the same inputs), and on a GPU the median kernel time in
FP16 next to torchvision's deform_conv2d (when importable) and cuDNN's dense conv of
the same shape. Exits 1 when a tolerance is broken.

    python3 scripts/gpu_parity.py [--emulate] [--json PATH]

--emulate runs the small configurations through the CPU emulation of the kernel (no
GPU needed; CI runs it that way so this script is tested too).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cases import CASES, Case  # noqa: E402
from dcn_deploy.cuda_kernels import deform_conv2d_cuda  # noqa: E402
from dcn_deploy.ops import deform_conv2d  # noqa: E402

FP32_MAX_REL = 1e-5
FP16_REL_L2 = 1e-3

# Realistic layers (batch 1, 3x3, pad 1; the shapes of issue 7) and the large-coordinate
# case of issue 5 (offsets up to +-8 px on a 200x272 input).
LAYERS = [
    Case("layer_64ch_64x64", n=1, c=64, h=64, w=64, m=64, offset_scale=2.0, seed=31),
    Case("layer_256ch_50x68", n=1, c=256, h=50, w=68, m=256, offset_scale=2.0, seed=32),
    Case("layer_512ch_25x34", n=1, c=512, h=25, w=34, m=512, offset_scale=2.0, seed=33),
    Case("layer_128ch_100x136", n=1, c=128, h=100, w=136, m=128, offset_scale=2.0, seed=34),
    Case("large_coordinates_200x272", n=1, c=8, h=200, w=272, m=16, offset_scale=8.0, seed=35),
]


def tensors(case: Case, device: str, data_dtype: torch.dtype, offset_dtype: torch.dtype) -> dict:
    out = {}
    for name, array in case.make().items():
        if array is None:
            out[name] = None
            continue
        value = torch.from_numpy(array)
        if case.name.startswith("large_coordinates") and name == "offset":
            value = value.clamp(-8, 8)
        out[name] = value.to(device=device, dtype=offset_dtype if name in ("offset", "mask") else data_dtype)
    return out


def kwargs(case: Case) -> dict:
    return dict(stride=case.stride, padding=case.pads, dilation=case.dilation, groups=case.group,
                offset_groups=case.offset_group)


def run_ours(t: dict, case: Case, emulate: bool) -> torch.Tensor:
    return deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], mask=t["mask"], emulate=emulate, **kwargs(case))


def reference(t: dict, case: Case) -> torch.Tensor:
    as64 = {k: (v.double() if v is not None else None) for k, v in t.items()}
    return deform_conv2d(as64["X"], as64["offset"], as64["W"], as64["B"], mask=as64["mask"], **kwargs(case))


def median_ms(function, repeats: int = 30) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timings(case: Case) -> dict:
    """Median FP16 times (ms): ours, torchvision, cuDNN dense conv (channels-last) of the same shape."""
    t = tensors(case, "cuda", torch.float16, torch.float16)
    result = {"ours_fp16_ms": median_ms(lambda: run_ours(t, case, emulate=False))}
    try:
        import torchvision.ops

        result["torchvision_fp16_ms"] = median_ms(lambda: torchvision.ops.deform_conv2d(
            t["X"], t["offset"], t["W"], t["B"], stride=case.stride, padding=(case.pads[0], case.pads[1]),
            dilation=case.dilation, mask=t["mask"]))
    except Exception as error:  # not importable, or no CUDA kernel for this dtype
        result["torchvision_fp16_ms"] = None
        result["torchvision_note"] = f"{type(error).__name__}: {error}"[:120]
    x = t["X"].contiguous(memory_format=torch.channels_last)
    w = t["W"].contiguous(memory_format=torch.channels_last)
    result["cudnn_dense_fp16_ms"] = median_ms(lambda: torch.nn.functional.conv2d(
        x, w, t["B"], stride=case.stride, padding=(case.pads[0], case.pads[1]), dilation=case.dilation,
        groups=case.group))
    return result


def check(case: Case, emulate: bool, timed: bool) -> dict:
    device = "cpu" if emulate else "cuda"
    row: dict = {"case": case.name}
    t32 = tensors(case, device, torch.float32, torch.float32)
    out = run_ours(t32, case, emulate).double()
    ref = reference(t32, case)
    row["fp32_max_rel"] = float((out - ref).abs().max() / ref.abs().max())
    for label, offset_dtype in (("fp16", torch.float16), ("fp16_fp32_offsets", torch.float32)):
        t16 = tensors(case, device, torch.float16, offset_dtype)
        out16 = run_ours(t16, case, emulate).double()
        ref16 = reference(t16, case)
        row[f"{label}_rel_l2"] = float((out16 - ref16).norm() / ref16.norm())
    row["ok"] = (row["fp32_max_rel"] <= FP32_MAX_REL and row["fp16_rel_l2"] <= FP16_REL_L2
                 and row["fp16_fp32_offsets_rel_l2"] <= FP16_REL_L2)
    if timed:
        row.update(timings(case))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="CPU emulation of the kernel, small cases only")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    if not args.emulate and not torch.cuda.is_available():
        print("gpu_parity: torch sees no CUDA device (use --emulate to run the kernel code on the CPU)")
        return 2
    if args.emulate:
        rows = [check(case, emulate=True, timed=False) for case in CASES[:4] + CASES[-1:]]
    else:
        rows = [check(case, emulate=False, timed=False) for case in CASES]
        rows += [check(case, emulate=False, timed=True) for case in LAYERS]

    from rich.console import Console
    from rich.table import Table

    device = "CPU emulation" if args.emulate else torch.cuda.get_device_name()
    table = Table(title=f"CUDA DeformConv kernel vs float64 reference ({device}, workspace 0 bytes)")
    columns = ["case", "fp32 max rel", "fp16 rel L2", "fp16 (fp32 offsets) rel L2"]
    if not args.emulate:
        columns += ["ours fp16 ms", "torchvision fp16 ms", "cuDNN dense fp16 ms"]
    for column in columns:
        table.add_column(column)

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for row in rows:
        cells = [row["case"] + ("" if row["ok"] else " FAIL"), fmt(row["fp32_max_rel"], ".1e"),
                 fmt(row["fp16_rel_l2"], ".1e"), fmt(row["fp16_fp32_offsets_rel_l2"], ".1e")]
        if not args.emulate:
            cells += [fmt(row.get("ours_fp16_ms"), ".3f"), fmt(row.get("torchvision_fp16_ms"), ".3f"),
                      fmt(row.get("cudnn_dense_fp16_ms"), ".3f")]
        table.add_row(*cells)
    Console(width=160).print(table)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "rows": rows}, indent=2))
    failed = [row["case"] for row in rows if not row["ok"]]
    print(f"gpu_parity: {len(rows) - len(failed)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
