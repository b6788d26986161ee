#!/usr/bin/env python3
"""Load figures of the three servers on this machine, one after the other, same model, same load.

    .venv/bin/python scripts/serve_engines.py [--input-shape 1x3x64x80] [--requests 1000] [-o DIR]

Servers (each with two model runs at once, ONNX Runtime CPU, one intra-op thread per run):

=========================  =====================================================================
``dcn-deploy serve``       ``--threads 1 --workers 2`` (this project's server and batcher)
Ray Serve                  ``--engine ray --replicas 2 --threads 1 --workers 1`` (a local one-node
                           Ray: its HTTP proxy, two replicas); skipped when the ``ray`` extra is absent
tritonserver               ``triton-repo --backend python --instances 2`` on the bundled tritonserver
                           (.venv-triton); skipped when it cannot run here
=========================  =====================================================================

The load is ``dcn-deploy bench --serve`` (binary tensors) at 1, 4 and 16 clients; one JSON per server
under ``-o`` and a Markdown table on stdout. Client threads share the machine's cores with the server,
so on a small machine the figures say as much about the machine as about the server.
"""
from __future__ import annotations

import argparse
import os
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# The launchers the serving tests use (a server in a subprocess, the bundled tritonserver): one copy.
from serving import ServeProcess, TritonServer, export_demo, tritonserver_unavailable  # noqa: E402

CONCURRENCY = (1, 4, 16)


def bench(url: str, shape: str, requests: int, out: Path) -> list[dict]:
    command = [sys.executable, "-m", "dcn_deploy.cli", "bench", "--serve", url, "--input-shape", shape,
               "--requests", str(requests), "--json", str(out)]
    for clients in CONCURRENCY:
        command += ["--concurrency", str(clients)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})
    return json.loads(out.read_text())["levels"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-shape", default="1x3x64x80")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "benchmarks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="dcn-deploy-serve-engines-") as tmp:
        tmp = Path(tmp)
        model = export_demo(tmp / "demo.onnx")
        servers = [("dcn-deploy serve", "serve_engines_dcn_deploy.json", ("--threads", "1", "--workers", "2"))]
        if importlib.util.find_spec("ray") is not None:
            servers.append(("Ray Serve (--engine ray)", "serve_engines_ray.json",
                            ("--engine", "ray", "--replicas", "2", "--threads", "1", "--workers", "1")))
        else:
            print("Ray Serve: skipped (the optional extra ray is not installed)", file=sys.stderr)
        for label, name, options in servers:
            served = ServeProcess(model, *options, timeout=180)
            try:
                rows += [(label, level) for level in bench(served.url, args.input_shape, args.requests,
                                                           args.out / name)]
            finally:
                served.stop()
        reason = tritonserver_unavailable()
        if reason is None:
            repo = tmp / "repo"
            subprocess.run([sys.executable, "-m", "dcn_deploy.cli", "triton-repo", str(model), "-o", str(repo),
                            "--backend", "python", "--instances", "2"], check=True, stdout=subprocess.DEVNULL)
            triton = TritonServer(repo, tmp)
            try:
                rows += [("tritonserver (Python backend)", level) for level in
                         bench(triton.url, args.input_shape, args.requests, args.out / "serve_engines_triton.json")]
            finally:
                triton.stop()
        else:
            print(f"tritonserver: skipped ({reason})", file=sys.stderr)
    print("| server | clients | requests | errors | p50 ms | p99 ms | req/s |")
    print("|---|---|---|---|---|---|---|")
    for label, level in rows:
        print(f"| {label} | {level['concurrency']} | {level['requests']} | {level['errors']} | "
              f"{level['p50_ms']:.2f} | {level['p99_ms']:.2f} | {level['throughput_rps']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
