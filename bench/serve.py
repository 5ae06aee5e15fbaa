"""Serving benchmark: latency per 320x320 frame of the inference container, ONNX Runtime against eager PyTorch.

    .venv/bin/python bench/serve.py [--requests 300] [--clients 1 8] [--no-endpoint]

The model is the trainer's: ``.local/bench/train/last-model`` (written by ``bench/train.py``) when it is there, else
an untrained ``build_model`` with calibrated BatchNorm statistics (same architecture and cost; see
``tests/inference_model.py``), exported with the trainer's ``export.export`` (``model.ts`` + checked ``model.onnx``)
by ``build_model_dir``: in the trainer's own environment, since the Airflow environment this runs in has no torch.

Each runtime is the container as SageMaker starts it (the Dockerfile's ENTRYPOINT, ``entrypoint.py serve``, in the
inference container's own environment, ``containers/inference/.venv``, as the local SageMaker runs it: gunicorn, one
worker per core, the model loaded once per worker), measured directly on its HTTP port (``POST /invocations``, JPEG
body) with 1 and with 8 concurrent clients (threads, one request in flight each); the two runtimes take turns in
slices, so a change in the load of a shared machine falls on both. The table also has one row through the local
stack (``--no-endpoint`` skips it): InvokeEndpoint with boto3 via the local SageMaker, which proxies each call in
Python on the same two cores: it shows the host's overhead, not the container's. Targets (PASS/FAIL): ONNX p50 <= 25 ms
with 1 client, >= 1.5x faster than eager (p50, 1 client), p99 <= 2x p50 under 8 clients.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local_aws.sagemaker.containers import parse_dockerfile  # noqa: E402
from tests.inference_model import (  # noqa: E402 - the model folder the tests use, made by the trainer's code
    INFERENCE,
    build_model_dir,
    jpeg,
    synthetic_frames,
)

TRAINED = REPO / ".local" / "bench" / "train" / "last-model"
ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"
TARGET_P50_MS, TARGET_SPEEDUP, TARGET_TAIL = 25.0, 1.5, 2.0


def model_folder(root: Path) -> tuple[Path, str]:
    if (TRAINED / "model.pt").is_file() and (TRAINED / "model_config.json").is_file():
        image_size = json.loads((TRAINED / "model_config.json").read_text())["image_size"]
        folder = build_model_dir(root / "model", trained=TRAINED)  # keeps the trained classes and threshold
        return folder, f"trained ({TRAINED.relative_to(REPO)}, image_size {image_size})"
    return build_model_dir(root / "model", 256), "untrained, calibrated (image_size 256)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``entrypoint.py serve`` as SageMaker starts it, on a loopback port."""

    def __init__(self, folder: Path, runtime: str) -> None:
        self.port = free_port()
        image = parse_dockerfile("surgical-mlops/inference", INFERENCE)
        env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **image.env, "SM_MODEL_DIR": str(folder),
               "SAGEMAKER_BIND_TO_PORT": str(self.port), "INFERENCE_BIND_HOST": "127.0.0.1",
               "INFERENCE_RUNTIME": runtime, "INFERENCE_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(image.command(None, ["serve"]), cwd=image.workdir, env=env,
                                        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{runtime} server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                status, _ = post_ping(self.port)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{runtime} server did not answer /ping")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=20)


def post_ping(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def direct_call(port: int):
    def call(body: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}: {data[:200]!r}")
    return call


def run_clients(call, frames: list[bytes], clients: int, requests: int) -> tuple[list[float], float]:
    """``requests`` calls spread over ``clients`` threads (closed loop): latencies in ms and the wall time in s."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = max(1, requests // clients)

    def client(index: int) -> None:
        mine = []
        for i in range(per_client):
            body = frames[(index * 7 + i) % len(frames)]
            started = time.perf_counter()
            call(body)
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started


def summary(latencies: list[float], wall_s: float) -> dict[str, float]:
    values = np.array(latencies)
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
            "fps": len(values) / wall_s, "n": len(values)}


def measure(call, frames: list[bytes], clients: int, requests: int) -> dict[str, float]:
    for body in frames[:10]:  # warm-up: connections, caches, both workers
        call(body)
    return summary(*run_clients(call, frames, clients, requests))


def measure_interleaved(calls: dict[str, object], frames: list[bytes], clients: int, requests: int,
                        rounds: int = 4) -> dict[str, dict[str, float]]:
    """The runtimes take turns in ``rounds`` slices, so a change in the machine's load (it is shared) hits both."""
    for call in calls.values():
        for body in frames[:10]:
            call(body)
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    walls = dict.fromkeys(calls, 0.0)
    for _ in range(rounds):
        for name, call in calls.items():
            values, wall = run_clients(call, frames, clients, max(clients, requests // rounds))
            latencies[name] += values
            walls[name] += wall
    return {name: summary(latencies[name], walls[name]) for name in calls}


def endpoint_row(folder: Path, frames: list[bytes], requests: int) -> dict[str, float]:
    """The ONNX container behind the local SageMaker, called with boto3 InvokeEndpoint (1 client)."""
    from local_aws import bootstrap, stack
    from local_aws.settings import load_settings
    from tests.conftest import free_port as free_ports
    from tests.inference_model import model_archive

    settings = load_settings(home=tempfile.mkdtemp(prefix="bench-serve-stack-"), base_port=free_ports())
    with open(os.devnull, "w") as quiet:
        stdout, sys.stdout = sys.stdout, quiet
        try:
            stack.up(settings, quiet=True)
        finally:
            sys.stdout = stdout
    try:
        s3, sm = bootstrap.client(settings, "s3"), bootstrap.client(settings, "sagemaker")
        runtime = bootstrap.client(settings, "sagemaker-runtime")
        s3.put_object(Bucket="surgical-models", Key="bench/model.tar.gz", Body=model_archive(folder))
        image = bootstrap.image_uri(bootstrap.image_repository(INFERENCE))
        # the pipeline's SageMaker execution role (infra/platform.yaml, which the stack's bootstrap deploys): the
        # local SageMaker refuses a role that does not exist or that SageMaker cannot assume, as AWS does
        sm.create_model(ModelName="bench", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": image, "ModelDataUrl": "s3://surgical-models/bench/model.tar.gz",
            "Environment": {"INFERENCE_LOG_LEVEL": "WARNING"}})
        sm.create_endpoint_config(EndpointConfigName="bench", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "bench", "InitialInstanceCount": 1,
            "InstanceType": "ml.c5.large"}])
        sm.create_endpoint(EndpointName="bench", EndpointConfigName="bench")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="bench", WaiterConfig={"Delay": 0.5,
                                                                                       "MaxAttempts": 240})

        def call(body: bytes) -> None:
            runtime.invoke_endpoint(EndpointName="bench", Body=body, ContentType="image/jpeg")["Body"].read()

        return measure(call, frames, 1, requests)
    finally:
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                stack.down(settings)
            finally:
                sys.stdout = stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--no-endpoint", action="store_true", help="skip the InvokeEndpoint row")
    args = parser.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    folder, origin = model_folder(root)
    frames = [jpeg(f) for f in synthetic_frames(24, 320, 320, seed=13)]
    print(f"model: {origin}; {len(frames)} JPEG frames 320x320 (~{np.mean([len(f) for f in frames]) / 1024:.0f} KB); "
          f"{cpus} CPUs; gunicorn with {cpus} workers x 1 thread")
    results: dict[tuple[str, int], dict[str, float]] = {}
    servers = {}
    try:
        for runtime in ("onnx", "eager"):
            servers[runtime] = Server(folder, runtime)  # an idle sync worker takes no CPU from the other server
        calls = {runtime: direct_call(server.port) for runtime, server in servers.items()}
        for clients in args.clients:
            for runtime, result in measure_interleaved(calls, frames, clients, args.requests).items():
                results[(runtime, clients)] = result
    finally:
        for server in servers.values():
            server.stop()
    rows = [(f"{runtime} (container HTTP)", clients, r) for (runtime, clients), r in results.items()]
    if not args.no_endpoint:
        rows.append(("onnx (InvokeEndpoint, local SageMaker)", 1, endpoint_row(folder, frames, args.requests // 2)))
    print(f"\n{'runtime / path':<40} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} {'frames/s':>9}")
    for name, clients, r in rows:
        print(f"{name:<40} {clients:>7} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['p99'] / r['p50']:>8.2f} {r['fps']:>9.1f}")
    onnx1, eager1 = results[("onnx", min(args.clients))], results[("eager", min(args.clients))]
    onnx_n = results[("onnx", max(args.clients))]
    speedup = eager1["p50"] / onnx1["p50"]
    throughput = onnx_n["fps"] / results[("eager", max(args.clients))]["fps"]
    print(f"\nratio eager/onnx: p50 {speedup:.2f}x (1 client), throughput {throughput:.2f}x ({max(args.clients)} "
          f"clients)")
    checks = [(f"onnx p50 <= {TARGET_P50_MS:g} ms (1 client)", onnx1["p50"] <= TARGET_P50_MS),
              (f"onnx >= {TARGET_SPEEDUP:g}x faster than eager (p50, 1 client)", speedup >= TARGET_SPEEDUP),
              (f"onnx p99 <= {TARGET_TAIL:g}x p50 ({max(args.clients)} clients)",
               onnx_n["p99"] <= TARGET_TAIL * onnx_n["p50"])]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
