"""The local API gateway: HTTP requests -> API Gateway REST proxy events (v1, as AWS sends them) -> the Lambda handler.

``POST /detect`` becomes the event ``include/lambdas/api_detect.py`` receives behind the real API (Lambda proxy
integration): ``resource``, ``path``, ``httpMethod``, ``headers``/``multiValueHeaders``, query parameters,
``requestContext`` (request id, stage ``local``, source IP), ``body`` and ``isBase64Encoded`` (true for the binary
media types, as an API with ``binaryMediaTypes`` does). The handler's ``statusCode``/``headers``/``body`` become the
HTTP response; a handler that raises or answers a malformed result gives API Gateway's 502
``{"message": "Internal server error"}``, an unknown route its 403 ``Missing Authentication Token``.

The handler runs in this process (imported once; the latency of a Lambda subprocess per request would swamp a 10 ms
model). Its environment is the deployed function's: the Lambda function whose handler is ``api_detect.handler`` in
the stack's Lambda service (what ``infra/`` deploys; the newest if there are several; read at most every few
seconds), else ``$API_DETECT_ENDPOINT_NAME`` of this process. ``GET /ping`` is the stack's health check.

Local only, no API Gateway counterpart: ``GET /reports/<training job>/<file>`` serves the model reports the training
DAG publishes to ``s3://<models bucket>/reports/`` (read-only, nothing else of the bucket), so the Airflow UI's "Model
report" link opens in a browser here as the S3 console does on AWS.

Usage: ``python -m local_aws.api_gateway --port 4568`` (``local_aws.stack`` starts it).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from include.lambdas import api_detect
from local_aws.settings import ACCOUNT_ID, StackSettings, load_settings

log = logging.getLogger("local_aws.api_gateway")
MAX_PAYLOAD = 10 * 1024 * 1024  # API Gateway's request payload limit
BINARY_MEDIA_TYPES = ("image/", "application/octet-stream", "application/x-image")
STAGE = "local"
REPORTS_PREFIX = "/reports/"
API_ID = "localapi01"


@dataclass(frozen=True)
class Route:
    method: str
    resource: str
    handler_name: str  # the deployed function's Handler setting that serves it


ROUTES = {("POST", "/detect"): Route("POST", "/detect", "api_detect.handler")}


def proxy_event(request: Request, resource: str, body: bytes) -> dict[str, Any]:
    """The REST API (v1) Lambda proxy event for ``request``."""
    content_type = request.headers.get("Content-Type", "")
    binary = content_type.lower().startswith(BINARY_MEDIA_TYPES)
    text: str | None = None
    if body and not binary:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            binary = True
    if body and binary:
        text = base64.b64encode(body).decode()
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name, []).append(value)
    query: dict[str, list[str]] = {k: request.args.getlist(k) for k in request.args}
    now = datetime.now(UTC)
    return {
        "resource": resource, "path": request.path, "httpMethod": request.method,
        "headers": {k: v[-1] for k, v in headers.items()} or None, "multiValueHeaders": headers or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None, "stageVariables": None,
        "requestContext": {
            "resourceId": "local", "resourcePath": resource, "httpMethod": request.method,
            "extendedRequestId": uuid.uuid4().hex[:16], "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{STAGE}{request.path}", "accountId": ACCOUNT_ID, "protocol": request.environ.get(
                "SERVER_PROTOCOL", "HTTP/1.1"), "stage": STAGE, "domainPrefix": API_ID,
            "requestTimeEpoch": int(now.timestamp() * 1000), "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": request.remote_addr or "127.0.0.1",
                         "userAgent": request.headers.get("User-Agent")},
            "domainName": request.host, "apiId": API_ID},
        "body": text, "isBase64Encoded": bool(body and binary),
    }


def http_response(result: Any) -> Response:
    """The proxy integration's result as HTTP; API Gateway's 502 when it is malformed."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return _gateway_error(502, "Internal server error")
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    response = Response(data, status=result["statusCode"])
    for name, value in (result.get("headers") or {}).items():
        response.headers[name] = str(value)
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.add(name, str(value))
    return response


def _gateway_error(status: int, message: str) -> Response:
    return Response(json.dumps({"message": message}), status=status, content_type="application/json",
                    headers={"x-amzn-ErrorType": "InternalServerErrorException" if status >= 500 else
                             "MissingAuthenticationTokenException"})


class FunctionEnvironment:
    """The deployed function's environment variables, by handler name, cached a few seconds."""

    def __init__(self, settings: StackSettings | None, ttl_s: float = 5.0) -> None:
        self.settings, self.ttl_s = settings, ttl_s
        self._cache: dict[str, tuple[float, dict[str, str] | None]] = {}
        self._lock = threading.Lock()

    def get(self, handler_name: str) -> dict[str, str] | None:
        with self._lock:
            cached = self._cache.get(handler_name)
            if cached and time.monotonic() - cached[0] < self.ttl_s:
                return cached[1]
        found = self._lookup(handler_name)
        with self._lock:
            self._cache[handler_name] = (time.monotonic(), found)
        return found

    def _lookup(self, handler_name: str) -> dict[str, str] | None:
        if self.settings is None:
            return None
        from local_aws.bootstrap import client

        try:
            pages = client(self.settings, "lambda").get_paginator("list_functions").paginate()
            matches = [fn for page in pages for fn in page["Functions"] if fn.get("Handler") == handler_name]
        except Exception as exc:  # the Lambda service is down: fall back to this process's settings
            log.warning("cannot list Lambda functions: %s", type(exc).__name__)
            return None
        if not matches:
            return None
        latest = max(matches, key=lambda fn: fn.get("LastModified", ""))  # several stages or a test's: the newest
        return latest.get("Environment", {}).get("Variables", {})


class ApiGatewayApp:
    def __init__(self, functions: FunctionEnvironment) -> None:
        self.functions = functions

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.route(Request(environ))(environ, start_response)

    def route(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/ping":
            return Response("{}", content_type="application/json")
        if request.method == "GET" and request.path.startswith(REPORTS_PREFIX):
            return self.report(request.path.removeprefix("/"))
        route = ROUTES.get((request.method, request.path.rstrip("/") or "/"))
        if route is None:
            return _gateway_error(403, "Missing Authentication Token")
        if (request.content_length or 0) > MAX_PAYLOAD:
            return Response(json.dumps({"message": "Request Too Long"}), status=413, content_type="application/json")
        body = request.get_data()
        if len(body) > MAX_PAYLOAD:
            return Response(json.dumps({"message": "Request Too Long"}), status=413, content_type="application/json")
        event = proxy_event(request, route.resource, body)
        try:
            result = api_detect.handle(event, self.settings_for(route))
        except Exception:
            log.exception("%s %s: the handler failed", request.method, route.resource)
            return _gateway_error(502, "Internal server error")
        return http_response(result)

    def report(self, key: str) -> Response:
        """A published model report's file from the local S3 (``reports/<job>/<file>`` of the models bucket)."""
        settings = self.functions.settings
        if settings is None or ".." in key.split("/") or key.endswith("/"):
            return Response("Not Found", status=404, content_type="text/plain")
        from include.config import build_config
        from local_aws.bootstrap import client

        s3 = client(settings, "s3")
        try:
            found = s3.get_object(Bucket=build_config("local").models_bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return Response("Not Found", status=404, content_type="text/plain")
        return Response(found["Body"].read(), content_type=found.get("ContentType") or "application/octet-stream")

    def settings_for(self, route: Route) -> api_detect.Settings:
        env = self.functions.get(route.handler_name)
        if env is None:
            env = {"ENDPOINT_NAME": os.environ.get("API_DETECT_ENDPOINT_NAME", "")}
        return api_detect.Settings.from_env(env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = make_server(args.host, args.port, ApiGatewayApp(FunctionEnvironment(load_settings())), threaded=True)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("local API gateway on http://%s:%d (POST /detect, GET /reports/...)", args.host, args.port)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
