"""Lambda handler behind API Gateway (REST API, Lambda proxy integration): a base64 frame in, detections out.

``POST /detect`` with ``{"image": "<base64>", "score_threshold": 0.3, "max_detections": 10}`` (JSON), or the image
itself (``image/jpeg``, ``image/png``, ``application/octet-stream``: API Gateway hands binary media types to the
function base64-encoded, ``isBase64Encoded: true``). Options may also come as query parameters. The frame goes to the
SageMaker endpoint ``$ENDPOINT_NAME`` through InvokeEndpoint; its JSON comes back as the response body.

Status codes: 400 (no or bad image, bad or too deeply nested JSON, bad option), 413 (image over
``$MAX_IMAGE_BYTES``, default 6 MB: InvokeEndpoint's limit; JSON over its structure budget), 415 (content type), 405
(not POST); the endpoint's own 4xx pass through (413 for a frame over its pixel limit: the container reads the
header); 502 when the endpoint fails or answers nonsense, 503 when it is missing or not ready, 504 when it times out.
Whatever the event's body, query string or headers, the handler answers and never raises (API Gateway would turn that
into a 502). Every error body is ``{"error": "..."}``. Logs carry sizes, statuses and latencies, never a frame. The
deployment zip holds this file; the Lambda runtime provides boto3.

Budgets, as the inference container's (containers/inference/payload.py): JSON nested at most ``MAX_JSON_DEPTH`` levels
(the body is one object, 1 level; Python's decoder recurses once per level, so 6 MB of "[" was a RecursionError, an
unhandled error and a 502) and at most ``MAX_JSON_STRUCTURE`` characters outside its strings (each string counted as
""; a request has a few dozen: it bounds what the decoder builds); ``score_threshold`` a number in [0, 1],
``max_detections`` an integer in [1, 100] (what the model returns at most), never booleans.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

logger = logging.getLogger("api_detect")
logger.setLevel(logging.INFO)

DEFAULT_MAX_IMAGE_BYTES = 6 * 1024 * 1024
MAX_JSON_DEPTH = 8  # levels of JSON nesting (a request has 1)
MAX_JSON_STRUCTURE = 16 * 1024  # characters of JSON outside its strings, each string counted as ""
MAX_DETECTIONS = 100  # the container's bound: what the model returns at most
BINARY_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")
OPTIONS = ("score_threshold", "max_detections")
_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))
_UNAVAILABLE = {"ServiceUnavailable", "ModelNotReadyException", "ThrottlingException", "ValidationError"}
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Settings:
    endpoint_name: str
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    timeout_s: float = 25.0  # under API Gateway's 29 s integration timeout

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(env.get("ENDPOINT_NAME", ""), int(env.get("MAX_IMAGE_BYTES") or DEFAULT_MAX_IMAGE_BYTES),
                   float(env.get("INVOKE_TIMEOUT_S") or 25.0))


@cache
def _runtime(timeout_s: float) -> Any:
    """One client per container (reused across invocations); few retries: the caller is waiting."""
    return boto3.client("sagemaker-runtime", config=Config(connect_timeout=2, read_timeout=timeout_s,
                                                           retries={"max_attempts": 2, "mode": "standard"}))


def _headers(event: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in (event.get("headers") or {}).items() if isinstance(v, str)}


def _body_bytes(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "the body is not valid base64") from None
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)  # lone surrogates: bad JSON


def _decode_image(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise ApiError(400, '"image" must be a non-empty base64 string')
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, '"image" is not valid base64') from None


def parse_event(event: dict[str, Any], settings: Settings) -> tuple[bytes, str, dict[str, Any]]:
    """The image, its content type and the options of a proxy event; raises ApiError."""
    if event.get("httpMethod", "POST") != "POST":
        raise ApiError(405, "use POST")
    content_type = _headers(event).get("content-type", "application/json").split(";")[0].strip().lower()
    options: dict[str, Any] = dict(event.get("queryStringParameters") or {})
    body = _body_bytes(event)
    if content_type == "application/json":
        document = _parse_json(body) if body else None
        if not isinstance(document, dict) or "image" not in document:
            raise ApiError(400, 'expected a JSON object {"image": "<base64>"}')
        image = _decode_image(document["image"])
        options.update({k: document[k] for k in OPTIONS if document.get(k) is not None})
    elif content_type in BINARY_TYPES:
        image = body
    else:
        raise ApiError(415, f"unsupported content type {content_type}; send application/json or an image")
    if not image:
        raise ApiError(400, "empty image")
    if len(image) > settings.max_image_bytes:
        raise ApiError(413, f"image of {len(image)} bytes is over the limit of {settings.max_image_bytes}")
    image_type = next((kind for magic, kind in _MAGIC if image.startswith(magic)), None)
    if image_type is None:
        raise ApiError(400, "the image is neither JPEG nor PNG")
    return image, image_type, _check_options(options)


def json_structure(text: str) -> str:
    """The JSON text outside its strings, each string as ``""`` (linear, in C: escaped backslashes and quotes go
    first, so every quote left opens or closes a string); past ``MAX_JSON_STRUCTURE`` quotes the rest stays unsplit,
    which makes the answer longer than the budget while its first ``MAX_JSON_STRUCTURE`` characters stay exact."""
    bare = text.replace("\\\\", "").replace('\\"', "")
    return '""'.join(bare.split('"', MAX_JSON_STRUCTURE)[::2])


def json_depth(structure: str) -> int:
    """How deep the brackets nest (an unclosed one counts); 0 for a scalar."""
    return max(accumulate(map(_DEPTH_STEP.__getitem__, _NOT_BRACKET.sub("", structure)), initial=0))


def _parse_json(body: bytes) -> Any:
    """The document, once its nesting and size are known to be within budget; ApiError otherwise."""
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid JSON") from None
    structure = json_structure(text)
    if json_depth(structure[:MAX_JSON_STRUCTURE]) > MAX_JSON_DEPTH:
        raise ApiError(400, f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    if len(structure) > MAX_JSON_STRUCTURE:
        raise ApiError(413, f"the JSON has more than {MAX_JSON_STRUCTURE} characters outside its strings")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name in OPTIONS:
        if options.get(name) in (None, ""):
            continue
        try:
            if isinstance(options[name], bool):  # JSON true is not 1
                raise TypeError(name)
            value = float(options[name]) if name == "score_threshold" else int(str(options[name]))
        except (TypeError, ValueError):
            raise ApiError(400, f"{name} must be a number") from None
        if name == "score_threshold" and not 0 <= value <= 1:  # NaN too
            raise ApiError(400, "score_threshold must be in [0, 1]")
        if name == "max_detections" and value < 1:
            raise ApiError(400, "max_detections must be at least 1")
        if name == "max_detections" and value > MAX_DETECTIONS:
            raise ApiError(400, f"max_detections must be at most {MAX_DETECTIONS}")
        checked[name] = value
    return checked


def invoke(image: bytes, image_type: str, options: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """InvokeEndpoint; the endpoint's answer, or ApiError with the status the API should give."""
    if not settings.endpoint_name:
        raise ApiError(503, "no model endpoint is configured (ENDPOINT_NAME)")
    request: dict[str, Any] = {"EndpointName": settings.endpoint_name, "ContentType": image_type,
                               "Accept": "application/json", "Body": image}
    if options:
        request["CustomAttributes"] = ",".join(f"{k}={v}" for k, v in options.items())
    try:
        response = _runtime(settings.timeout_s).invoke_endpoint(**request)
        payload = response["Body"].read()
    except ClientError as exc:
        raise _from_client_error(exc) from None
    except (ReadTimeoutError, ConnectTimeoutError):
        raise ApiError(504, "the model endpoint did not answer in time") from None
    except BotoCoreError as exc:
        raise ApiError(502, f"cannot reach the model endpoint: {type(exc).__name__}") from None
    try:
        answer = json.loads(payload)
    except (ValueError, RecursionError):
        raise ApiError(502, "the model endpoint answered something other than JSON") from None
    if not isinstance(answer, dict):
        raise ApiError(502, "the model endpoint answered an unexpected document")
    return answer


def _from_client_error(exc: ClientError) -> ApiError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    if code == "ModelError":
        original = int(exc.response.get("OriginalStatusCode") or 0)
        if 400 <= original < 500:  # the container refused the request: the client's mistake, its message
            try:
                reason = json.loads(exc.response.get("OriginalMessage") or "{}").get("error")
            except (ValueError, AttributeError):
                reason = None
            return ApiError(original, reason or "the model endpoint refused the image")
        return ApiError(502, "the model endpoint failed")
    if code in _UNAVAILABLE:  # ValidationError: "Endpoint ... not found" (or not in service)
        return ApiError(503, "the model endpoint is not available")
    return ApiError(502, f"the model endpoint failed ({code or 'unknown error'})")


def response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body),
            "isBase64Encoded": False}


def handle(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    size = 0
    try:
        image, image_type, options = parse_event(event, settings)
        size = len(image)
        result = response(200, invoke(image, image_type, options, settings))
    except ApiError as exc:
        result = response(exc.status, {"error": exc.message})
    logger.info("status=%d image_bytes=%d ms=%.1f", result["statusCode"], size, (time.perf_counter() - started) * 1e3)
    return result


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, Settings.from_env())
