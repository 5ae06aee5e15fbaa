"""Request bodies -> decoded frames and per-request options; detections -> the JSON answer.

Content types: ``image/jpeg``, ``image/png``, ``application/x-image`` (the raw file), ``application/json``:
``{"image": "<base64>"}``, ``{"instances": [{"image": ...}, ...]}`` or a list of such objects. Options
``score_threshold`` (0..1; default: the model's, best F1 on val) and ``max_detections`` (1..100) come from the JSON
object, the ``X-Amzn-SageMaker-Custom-Attributes`` header (``score_threshold=0.3,max_detections=10``: what
InvokeEndpoint's ``CustomAttributes`` carries) or the query string, in that order of precedence.

Every client mistake is a :class:`RequestError` with the HTTP status to answer: 400 (empty body, bad JSON or base64,
not an image, bad option), 413 (over the payload or pixel limit), 415 (content type).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
MAX_DETECTIONS = 100  # what the model returns at most (torchvision's detections_per_img, set by the trainer)
MAX_BATCH = 32


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Options:
    score_threshold: float
    max_detections: int


@dataclass(frozen=True)
class Request:
    images: list[np.ndarray]  # float32 [3, H, W], RGB in [0, 1]
    options: Options
    batch: bool  # answer {"predictions": [...]} rather than one result


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """The frame as float32 [3, H, W] in [0, 1] (the exported model's input), like the trainer's ``read_image``."""
    if not data:
        raise RequestError(400, "empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size  # the header only: refuse huge frames before decoding them
                if width * height > max_pixels:
                    raise RequestError(413, f"image of {width}x{height} pixels is over the limit of {max_pixels}")
                array = np.asarray(img.convert("RGB"))
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(413, f"image is over the pixel limit: {exc}") from exc
    except Exception as exc:  # PIL raises many types for truncated or foreign data
        raise RequestError(400, f"cannot decode the image: {type(exc).__name__}") from exc
    if array.ndim != 3 or min(array.shape[:2]) < 1:
        raise RequestError(400, "cannot decode the image: no pixels")
    return np.divide(array.transpose(2, 0, 1), np.float32(255), dtype=np.float32)


def _b64(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise RequestError(400, "'image' must be a non-empty base64 string")
    if value.startswith("data:"):  # a data URL: data:image/jpeg;base64,....
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, "'image' is not valid base64") from exc


def parse_attributes(text: str | None) -> dict[str, str]:
    """``key=value`` pairs separated by commas or semicolons (SageMaker passes the header through as is)."""
    pairs = {}
    for part in (text or "").replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return pairs


def parse_options(sources: list[dict[str, Any]], default_threshold: float) -> Options:
    """The first source that names an option wins."""

    def pick(name: str) -> Any:
        return next((s[name] for s in sources if s.get(name) not in (None, "")), None)

    threshold, limit = pick("score_threshold"), pick("max_detections")
    try:
        threshold = default_threshold if threshold is None else float(threshold)
    except (TypeError, ValueError):
        raise RequestError(400, "score_threshold must be a number in [0, 1]") from None
    if not 0.0 <= threshold <= 1.0:
        raise RequestError(400, "score_threshold must be a number in [0, 1]")
    try:
        limit = MAX_DETECTIONS if limit is None else int(str(limit))
    except ValueError:
        raise RequestError(400, f"max_detections must be an integer in [1, {MAX_DETECTIONS}]") from None
    if not 1 <= limit <= MAX_DETECTIONS:
        raise RequestError(400, f"max_detections must be an integer in [1, {MAX_DETECTIONS}]")
    return Options(threshold, limit)


def parse_request(body: bytes, content_type: str | None, attributes: str | None, query: str | None,
                  default_threshold: float, max_pixels: int) -> Request:
    kind = media_type(content_type)
    if kind not in (*IMAGE_TYPES, JSON_TYPE):
        raise RequestError(415, f"unsupported content type {kind or '(none)'}; use one of "
                                f"{', '.join((*IMAGE_TYPES, JSON_TYPE))}")
    if not body:
        raise RequestError(400, "empty body")
    header_options = parse_attributes(attributes)
    query_options = dict(parse_qsl(query or ""))
    if kind != JSON_TYPE:
        options = parse_options([header_options, query_options], default_threshold)
        return Request([decode_image(body, max_pixels)], options, batch=False)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"body is not valid JSON: {type(exc).__name__}") from exc
    fields: dict[str, Any] = {}
    if isinstance(document, list):
        instances, batch = document, True
    elif isinstance(document, dict) and "instances" in document:
        instances, batch, fields = document["instances"], True, document
    elif isinstance(document, dict) and "image" in document:
        instances, batch, fields = [document], False, document
    else:
        raise RequestError(400, 'expected {"image": <base64>}, {"instances": [{"image": ...}, ...]} or a list')
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, "'instances' must be a non-empty list")
    if len(instances) > MAX_BATCH:
        raise RequestError(413, f"{len(instances)} images in one request; at most {MAX_BATCH}")
    if not all(isinstance(i, dict) for i in instances):
        raise RequestError(400, 'each instance must be an object {"image": <base64>}')
    options = parse_options([fields, header_options, query_options], default_threshold)
    images = [decode_image(_b64(i.get("image")), max_pixels) for i in instances]
    return Request(images, options, batch)


def detections_json(detections: Any, names: dict[int, str], category_ids: dict[int, Any], image: np.ndarray,
                    options: Options) -> dict[str, Any]:
    """One frame's answer: detections scoring >= the threshold, best first, at most ``max_detections``."""
    order = np.argsort(-detections.scores, kind="stable")  # the model sorts already; runtimes need not
    keep = order[detections.scores[order] >= options.score_threshold][: options.max_detections]
    items = []
    for i in keep:
        label = int(detections.labels[i])
        items.append({"label": names.get(label, str(label)), "category_id": category_ids.get(label),
                      "score": round(float(detections.scores[i]), 5),
                      "box": [round(float(v), 2) for v in detections.boxes[i]]})
    return {"width": int(image.shape[2]), "height": int(image.shape[1]), "detections": items}
