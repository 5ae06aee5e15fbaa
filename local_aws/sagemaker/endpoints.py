"""Endpoints: each production variant's container as a long-lived inference server, InvokeEndpoint, data capture.

A variant's model data (``model.tar.gz``) is unpacked into a root that stands in for ``/opt/ml``, its container
runs ``<entrypoint> serve`` on a free loopback port (``SAGEMAKER_BIND_TO_PORT``, as SageMaker tells multi-container
hosts), and the variant is ready only once ``GET /ping`` answers 200. Updates are blue/green: the new variants start
and pass their health check before traffic switches; the old ones stop only after the switch. If the new ones fail,
the old keep serving. Captured requests and responses go to S3 in SageMaker's data capture format and key layout.
With ``LOCAL_AWS_IAM=enforce`` a variant runs as its model's ``ExecutionRoleArn``: the model data is downloaded and
the container started with the role's temporary credentials (data capture is written by the service itself).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import urllib3

from local_aws.sagemaker import authz
from local_aws.sagemaker.containers import ContainerRegistry
from local_aws.sagemaker.exceptions import ModelError, ValidationException
from local_aws.sagemaker.logs import LogStream
from local_aws.sagemaker.resources import Resources
from local_aws.sagemaker.runners import base_environment, split_s3
from local_aws.settings import ACCOUNT_ID, REGION, StackSettings, iam_enforced

log = logging.getLogger("local_aws.sagemaker.endpoints")
CAPTURE_FLUSH_S = 5.0  # buffered capture records reach S3 at most this long after they were recorded (+1 s)
_http = urllib3.PoolManager(maxsize=16, retries=False)


class HealthCheckFailed(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class VariantServer:
    endpoint: str
    variant: str
    model: str
    weight: float
    port: int
    process: subprocess.Popen[bytes]
    root: Path
    log_stream: LogStream
    instance_id: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self.log_stream.flush()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Deployment:
    """What an endpoint serves now: its config and running variants."""

    config_name: str
    variants: list[VariantServer]
    capture: CaptureWriter | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class CaptureWriter:
    """SageMaker data capture: JSON lines under ``<dest>/<endpoint>/<variant>/yyyy/mm/dd/hh/``, flushed in files."""

    def __init__(self, endpoint: str, config: dict[str, Any], s3: Any) -> None:
        self.endpoint, self.s3 = endpoint, s3
        self.destination = config["DestinationS3Uri"].rstrip("/")
        self.sampling = config.get("InitialSamplingPercentage", 100)
        modes = {o["CaptureMode"] for o in config.get("CaptureOptions", [])}
        self.capture_input, self.capture_output = "Input" in modes, "Output" in modes
        content_types = config.get("CaptureContentTypeHeader", {})
        self.json_types = set(content_types.get("JsonContentTypes", []))
        self.csv_types = set(content_types.get("CsvContentTypes", []))
        self._buffers: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        # Records reach S3 within seconds even when traffic stops (AWS: within minutes): a flusher thread, so a
        # monitor reading the last requests' hour does not miss what is still buffered.
        threading.Thread(target=self._flush_periodically, name=f"capture-{endpoint}", daemon=True).start()

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                due = any(self._buffers.values()) and time.monotonic() - self._last_flush > CAPTURE_FLUSH_S
            if due:
                try:
                    self.flush()
                except Exception:  # the next record or tick tries again; the records are lost only on exit
                    log.exception("data capture flush of %s failed", self.endpoint)

    def _encode(self, content_type: str, data: bytes) -> dict[str, str]:
        if content_type in self.json_types:
            return {"data": data.decode(errors="replace"), "encoding": "JSON"}
        if content_type in self.csv_types:
            return {"data": data.decode(errors="replace"), "encoding": "CSV"}
        return {"data": base64.b64encode(data).decode(), "encoding": "BASE64"}

    def record(self, variant: str, request_type: str, request: bytes, response_type: str, response: bytes,
               inference_id: str | None) -> None:
        if random.uniform(0, 100) >= self.sampling:  # noqa: S311 - sampling, not security
            return
        capture: dict[str, Any] = {}
        if self.capture_input:
            capture["endpointInput"] = {"observedContentType": request_type, "mode": "INPUT",
                                        **self._encode(request_type, request)}
        if self.capture_output:
            capture["endpointOutput"] = {"observedContentType": response_type, "mode": "OUTPUT",
                                         **self._encode(response_type, response)}
        metadata = {"eventId": str(uuid.uuid4()), "inferenceTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if inference_id:
            metadata["inferenceId"] = inference_id
        line = json.dumps({"captureData": capture, "eventMetadata": metadata, "eventVersion": "0"})
        with self._lock:
            self._buffers.setdefault(variant, []).append(line)
            due = (time.monotonic() - self._last_flush > CAPTURE_FLUSH_S
                   or sum(map(len, self._buffers.values())) > 200)
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            buffers, self._buffers = self._buffers, {}
            self._last_flush = time.monotonic()
        stamp = datetime.now(UTC)
        for variant, lines in buffers.items():
            if not lines:
                continue
            bucket, prefix = split_s3(f"{self.destination}/{self.endpoint}/{variant}/{stamp:%Y/%m/%d/%H}")
            key = f"{prefix}/{stamp:%M-%S}-{stamp.microsecond // 1000:03d}-{uuid.uuid4()}.jsonl"
            self.s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())


class EndpointRuntime:
    """The running side of endpoints: start/stop variant servers, route invocations."""

    def __init__(self, resources: Resources, registry: ContainerRegistry, settings: StackSettings) -> None:
        self.resources, self.registry, self.settings = resources, registry, settings
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.Lock()
        self._s3 = boto3.client("s3")
        self.health_timeout_s = float(os.environ.get("LOCAL_SAGEMAKER_HEALTH_TIMEOUT", "120"))

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def deploy(self, endpoint: str, config_name: str) -> None:
        """Start the config's variants and switch the endpoint to them (blue/green); raises if they fail."""
        config = self.resources.describe("EndpointConfig", config_name)
        started: list[VariantServer] = []
        try:
            for variant in config["ProductionVariants"]:
                started.append(self._start_variant(endpoint, variant))
        except Exception:
            for server in started:
                server.stop()
            raise
        capture_config = config.get("DataCaptureConfig")
        capture = (CaptureWriter(endpoint, capture_config, self._s3)
                   if capture_config and capture_config.get("EnableCapture", True) else None)
        with self._lock:
            old = self._deployments.get(endpoint)
            self._deployments[endpoint] = Deployment(config_name, started, capture)
        if old:
            self._retire(old)

    def undeploy(self, endpoint: str) -> None:
        with self._lock:
            old = self._deployments.pop(endpoint, None)
        if old:
            self._retire(old)

    def shutdown(self) -> None:
        for name in list(self._deployments):
            self.undeploy(name)

    def _retire(self, deployment: Deployment) -> None:
        with deployment.lock:  # in-flight invocations of the old variants finish first
            if deployment.capture:
                deployment.capture.flush()
            for server in deployment.variants:
                server.stop()

    def _start_variant(self, endpoint: str, variant: dict[str, Any]) -> VariantServer:
        model = self.resources.describe("Model", variant["ModelName"])
        container = model.get("PrimaryContainer") or model["Containers"][0]
        image = self.registry.resolve(container["Image"])
        instance_id = f"i-{uuid.uuid4().hex[:17]}"
        root = self.settings.home / "sagemaker" / "endpoints" / endpoint / f"{variant['VariantName']}-{instance_id}"
        (root / "model").mkdir(parents=True)
        credentials: dict[str, str] = {}
        s3 = self._s3
        if iam_enforced() and model.get("ExecutionRoleArn"):  # as SageMaker: the model's role fetches and runs it
            try:
                credentials = authz.role_credentials(model["ExecutionRoleArn"])
            except authz.RoleAssumptionError as exc:
                raise HealthCheckFailed(str(exc)) from exc
            s3 = authz.s3_client(credentials)
        if container.get("ModelDataUrl"):
            bucket, key = split_s3(container["ModelDataUrl"])
            archive = root / "model.tar.gz"
            s3.download_file(bucket, key, str(archive))
            with tarfile.open(archive) as tar:
                tar.extractall(root / "model", filter="data")
            archive.unlink()
        port = _free_port()
        env = base_environment(root, image, container.get("Environment", {}))
        env.update(credentials)
        env.update({"SAGEMAKER_BIND_TO_PORT": str(port), "SM_MODEL_DIR": str(root / "model"),
                    "SAGEMAKER_ENDPOINT_NAME": endpoint, "SAGEMAKER_VARIANT_NAME": variant["VariantName"]})
        stream = LogStream(f"/aws/sagemaker/Endpoints/{endpoint}", f"{variant['VariantName']}/{instance_id}")
        cwd = image.workdir if image.workdir and image.workdir.exists() else root
        process = subprocess.Popen(image.command(None, ["serve"]), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=_pump, args=(process, stream), daemon=True).start()
        server = VariantServer(endpoint, variant["VariantName"], variant["ModelName"],
                               float(variant.get("InitialVariantWeight", 1.0)), port, process, root, stream,
                               instance_id)
        try:
            self._wait_healthy(server)
        except HealthCheckFailed:
            server.stop()
            raise
        return server

    def _wait_healthy(self, server: VariantServer) -> None:
        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            if not server.alive():
                raise HealthCheckFailed(
                    f"The primary container for production variant {server.variant} did not pass the ping health "
                    f"check: the container exited with code {server.process.returncode}. Please check CloudWatch "
                    f"logs for this endpoint.")
            try:
                response = _http.request("GET", f"{server.url}/ping", timeout=2.0)
                if response.status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.2)
        raise HealthCheckFailed(
            f"The primary container for production variant {server.variant} did not pass the ping health check "
            f"within {self.health_timeout_s:.0f} s. Please check CloudWatch logs for this endpoint.")

    # -- invocations ------------------------------------------------------------------------------------------------
    def invoke(self, endpoint: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            deployment = self._deployments.get(endpoint)
        if deployment is None:
            raise ValidationException(f"Endpoint {endpoint} of account {ACCOUNT_ID} not found.")
        with deployment.lock:
            server = self._pick(deployment, headers.get("X-Amzn-SageMaker-Target-Variant"))
            content_type = headers.get("Content-Type", "application/octet-stream")
            forward = {"Content-Type": content_type}
            for name in ("Accept", "X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Inference-Id"):
                if headers.get(name):
                    forward[name] = headers[name]
            response = _http.request("POST", f"{server.url}/invocations", body=body, headers=forward,
                                     timeout=urllib3.Timeout(connect=2.0, read=60.0))
            out_type = response.headers.get("Content-Type", "application/octet-stream")
            if response.status >= 400:
                arn = (f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{endpoint}")
                text = response.data.decode(errors="replace")
                raise ModelError(
                    f"Received client error ({response.status}) from primary with message \"{text}\". See "
                    f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}#logEventViewer:"
                    f"group=/aws/sagemaker/Endpoints/{endpoint} in account {ACCOUNT_ID} for more information.",
                    response.status, text, arn)
            if deployment.capture:
                deployment.capture.record(server.variant, content_type, body, out_type, response.data,
                                          headers.get("X-Amzn-SageMaker-Inference-Id"))
            out_headers = {"Content-Type": out_type, "x-Amzn-Invoked-Production-Variant": server.variant}
            if response.headers.get("X-Amzn-SageMaker-Custom-Attributes"):
                out_headers["X-Amzn-SageMaker-Custom-Attributes"] = response.headers[
                    "X-Amzn-SageMaker-Custom-Attributes"]
            return 200, out_headers, response.data

    @staticmethod
    def _pick(deployment: Deployment, target: str | None) -> VariantServer:
        if target:
            for server in deployment.variants:
                if server.variant == target:
                    return server
            raise ValidationException(f"Target variant {target} not found for this endpoint.")
        weights = [max(s.weight, 0.0) for s in deployment.variants]
        if sum(weights) <= 0:
            return deployment.variants[0]
        return random.choices(deployment.variants, weights=weights)[0]  # noqa: S311 - traffic split

    def current_config(self, endpoint: str) -> str | None:
        with self._lock:
            deployment = self._deployments.get(endpoint)
        return deployment.config_name if deployment else None


def _pump(process: subprocess.Popen[bytes], stream: LogStream) -> None:
    assert process.stdout is not None
    for raw in process.stdout:
        stream.write(raw.decode(errors="replace").rstrip("\n"))
    stream.flush()
