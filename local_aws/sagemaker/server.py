"""The wire protocol of the local SageMaker: an HTTP server on loopback speaking what boto3 speaks to AWS.

Control plane: JSON 1.1, ``POST /`` with ``X-Amz-Target: SageMaker.<Operation>``; every request is validated
against botocore's model (``validation``) and SageMaker's documented rules (``rules``: KMS keys, instance storage,
time limits, paths) before the backend sees it; errors are ``{"__type", "message"}`` with AWS's status codes.
Runtime: REST, ``POST /endpoints/<name>/invocations`` (the ``sagemaker-runtime`` client), errors with the
``x-amzn-ErrorType`` header as the rest-json protocol carries them. ``GET /ping`` is the stack's health check.
Local-only: ``POST /local/monitoring-schedules/<name>/executions`` (JSON body optional: ``StartTime``, ``EndTime``,
ISO 8601 or epoch seconds; default the last hour) starts one execution of a monitoring schedule now and answers its
summary (``local_aws.sagemaker.monitoring``).

Usage: ``python -m local_aws.sagemaker.server --port 4567`` (``local_aws.stack`` starts it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import UnknownServiceError
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from local_aws.sagemaker.authz import authorize
from local_aws.sagemaker.backend import SageMakerBackend
from local_aws.sagemaker.exceptions import (
    SageMakerError,
    ThrottlingException,
    UnknownOperation,
    ValidationException,
)
from local_aws.sagemaker.rules import KmsKeys, check
from local_aws.sagemaker.validation import service_model, validate
from local_aws.settings import load_settings

log = logging.getLogger("local_aws.sagemaker.server")
JSON_TYPE = "application/x-amz-json-1.1"
_RUNTIME_HEADERS = {name.lower(): name for name in ("X-Amzn-SageMaker-Custom-Attributes",
                                                    "X-Amzn-SageMaker-Target-Variant", "X-Amzn-SageMaker-Inference-Id")}


def _error(exc: SageMakerError, rest: bool = False) -> Response:
    headers = {"x-amzn-ErrorType": exc.code} if rest else {}
    return Response(json.dumps(exc.body()), status=exc.status, content_type=JSON_TYPE if not rest else
                    "application/json", headers=headers)


class RateLimiter:
    """Token bucket per operation, as AWS throttles the control plane (``LOCAL_SAGEMAKER_RATE_LIMIT`` calls/s;
    0, the default, turns it off)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate, self.burst = rate, burst or max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, operation: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(operation, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[operation] = (tokens - 1.0 if allowed else tokens, now)
            return allowed


class SageMakerApp:
    def __init__(self, backend: SageMakerBackend) -> None:
        self.backend = backend
        self.limiter = RateLimiter(float(os.environ.get("LOCAL_SAGEMAKER_RATE_LIMIT", "0")))
        self.model = service_model("sagemaker")
        self.key_exists = KmsKeys()  # the stack's KMS (moto), through the standard AWS_ENDPOINT_URL variables
        try:
            self.runtime_model = service_model("sagemaker-runtime")
        except UnknownServiceError:  # pragma: no cover - botocore always ships it
            self.runtime_model = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self.route(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        return response(environ, start_response)

    def route(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/ping":
            return Response("{}", content_type="application/json")
        if request.method == "POST" and request.path.startswith("/endpoints/") and \
                request.path.endswith("/invocations"):
            return self.invoke(request, unquote(request.path[len("/endpoints/"):-len("/invocations")]))
        if request.method == "POST" and request.path == "/":
            return self.control_plane(request)
        if request.method == "POST" and request.path.startswith("/local/monitoring-schedules/") and \
                request.path.endswith("/executions"):
            return self.run_monitoring(request, unquote(request.path[len("/local/monitoring-schedules/"):
                                                                      -len("/executions")]))
        return Response(json.dumps({"message": f"no route for {request.method} {request.path}"}), status=404,
                        content_type="application/json")

    def control_plane(self, request: Request) -> Response:
        target = request.headers.get("X-Amz-Target", "")
        prefix, _, operation = target.partition(".")
        try:
            if prefix != "SageMaker" or operation not in self.model.operation_names:
                raise UnknownOperation(f"Operation {target or '(no X-Amz-Target)'} is not a SageMaker operation.")
            try:
                body = json.loads(request.get_data() or b"{}")
            except json.JSONDecodeError as exc:
                raise ValidationException(f"The request body is not valid JSON: {exc}") from exc
            if not self.limiter.allow(operation):
                raise ThrottlingException("Rate exceeded")
            authorize(operation, body, request.headers)  # LOCAL_AWS_IAM=enforce: IAM, as AWS checks it
            validate(self.model.operation_model(operation), body)
            check(operation, body, self.key_exists)
            result = self.backend.dispatch(operation, body)
        except SageMakerError as exc:
            if exc.status >= 500:
                log.error("%s failed: %s", operation, exc)
            return _error(exc)
        except Exception as exc:
            log.exception("%s failed", operation)
            return Response(json.dumps({"__type": "InternalFailure", "message": str(exc)}), status=500,
                            content_type=JSON_TYPE)
        return Response(json.dumps(result), content_type=JSON_TYPE)

    def run_monitoring(self, request: Request, schedule: str) -> Response:
        try:
            try:
                body = json.loads(request.get_data() or b"{}")
            except json.JSONDecodeError as exc:
                raise ValidationException(f"The request body is not valid JSON: {exc}") from exc
            execution = self.backend.monitoring.run(schedule, body)
        except SageMakerError as exc:
            return _error(exc)
        return Response(json.dumps(execution), status=201, content_type="application/json")

    def invoke(self, request: Request, endpoint: str) -> Response:
        # werkzeug title-cases header names (X-Amzn-Sagemaker-...): give back the spelling the runtime looks up.
        headers = {_RUNTIME_HEADERS.get(k.lower(), k): v for k, v in request.headers.items()}
        try:
            if len(endpoint) > 63 or not endpoint:
                raise ValidationException(f"1 validation error detected: Value '{endpoint}' at 'endpointName' "
                                          "failed to satisfy constraint: Member must have length less than or "
                                          "equal to 63")
            status, out_headers, body = self.backend.invoke_endpoint(endpoint, request.get_data(), headers)
        except SageMakerError as exc:
            if exc.code == "ValidationException":
                exc.code = "ValidationError"  # the runtime's name for it
            return _error(exc, rest=True)
        except Exception as exc:
            log.exception("InvokeEndpoint %s failed", endpoint)
            return Response(json.dumps({"message": str(exc)}), status=500, content_type="application/json",
                            headers={"x-amzn-ErrorType": "InternalFailure"})
        return Response(body, status=status, headers=out_headers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    backend = SageMakerBackend(load_settings())
    backend.recover()
    backend.monitoring.start()
    server = make_server(args.host, args.port, SageMakerApp(backend), threaded=True)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("local SageMaker on http://%s:%d (state %s)", args.host, args.port, backend.store)
    try:
        server.serve_forever()
    finally:
        backend.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
