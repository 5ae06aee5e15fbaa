"""The SageMaker inference HTTP contract as a WSGI app: ``GET /ping``, ``POST /invocations``.

gunicorn (``gunicorn_conf.py``) runs it in several worker processes; each loads the model once, at start
(``wsgi.py``). ``/ping`` answers 200 once the worker has its model. ``/invocations`` takes the bodies described in
``payload.py`` and answers ``{"width", "height", "detections": [{"label", "category_id", "score", "box"}]}`` for one
frame, ``{"predictions": [...]}`` for a batch; boxes are ``[x1, y1, x2, y2]`` in the input frame's pixels. Errors are
``{"error": "..."}`` with 400/404/405/406/413/415, or 500 when the model itself fails: no request ends a worker.
What a request may cost (body, JSON, frames, pixels per frame and per request, options) is checked before any frame is
decoded; the budgets and their reasons are in ``payload.py``. There is no overload answer: within the budgets one
request is at most a few seconds of one core, and gunicorn queues the rest.

Logs carry sizes, counts and latencies, never a payload: frames may show patients.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from payload import (
    JSON_TYPE,
    MAX_PIXELS,
    MAX_REQUEST_PIXELS,
    RequestError,
    detections_json,
    media_type,
    parse_request,
)

log = logging.getLogger("inference")
DEFAULT_MAX_PAYLOAD = 6 * 1024 * 1024  # SageMaker's real-time InvokeEndpoint limit
DEFAULT_MAX_PIXELS = MAX_PIXELS  # per frame: 8K UHD is 33 MP
DEFAULT_MAX_REQUEST_PIXELS = MAX_REQUEST_PIXELS  # all a request's frames: 32 full-HD frames are 66.4 MP
_DRAIN_LIMIT = 64 * 1024 * 1024  # read and drop up to this much of an oversize body, so the client sees the 413
StartResponse = Callable[..., Any]


class InferenceApp:
    def __init__(self, detector: Any, max_payload: int = DEFAULT_MAX_PAYLOAD, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS) -> None:
        self.detector, self.max_payload, self.max_pixels = detector, max_payload, max_pixels
        self.max_request_pixels = max_request_pixels

    @classmethod
    def from_env(cls, detector: Any, environ: dict[str, str] | os._Environ | None = None) -> InferenceApp:
        env = os.environ if environ is None else environ
        return cls(detector, int(env.get("INFERENCE_MAX_PAYLOAD_BYTES") or DEFAULT_MAX_PAYLOAD),
                   int(env.get("INFERENCE_MAX_PIXELS") or DEFAULT_MAX_PIXELS),
                   int(env.get("INFERENCE_MAX_REQUEST_PIXELS") or DEFAULT_MAX_REQUEST_PIXELS))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        size, images = 0, 0
        try:
            if path == "/ping":
                status, body = (200, {"status": "healthy", "runtime": self.detector.runtime}) if method in (
                    "GET", "HEAD") else (405, {"error": "use GET /ping"})
            elif path == "/execution-parameters" and method == "GET":  # batch transform asks for it
                status, body = 200, {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD",
                                     "MaxPayloadInMB": max(1, self.max_payload // (1024 * 1024))}
            elif path == "/invocations":
                if method != "POST":
                    raise RequestError(405, "use POST /invocations")
                status, body, size, images = self.invoke(environ)
            else:
                raise RequestError(404, f"no route {path}; the routes are GET /ping and POST /invocations")
        except RequestError as exc:
            status, body = exc.status, {"error": exc.message}
        except Exception as exc:  # the model failed: answer, log the type only (the message may quote data)
            log.error("invocation failed: %s after %.1f ms", type(exc).__name__, (time.perf_counter() - started) * 1e3)
            status, body = 500, {"error": "internal error while running the model"}
        if path == "/invocations":
            level = logging.DEBUG if status < 400 else logging.WARNING
            log.log(level, "invocations status=%d bytes=%d images=%d ms=%.1f", status, size, images,
                    (time.perf_counter() - started) * 1e3)
        data = json.dumps(body, separators=(",", ":")).encode()
        start_response(f"{status} {_REASONS.get(status, 'Error')}",
                       [("Content-Type", JSON_TYPE), ("Content-Length", str(len(data)))])
        return [data]

    def invoke(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any], int, int]:
        accept = media_type(environ.get("HTTP_ACCEPT"))
        if accept not in ("", "*/*", "application/*", JSON_TYPE):
            raise RequestError(406, f"cannot answer in {accept}; the answer is {JSON_TYPE}")
        body = self.read_body(environ)
        size = len(body)
        request = parse_request(body, environ.get("CONTENT_TYPE"),
                                environ.get("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES"),
                                environ.get("QUERY_STRING"), self.detector.score_threshold, self.max_pixels,
                                self.max_request_pixels)
        del body  # the frames keep the image bytes they need
        results = []
        for image in request.images:  # decoded one at a time: a worker never holds two decoded frames
            results.append(detections_json(self.detector(image), self.detector.names, self.detector.category_ids,
                                           image, request.options))
            del image
        return 200, ({"predictions": results} if request.batch else results[0]), size, len(results)

    def read_body(self, environ: dict[str, Any]) -> bytes:
        stream = environ["wsgi.input"]
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            raise RequestError(400, "bad Content-Length") from None
        if length > self.max_payload:
            _drain(stream, min(length, _DRAIN_LIMIT))
            raise RequestError(413, f"payload of {length} bytes is over the limit of {self.max_payload}")
        body = stream.read(length) if length >= 0 else stream.read(self.max_payload + 1)  # chunked: read to limit
        if len(body) > self.max_payload:
            raise RequestError(413, f"payload is over the limit of {self.max_payload} bytes")
        return body


def _drain(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 1 << 20))
        if not chunk:
            return
        length -= len(chunk)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
            413: "Payload Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error"}
