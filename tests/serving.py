"""Shared by the serving tests: the demo model at a small size, and ``dcn-deploy serve`` in a subprocess."""
from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
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


# The bundled tritonserver of nvidia-pytriton (scripts/setup.sh installs it into .venv-triton; it pins
# numpy < 2, hence its own environment). Its Python backend's stub embeds the system's libpython of that
# Python version and finds its packages through the first python3 on PATH: .venv-triton's, where setup.sh
# installed onnxruntime and this project (--no-deps).
REPO = Path(__file__).resolve().parents[1]
TRITON_ENV = REPO / ".venv-triton"


def tritonserver_unavailable() -> str | None:
    """Why the bundled tritonserver cannot run here (None: it can)."""
    packages = sorted(TRITON_ENV.glob("lib/python3.*/site-packages/pytriton/tritonserver"))
    if not packages:
        log = REPO / ".venv" / ".triton-install.log"
        return (f"no tritonserver in {TRITON_ENV} (./scripts/setup.sh installs nvidia-pytriton there"
                + (f"; its log {log} ends: {log.read_text()[-300:]!r}" if log.is_file() else "") + ")")
    version = packages[0].parents[2].name.removeprefix("python")
    stub = packages[0] / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        return f"nvidia-pytriton has no Python backend stub for Python {version} ({stub})"
    missing = [line.split()[0] for line in subprocess.run(
        ["ldd", str(stub)], capture_output=True, text=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(packages[0].parents[1] / "nvidia_pytriton.libs")}).stdout.splitlines()
        if "not found" in line]
    if missing:
        return f"the Python backend stub for Python {version} needs {missing} (e.g. Debian's libpython{version})"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class TritonServer:
    """The bundled tritonserver on ``repository`` (``--model-control-mode none``) on free loopback ports;
    ``url`` once ``/v2/health/ready`` answers 200. Always :meth:`stop` it (it kills after a grace period)."""

    def __init__(self, repository: Path, workdir: Path, timeout: float = 120.0):
        server = sorted(TRITON_ENV.glob("lib/python3.*/site-packages/pytriton/tritonserver"))[0]
        version = server.parents[2].name.removeprefix("python")
        backends = workdir / "backends"
        (backends / "python").mkdir(parents=True, exist_ok=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            link = backends / "python" / name
            if not link.exists():
                link.symlink_to(server / "backends" / "python" / name)
        stub = backends / "python" / "triton_python_backend_stub"
        if not stub.exists():  # the backend runs the stub from its own directory
            stub.symlink_to(server / "python_backend_stubs" / version / "triton_python_backend_stub")
        self.log_path = workdir / "tritonserver.log"
        env = {**os.environ, "LD_LIBRARY_PATH": str(server.parents[1] / "nvidia_pytriton.libs"),
               "PATH": f"{TRITON_ENV / 'bin'}:{os.environ.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        http, grpc, metrics = _free_ports(3)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [str(server / "bin" / "tritonserver"), f"--model-repository={repository}",
                 f"--backend-directory={backends}", "--model-control-mode=none", f"--http-port={http}",
                 f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--exit-timeout-secs=5",
                 # shared-memory regions of this server only: other tritonservers may run beside it
                 f"--backend-config=python,shm-region-prefix-name=dcn{os.getpid()}x{http}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tritonserver was not ready after {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.25)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """SIGTERM to the server's process group (its Python stubs included), SIGKILL after 20 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # stubs left behind by a crash
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
