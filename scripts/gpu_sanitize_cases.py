#!/usr/bin/env python3
"""Small launches of every CUDA kernel and layout, for compute-sanitizer (scripts/gpu_check.sh).

    python3 scripts/gpu_sanitize_cases.py [--emulate]

FP32 and FP16 on planar X (SIMT, tensor cores, the workspace channels-last variant where
C/group allows), FP16 with X and Y in NHWC padded to 8 (16-byte gathers in place, and one
channel per gather) and NC/32HW32, INT8 with both algorithms, float32 Y and int8 Yq, planar,
NC/32HW32 and NHWC padded to 16. Sanitizers judge the launches; the results are not compared
here (tests/test_cuda_*.py do that). --emulate runs the same calls on the CPU emulation (CI
runs it that way so this script is tested too).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cases import CASES, Case  # noqa: E402

from dcn_deploy.backends.cuda_kernels import CudaKernelError, deform_conv2d_cuda  # noqa: E402

SANITIZED_CASES = (CASES[0], CASES[-1], CASES[-3], Case("odd_channels", n=2, c=13, m=10, h=7, w=9),
                   Case("groups_of_8", n=1, c=16, m=12, h=6, w=5, group=2, offset_group=2))
FP16_LAYOUTS = (("nhwc8", "auto"), ("nhwc8", "tensor_core"), ("nc32hw32", "auto"))
INT8_FORMS = ((None, "nchw"), (0.5, "nchw"), (None, "nc32hw32"), (0.5, "nhwc16"))


def run_cases(emulate: bool) -> int:
    """Launches every form on every case; returns the number of launches."""
    device = "cpu" if emulate else "cuda"
    launches = 0
    for case in SANITIZED_CASES:
        geometry = dict(stride=case.stride, padding=case.pads, dilation=case.dilation, groups=case.group,
                        offset_groups=case.offset_group, emulate=emulate)
        arrays = case.make()
        for dtype in (torch.float32, torch.float16):
            t = {k: (torch.from_numpy(v).to(device, dtype) if v is not None else None) for k, v in arrays.items()}

            def run(**kwargs):
                return deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], mask=t["mask"], **geometry, **kwargs)

            forms = [{}]
            if dtype == torch.float16:
                forms += [dict(algorithm="simt"), dict(algorithm="tensor_core_nhwc")]
                forms += [dict(layout=layout, algorithm=algorithm) for layout, algorithm in FP16_LAYOUTS]
            for form in forms:
                try:
                    run(**form)
                    launches += 1
                except CudaKernelError as error:  # tensor_core_nhwc on planar X needs C/group % 8 == 0
                    if form.get("algorithm") != "tensor_core_nhwc":
                        raise
                    print(f"{case.name}: refused as expected: {error}")
        t8 = {k: (torch.from_numpy(v).to(device) if v is not None else None) for k, v in arrays.items()}
        xq, wq = (t8[k].mul(20).round().clamp(-127, 127).to(torch.int8) for k in ("X", "W"))
        for algorithm in ("tensor_core", "simt"):
            for y_scale, layout in INT8_FORMS:
                deform_conv2d_cuda(xq, t8["offset"], wq, t8["B"], mask=t8["mask"], **geometry, algorithm=algorithm,
                                   x_scale=0.05, w_scale=[0.01], y_scale=y_scale, layout=layout)
                launches += 1
    if not emulate:
        torch.cuda.synchronize()
    return launches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emulate", action="store_true", help="the CPU emulation instead of a GPU")
    args = parser.parse_args(argv)
    print(f"sanitized cases ran: {run_cases(args.emulate)} launches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
