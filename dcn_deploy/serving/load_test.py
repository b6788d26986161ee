"""``dcn-deploy bench --serve URL``: latency and throughput of a running KServe v2 server.

Works against ``dcn-deploy serve`` and NVIDIA Triton alike (tritonclient's HTTP client, binary
tensors). For each concurrency level, that many threads, each with its own client and connection,
send ``requests`` requests in all (after ``warmup`` untimed ones per thread) with one random input
per thread; reported: p50/p90/p99/mean latency of the successful requests (``time.perf_counter``
around each ``infer`` call, so client work is included), throughput (successes per wall-clock
second of the level) and the errors: HTTP error answers and failures below HTTP (a connection refused
or reset), every timed request counted once (``ok + errors == requests``); the untimed warm-up requests
that failed are counted apart (``warmup_errors``, their messages prefixed "warm-up: " in
``first_errors``). Never run as a timed test.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from dcn_deploy.backends.runtime import numpy_dtype
from dcn_deploy.bench.config import command_line

FORMAT = "dcn-deploy-bench-serve/1"
DEFAULT_CONCURRENCY = (1, 4, 16)


class ServeBenchError(ValueError):
    """A bad argument, or the server is not there or not as expected; the message says which."""


def parse_dims(text: str) -> tuple[int, ...]:
    """``1x3x64x80`` -> (1, 3, 64, 80): any rank, every size positive."""
    try:
        dims = tuple(int(d) for d in text.lower().strip().split("x"))
    except ValueError:
        raise ServeBenchError(f"input shape '{text}' is not of the form 1x3x64x80") from None
    if not dims or min(dims) <= 0:
        raise ServeBenchError(f"input shape '{text}': every size must be a positive integer")
    return dims


@dataclass
class ServeBenchConfig:
    url: str
    model: str | None = None
    input_shapes: dict[str, tuple[int, ...]] | tuple[int, ...] | None = None
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    requests: int = 500
    warmup: int = 5
    seed: int = 0
    timeout_s: float = 60.0
    command: str = ""
    extra: dict = field(default_factory=dict)


def _host_port(url: str) -> tuple[str, bool]:
    """tritonclient's ``host:port`` and whether to use TLS, from ``http(s)://host:port`` or ``host:port``."""
    text = url.strip().rstrip("/")
    ssl = text.startswith("https://")
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if not text or "/" in text:
        raise ServeBenchError(f"--serve takes the server's address as http://HOST:PORT, got '{url}'")
    return text, ssl


def request_shapes(inputs: list[dict], given: dict[str, tuple[int, ...]] | tuple[int, ...] | None
                   ) -> dict[str, tuple[int, ...]]:
    """Each input's request shape from the model metadata: ``given`` (one shape for a single-input model,
    or by name), else the metadata's shape with a dynamic axis 0 as 1; any other dynamic axis needs ``given``."""
    shapes = {}
    if isinstance(given, tuple):
        if len(inputs) != 1:
            raise ServeBenchError(f"the model has {len(inputs)} inputs {[i['name'] for i in inputs]}: one "
                                  f"--input-shape cannot say all their shapes")
        given = {inputs[0]["name"]: given}
    given = given or {}
    for entry in inputs:
        name, meta = entry["name"], [int(d) for d in entry["shape"]]
        shape = given.get(name)
        if shape is not None:
            if len(shape) != len(meta) or any(m >= 0 and m != s for m, s in zip(meta, shape)):
                raise ServeBenchError(f"--input-shape {'x'.join(map(str, shape))} does not fit input '{name}' "
                                      f"of shape {meta} (-1: any size)")
        else:
            shape = tuple(1 if (axis == 0 and d < 0) else d for axis, d in enumerate(meta))
            if any(d < 0 for d in shape):
                raise ServeBenchError(f"input '{name}' has dynamic axes {meta}: give --input-shape, e.g. "
                                      f"{'x'.join(str(d if d >= 0 else 64) for d in (1, *meta[1:]))}")
        shapes[name] = tuple(shape)
    return shapes


def _random(shape, datatype: str, rng: np.random.Generator) -> np.ndarray:
    dtype = numpy_dtype(datatype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 8, shape).astype(dtype)


def _error_text(error: Exception) -> str:
    """The server's error message, or the exception's type and text for a failure below HTTP."""
    return str(error) if isinstance(error, InferenceServerException) else f"{type(error).__name__}: {error}"


def _percentiles(times_ms: list[float]) -> dict:
    if not times_ms:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "min_ms": None, "max_ms": None}
    values = np.asarray(times_ms)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(values.mean()),
            "min_ms": float(values.min()), "max_ms": float(values.max())}


def run_serve_benchmark(config: ServeBenchConfig, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the levels of ``config`` against the server; a JSON-ready dict (``levels``: one row per concurrency)."""

    if not config.concurrency or min(config.concurrency) < 1:
        raise ServeBenchError(f"--concurrency must be positive, got {list(config.concurrency)}")
    if config.requests < 1:
        raise ServeBenchError(f"--requests must be positive, got {config.requests}")
    address, ssl = _host_port(config.url)

    def client():
        return httpclient.InferenceServerClient(address, ssl=ssl, connection_timeout=config.timeout_s,
                                                network_timeout=config.timeout_s)

    probe = client()
    try:
        if not probe.is_server_ready():
            raise ServeBenchError(f"the server at {config.url} is not ready")
        server = probe.get_server_metadata()
        model = config.model
        if model is None:
            try:  # Triton's repository extension, which dcn-deploy serve answers too
                index = probe.get_model_repository_index()
            except InferenceServerException:
                index = []
            names = [m["name"] for m in index if m.get("state", "READY") == "READY"]
            if len(names) > 1:
                raise ServeBenchError(f"the server has several models {names}: name one with --model")
            model = names[0] if names else None
        metadata = probe.get_model_metadata(model) if model else None
    except InferenceServerException as error:
        raise ServeBenchError(f"the server at {config.url} answered: {error}") from None
    except (ConnectionError, OSError) as error:
        raise ServeBenchError(f"no KServe v2 server at {config.url}: {error}") from None
    finally:
        probe.close()
    if metadata is None:
        raise ServeBenchError("name the model with --model")
    shapes = request_shapes(metadata["inputs"], config.input_shapes)
    datatypes = {entry["name"]: entry["datatype"] for entry in metadata["inputs"]}
    outputs = [entry["name"] for entry in metadata["outputs"]]

    levels = []
    total = sum(config.concurrency) * config.warmup + len(config.concurrency) * config.requests
    done = [0]
    lock = threading.Lock()

    def tick(text: str) -> None:
        with lock:
            done[0] += 1
            if progress is not None:
                progress(text, done[0], total)

    for concurrency in config.concurrency:
        remaining = [config.requests]
        latencies: list[float] = []
        errors: list[str] = []
        warmup_errors: list[str] = []  # untimed: not among the level's requests (ok + errors == requests)
        text = f"concurrency {concurrency}"
        barrier = threading.Barrier(concurrency + 1)
        failures: list[BaseException] = []

        def worker(index: int) -> None:
            rng = np.random.default_rng([config.seed, concurrency, index])
            try:
                connection = client()
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(error)
                barrier.abort()
                return
            request = []
            for name, shape in shapes.items():
                tensor = httpclient.InferInput(name, list(shape), datatypes[name])
                tensor.set_data_from_numpy(_random(shape, datatypes[name], rng), binary_data=True)
                request.append(tensor)
            wanted = [httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs]
            mine, problems, warm_problems = [], [], []
            try:
                for _ in range(config.warmup):
                    try:
                        connection.infer(model, request, outputs=wanted)
                    except Exception as error:  # noqa: BLE001 - every failure is counted, none lost
                        warm_problems.append(_error_text(error))
                    tick(f"{text}: warm-up")
                barrier.wait()
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            break
                        remaining[0] -= 1
                    start = time.perf_counter()
                    try:
                        connection.infer(model, request, outputs=wanted)
                        mine.append((time.perf_counter() - start) * 1e3)
                    except Exception as error:  # noqa: BLE001 - e.g. a connection reset: counted, not lost
                        problems.append(_error_text(error))
                    tick(text)
            except threading.BrokenBarrierError:
                pass
            finally:
                connection.close()
                with lock:
                    latencies.extend(mine)
                    errors.extend(problems)
                    warmup_errors.extend(warm_problems)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        try:
            barrier.wait()  # every thread warmed up: the level's clock starts
        except threading.BrokenBarrierError:
            raise ServeBenchError(f"could not connect to {config.url}: {failures[0] if failures else '?'}") from None
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        levels.append({"concurrency": concurrency, "requests": config.requests, "ok": len(latencies),
                       "errors": len(errors), "warmup_errors": len(warmup_errors),
                       "first_errors": (sorted(set(errors))[:3]
                                        + [f"warm-up: {text}" for text in sorted(set(warmup_errors))[:3]]),
                       "seconds": seconds,
                       "throughput_rps": len(latencies) / seconds if seconds > 0 else None,
                       **_percentiles(latencies)})

    return {
        "format": FORMAT,
        "url": config.url,
        "model": model,
        "server": server,
        "model_metadata": metadata,
        "input_shapes": {name: list(shape) for name, shape in shapes.items()},
        "settings": {"requests_per_level": config.requests, "warmup_per_thread": config.warmup,
                     "binary_tensors": True, "client": "tritonclient.http, one client per thread", **config.extra},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count(),
                    "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "command": config.command or command_line()},
        "levels": levels,
    }
