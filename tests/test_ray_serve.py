"""``dcn-deploy serve --engine ray`` on a real Ray cluster of two nodes (``ray.cluster_utils.Cluster``: two
raylets on this machine, one logical CPU and an 80 MiB object store each, so one replica fits per node).

The CLI runs as a subprocess connected to the cluster (``--ray-address``); this process joins the cluster
too, to kill a replica's actor. Answers are compared bitwise with direct ONNX Runtime; requests that need
the response headers (which replica and node answered) go through urllib3 with tritonclient's own request
and response codecs. Skipped where Ray Serve is not installed (the optional extra "ray" of requirements.txt).
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
import urllib3
from serving import ServeProcess, demo_inputs, run_threads

from dcn_deploy.backends.load import load_runtime
from dcn_deploy.serving.batcher import DynamicBatcher
from dcn_deploy.serving.ray_config import NODE_HEADER, REPLICA_HEADER, RayServeSettings

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (the optional extra 'ray' of requirements.txt; "
                                        "scripts/setup.sh logs why in .venv/.ray-install.log)")
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from dcn_deploy.serving import ray_app  # noqa: E402 - needs Ray

APP_NAME = "demo"  # the CLI's application is named after the model unless --app-name says otherwise

INPUTS = demo_inputs(8, seed=21)
NODE = dict(num_cpus=1, object_store_memory=80 << 20)
START_TIMEOUT_S = 180  # Ray's start and a deployment, on two shared cores


@pytest.fixture(scope="module")
def expected(serving_onnx):
    with load_runtime(serving_onnx) as runtime:
        return [runtime.run({"x": x})["logits"] for x in INPUTS]


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes; always torn down (the driver, then every raylet), whatever the tests did."""
    # a short folder: Ray's unix sockets live under it and their paths must stay under 107 bytes
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    nodes = Cluster(initialize_head=False, shutdown_at_exit=True)
    try:
        nodes.add_node(**NODE, temp_dir=temp, include_dashboard=False)
        nodes.add_node(**NODE)
        nodes.wait_for_nodes(timeout=60)
        ray.init(address=nodes.address, logging_level="WARNING")
        yield nodes
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            nodes.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def node_ids() -> set[str]:
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def cluster_state() -> str:
    """What Serve and Ray say, for a failure's message."""
    try:
        application = serve.status().applications.get(APP_NAME)
        deployments = {name: (d.status, dict(d.replica_states), d.message)
                       for name, d in (application.deployments.items() if application else [])}
        return f"deployments {deployments}, free resources {ray.available_resources()}"
    except Exception as error:  # noqa: BLE001 - only a diagnostic
        return f"no cluster state ({error!r})"


def ray_serve(model, *args: str) -> ServeProcess:
    # a 10 s request timeout: a request Ray's proxy retries without its body (after a replica died) ends in
    # 408 after it, and the test waits for every request
    return ServeProcess(model, "--engine", "ray", "--threads", "1", "--max-delay-ms", "2", "--request-timeout-s", "10",
                        *args, timeout=START_TIMEOUT_S)


def stop(served: ServeProcess) -> None:
    """SIGTERM: the CLI deletes its application and exits 0 (Ray's own log lines may carry tracebacks of the
    killed replica, so the output is not searched for them)."""
    served.stop()
    assert served.process.returncode == 0, "".join(served.output[-40:])
    assert APP_NAME not in serve.status().applications


class Client:
    """KServe v2 requests through urllib3 (to read the replica headers), bodies made and read by tritonclient."""

    def __init__(self, url: str):
        self.url, self.http = url, urllib3.PoolManager(maxsize=32, retries=False, timeout=60.0)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, str, str]:
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            [tensor], outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)])
        headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
        response = self.http.request("POST", f"{self.url}/v2/models/demo/infer", body=body, headers=headers)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.data[:200]!r}")
        result = httpclient.InferenceServerClient.parse_response_body(
            response.data, header_length=response.headers.get("Inference-Header-Content-Length"))
        return result.as_numpy("logits"), response.headers[REPLICA_HEADER], response.headers[NODE_HEADER]


class Load:
    """``threads`` clients sending requests over INPUTS until stopped: every request ends up answered right,
    answered wrong, or failed with an error the client saw (nothing is dropped without a count)."""

    def __init__(self, client: Client, expected, threads: int):
        self.client, self.expected = client, expected
        self.sent = self.right = 0
        self.wrong, self.errors, self.replicas = [], [], []
        self.lock, self.stopping = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(threads)]

    def _work(self, index: int) -> None:
        request = 0
        while not self.stopping.is_set():
            which = (index + request) % len(INPUTS)
            request += 1
            with self.lock:
                self.sent += 1
            try:
                got, replica, node = self.client.infer(INPUTS[which])
            except Exception as error:  # noqa: BLE001 - counted
                with self.lock:
                    self.errors.append(repr(error)[:200])
                continue
            with self.lock:
                self.replicas.append((time.monotonic(), replica, node))
                if np.array_equal(got, self.expected[which]):
                    self.right += 1
                else:
                    self.wrong.append((index, which))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(90)

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what} within {timeout} s ({self.summary()}; {cluster_state()})"
            time.sleep(0.1)

    def summary(self) -> str:
        return f"{self.sent} sent, {self.right} right, {len(self.wrong)} wrong, {len(self.errors)} errors " \
               f"{sorted(set(self.errors))[:3]}"


def test_explicit_settings_win_over_environment(monkeypatch, serving_onnx):
    """DCN_DEPLOY_RAY_* variables fill in only what the builder was not given: the CLI's settings (every one
    of them explicit, defaults included) are deployed as they are."""
    monkeypatch.setenv("DCN_DEPLOY_RAY_REPLICAS", "4")
    monkeypatch.setenv("DCN_DEPLOY_RAY_MAX_BATCH_SIZE", "2")
    settings = RayServeSettings(str(serving_onnx), replicas=1)
    deployment = ray_app.application(settings)._bound_deployment
    assert deployment.num_replicas == 1
    # what each replica builds its settings from (it reads no variables itself)
    assert RayServeSettings.from_args(deployment.init_args[0], environ={}).max_batch_size == 8
    # the builder alone (serve run, a RayService) still reads the variables for what it was not given
    assert ray_app.app({"model": str(serving_onnx)})._bound_deployment.num_replicas == 4


def test_a_running_application_or_route_prefix_is_refused():
    running = {"demo": "/", "other": "/other"}
    with pytest.raises(ValueError, match="application named 'demo' runs on this cluster already: pass --app-name"):
        ray_app.check_free(running, "demo", "/second")
    with pytest.raises(ValueError, match="route prefix '/' is used by the Ray Serve application 'demo'.*"
                                         "--route-prefix \\(e.g. /second\\)"):
        ray_app.check_free(running, "second", "/")
    ray_app.check_free(running, "second", "/second")  # a name and a prefix of its own: deployed beside them
    ray_app.check_free({"no-http": None}, "demo", "/")  # an application without HTTP takes no prefix


# The bare object's own garbage collection calls Ray's async __del__ wrapper once more, unawaited (an actor's
# is awaited by Serve): that coroutine's warning is expected here.
@pytest.mark.filterwarnings("ignore:coroutine .*__del__' was never awaited:RuntimeWarning")
def test_a_replica_going_away_releases_its_runtime(serving_onnx):
    """What Serve calls when it scales a replica down (its __del__, after the ASGI lifespan shutdown, which
    never ran here): the batcher's threads end and the runtime is closed."""
    replica = object.__new__(ray_app.DcnModel.func_or_class)  # no Ray actor: only the attributes __del__ reads
    replica.runtime = load_runtime(serving_onnx)
    replica.batcher = DynamicBatcher(replica.runtime, workers=2)

    async def scale_down():
        replica.batcher.start()
        assert await replica.batcher.infer({"x": INPUTS[0]}, ["logits"])
        await replica.__del__()

    asyncio.run(scale_down())
    assert replica.batcher._tasks == []
    with pytest.raises(Exception, match="closed"):
        replica.runtime.run({"x": INPUTS[0]})


def test_local_ray_serves_and_stops_cleanly(serving_onnx, expected):
    """Without --ray-address the CLI starts its own Ray, answers like ONNX Runtime, and on SIGTERM deletes the
    application, stops that Ray and exits 0 (runs before the cluster exists)."""
    served = ray_serve(serving_onnx, "--replicas", "1")
    try:
        got, replica, node = Client(served.url).infer(INPUTS[0])
        np.testing.assert_array_equal(got, expected[0])
        assert replica.startswith(f"SERVE_REPLICA::{APP_NAME}#DcnModel#") and node
    finally:
        served.stop()
    assert served.process.returncode == 0, "".join(served.output[-40:])
    assert "SIGTERM received" not in "".join(served.output)  # Ray's crash handler did not take the signal


def test_two_nodes_tritonclient_spread_and_a_killed_replica(cluster, serving_onnx, expected, report_figure):
    """Two replicas, one per node: tritonclient's answers equal ONNX Runtime's (2000 requests at concurrency
    16, zero errors), requests reach both replicas on both nodes, and with one replica's actor killed under
    load every request is answered right or fails visibly, none wrong, until Ray's replacement answers."""
    assert len(node_ids()) == 2
    # Ray's proxy (on the head node) prefers the replica on its own node until that one has
    # max_ongoing_requests in progress: 4 each, so that 8 clients reach both
    served = ray_serve(serving_onnx, "--ray-address", cluster.address, "--replicas", "2", "--max-ongoing-requests", "4")
    try:
        connection = httpclient.InferenceServerClient(served.address)
        assert connection.is_server_ready() and connection.is_model_ready("demo")
        assert connection.get_model_metadata("demo")["inputs"] == [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
        connection.close()

        problems, answered = [], [0]
        lock = threading.Lock()

        def work(index: int) -> None:
            client = httpclient.InferenceServerClient(served.address, network_timeout=120.0)
            try:
                for request in range(125):
                    which = (index + request) % len(INPUTS)
                    tensor = httpclient.InferInput("x", list(INPUTS[which].shape), "FP32")
                    tensor.set_data_from_numpy(INPUTS[which], binary_data=request % 4 != 0)
                    try:
                        got = client.infer("demo", [tensor]).as_numpy("logits")
                        ok = np.array_equal(got, expected[which])
                    except Exception as error:  # noqa: BLE001 - counted, the test fails below
                        ok, got = False, error
                    with lock:
                        answered[0] += 1
                        if not ok:
                            problems.append((index, request, repr(got)[:200]))
            finally:
                client.close()

        start = time.perf_counter()
        run_threads(work, 16)
        seconds = time.perf_counter() - start
        assert answered[0] == 2000 and problems == []
        report_figure(f"ray serve, 2 nodes x 1 replica: 2000 requests at concurrency 16 through tritonclient, "
                      f"0 errors, {2000 / seconds:.0f} req/s")

        client = Client(served.url)
        with Load(client, expected, threads=8) as load:
            load.wait_for(lambda: len({r for _, r, _ in load.replicas}) >= 2 and load.right >= 100, 60,
                          "two replicas answering")
            before = {(replica, node) for _, replica, node in load.replicas}
            assert len({replica for replica, _ in before}) == 2 and {node for _, node in before} == node_ids()

            victim = load.replicas[-1][1]
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            killed_at = time.monotonic()
            load.wait_for(lambda: any(t > killed_at and r not in {v for v, _ in before}
                                      for t, r, _ in load.replicas), 90, "a new replica answering after the kill")
            after = load.right
            load.wait_for(lambda: load.right >= after + 50, 30, "50 more answers")
        assert load.wrong == []
        assert load.sent == load.right + len(load.errors), load.summary()
        report_figure(f"ray serve, replica killed under load (8 clients): {load.summary()}; Ray replaced it")
    finally:
        stop(served)


def test_autoscaling_from_one_to_two_replicas_under_load(cluster, serving_onnx, expected, report_figure):
    """Autoscaling 1..2 replicas aiming at 1 request in progress each: one replica answers at rest, a second
    one starts under 8 concurrent clients; every answer is right, no request fails."""
    # --max-ongoing-requests 4: 8 clients overflow the replica on the proxy's node (see above), so the new
    # replica's answers show in the headers wherever Ray placed it
    served = ray_serve(serving_onnx, "--ray-address", cluster.address, "--min-replicas", "1", "--max-replicas", "2",
                       "--target-ongoing-requests", "1", "--max-ongoing-requests", "4")
    try:
        client = Client(served.url)
        at_rest = {client.infer(INPUTS[i % len(INPUTS)])[1] for i in range(20)}
        assert len(at_rest) == 1
        with Load(client, expected, threads=8) as load:
            start = time.monotonic()
            load.wait_for(lambda: len({r for _, r, _ in load.replicas}) >= 2, 90, "a second replica")
            scaled_after = time.monotonic() - start
        assert load.wrong == [] and load.errors == [] and load.sent == load.right
        assert {r for _, r, _ in load.replicas} > at_rest
        report_figure(f"ray serve autoscaling: 1 -> 2 replicas {scaled_after:.1f} s into the load; {load.summary()}")
    finally:
        stop(served)
