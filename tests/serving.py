"""Shared by the serving tests: the demo model at a small size, and ``dcn-deploy serve`` in a subprocess."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

INPUT_SHAPE = (1, 3, 32, 40)  # small: the demo model runs in well under a millisecond


def export_demo(path: Path, dynamic: bool = True) -> Path:
    from dcn_deploy.onnx.recipes import export_recipe

    export_recipe("demo", path, dynamic=dynamic, input_shape=None if dynamic else INPUT_SHAPE)
    return path


def export_rows_model(path: Path) -> Path:
    """An NMS-style model: a DCN feature, its per-image mean ``scores`` (N, 4) and ``rows``, the
    ``torch.nonzero`` indices of its large values (num_selected, 4): axis 0 dynamic but not the batch."""
    import torch

    import dcn_deploy

    class RowsModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dcn = dcn_deploy.DeformConv2d(3, 4, 3, padding=1)
            torch.nn.init.normal_(self.dcn.conv_offset.weight, std=0.1)

        def forward(self, x):
            y = self.dcn(x)
            return y.mean(dim=(2, 3)), torch.nonzero(y > 0.5)

    torch.manual_seed(0)
    dcn_deploy.export_onnx(RowsModel().eval(), (torch.randn(2, 3, 8, 8),), path, output_names=["scores", "rows"])
    return path


def demo_inputs(count: int, seed: int = 0, shape=INPUT_SHAPE) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]


class ServeProcess:
    """``python -m dcn_deploy.cli serve MODEL --port 0 ...`` on loopback; ``url`` once it says it is serving."""

    def __init__(self, model: Path, *args: str, timeout: float = 60.0):
        env = {**os.environ, "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dcn_deploy.cli", "serve", str(model), "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = None
        while self.url is None:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError("dcn-deploy serve did not start:\n" + "".join(self.output))
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/v2/models/", line)
            if match:
                self.url = match.group(1)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> bool:
        """SIGTERM; whether it shut down cleanly: uvicorn finishes, then re-raises the signal (exit -15)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode in (0, -signal.SIGTERM) and "Traceback" not in "".join(self.output)


def run_threads(target, count: int) -> None:
    """``target(index)`` in ``count`` threads at once; returns when all are done."""
    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def memory_mib(pid: int) -> dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of a process, in MiB (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values
