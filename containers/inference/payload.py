"""Request bodies -> header-checked frames (decoded one at a time) and per-request options; detections -> the answer.

Content types: ``image/jpeg``, ``image/png``, ``application/x-image`` (the raw file), ``application/json``:
``{"image": "<base64>"}``, ``{"instances": [{"image": ...}, ...]}`` or a list of such objects. Options
``score_threshold`` (0..1; default: the model's, best F1 on val) and ``max_detections`` (1..100) come from the JSON
object, the ``X-Amzn-SageMaker-Custom-Attributes`` header (``score_threshold=0.3,max_detections=10``: what
InvokeEndpoint's ``CustomAttributes`` carries) or the query string, in that order of precedence.

Every client mistake is a :class:`RequestError` with the HTTP status to answer: 400 (empty body, bad or too deeply
nested JSON, bad base64, not a JPEG or PNG, a frame too elongated, bad option, option text too long), 413 (over a
budget: body, JSON structure, images per request, pixels per image or per request), 415 (content type).

Budgets: what one request may cost a worker (gunicorn sync workers, one request each at a time, one per CPU) is fixed
before any pixel is decoded. Every frame's size comes from its header (``Image.open`` reads only the header; PNG IHDR,
JPEG SOF), and the request is refused when one frame or all of them together are over their pixel budget. The frames
are then decoded one at a time, each just before the model sees it (:class:`Frames`), so a worker holds one decoded
frame, never a batch: its memory is bounded by the per-frame limit, its time by the per-request one. Measured with
``bench/payload_limits.py`` (docs/benchmarks.md), PNGs of flat colour (the most pixels per byte sent): a frame costs a
worker ~48 bytes per pixel at its peak (the float32 input, 12, and ONNX Runtime's working copies while the model runs;
decoding alone peaks at ~18) and 70-140 ns of one core per pixel on a loaded 2-core machine.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
FORMATS = ("JPEG", "PNG")  # what the content types name; Pillow's other decoders are never tried
MAX_DETECTIONS = 100  # what the model returns at most (torchvision's detections_per_img, set by the trainer)
# -- budgets (README "deploy ... and the inference container", containers/inference/README.md) ----------------------
# Frames in one request: the batch transform sends one each; 32 keeps a batch's answer small and its work bounded.
MAX_BATCH = 32
# Decoded pixels of one frame (server.DEFAULT_MAX_PIXELS, $INFERENCE_MAX_PIXELS): an 8K UHD frame (33.2 MP) fits. It
# bounds a worker's memory: at ~48 bytes per pixel a 40 MP frame peaks at 1.9 GB, within the 4 GB per vCPU of the
# endpoint's instance types (ml.m5.large: 2 vCPU, 8 GB; ml.g4dn.xlarge: 4 vCPU, 16 GB) with one worker per vCPU.
MAX_PIXELS = 40_000_000
# Decoded pixels of all a request's frames together ($INFERENCE_MAX_REQUEST_PIXELS): 2**26, so a full batch of 32
# full-HD frames (32 x 1920 x 1080 = 66.4 MP) fits. Frames are decoded one at a time, so it bounds time, not memory:
# at <= 140 ns per pixel under 10 s of one core, a sixth of gunicorn's and InvokeEndpoint's 60 s. Without it the
# finding's batch (32 frames of 6000 x 6000, 4.5 MB of JSON) took 46-96 s and, decoded all at once, ~14.5 GB.
MAX_REQUEST_PIXELS = 1 << 26
# Longest side / shortest side of a frame: the model scales a frame's longest side down to its input size (128-320);
# past that ratio the shortest becomes 0 pixels and the runtime fails (a 1 x 300 frame was a 500). 10:1 is well past any
# video's (21:9 is 2.4:1) and leaves >= 12 pixels at an input size of 128.
MAX_ASPECT_RATIO = 10
# JSON nesting: the deepest body this API reads is {"instances": [{"image": ...}]}, 3 levels; 8 leaves room for
# fields it ignores. Python's decoder recurses once per level: 6 MB of "[" was a RecursionError (a 500).
MAX_JSON_DEPTH = 8
# JSON outside its strings, each string counted as "" (2 characters): a full batch with both options is ~300; 16 KiB
# bounds the keys and values the decoder builds to a few thousand (6 MB of "[]," would be 2 M lists, ~135 MB).
MAX_JSON_STRUCTURE = 16 * 1024
# X-Amzn-SageMaker-Custom-Attributes: InvokeEndpoint's own limit on CustomAttributes (1024 characters).
MAX_ATTRIBUTES_CHARS = 1024
# The query string (not sent by InvokeEndpoint; direct callers only): the options fit in ~40 characters.
MAX_QUERY_CHARS = 1024

_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Options:
    score_threshold: float
    max_detections: int


@dataclass(frozen=True)
class Frame:
    """An image file whose header passed the checks; not decoded yet."""

    data: bytes
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


class Frames:
    """A request's frames as the model's inputs, each decoded when it is asked for (never cached): iterating holds
    one decoded frame at a time."""

    def __init__(self, frames: list[Frame], max_pixels: int) -> None:
        self.frames, self.max_pixels = frames, max_pixels

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> np.ndarray:
        return decode_image(self.frames[index].data, self.max_pixels)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (decode_image(frame.data, self.max_pixels) for frame in self.frames)

    @property
    def pixels(self) -> int:
        return sum(frame.pixels for frame in self.frames)


@dataclass(frozen=True)
class Request:
    images: Frames  # float32 [3, H, W], RGB in [0, 1], decoded one at a time
    options: Options
    batch: bool  # answer {"predictions": [...]} rather than one result


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """The image with only its header read; Pillow's failures as RequestErrors."""
    if not data:
        raise RequestError(400, "empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                yield img
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(413, f"image is over the pixel limit: {exc}") from exc
    except Exception as exc:  # PIL raises many types for truncated or foreign data
        raise RequestError(400, f"cannot decode the image: {type(exc).__name__}") from exc


def _checked_size(img: Image.Image, max_pixels: int) -> tuple[int, int]:
    width, height = img.size  # the header only: refuse before decoding
    if width < 1 or height < 1:
        raise RequestError(400, "cannot decode the image: no pixels")
    if width * height > max_pixels:
        raise RequestError(413, f"image of {width}x{height} pixels is over the limit of {max_pixels}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise RequestError(400, f"image of {width}x{height} pixels is more elongated than {MAX_ASPECT_RATIO}:1")
    return width, height


def read_frame(data: bytes, max_pixels: int) -> Frame:
    """The frame's size from its header (JPEG or PNG), checked; nothing decoded."""
    with _opened(data) as img:
        return Frame(data, *_checked_size(img, max_pixels))


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """The frame as float32 [3, H, W] in [0, 1] (the exported model's input), like the trainer's ``read_image``."""
    with _opened(data) as img:
        _checked_size(img, max_pixels)
        array = np.asarray(img.convert("RGB"))  # PIL's copies are freed here, before the float32 one is made
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


def json_structure(text: str) -> str:
    """The JSON text outside its strings, each string as ``""``: what its decoder will build, whatever the strings
    hold. Linear, in C (no regular expression that could backtrack): escaped backslashes and quotes go first, so every
    quote left opens or closes a string. Past ``MAX_JSON_STRUCTURE`` quotes the rest stays unsplit: the answer is then
    longer than the budget, and its first ``MAX_JSON_STRUCTURE`` characters are exact."""
    bare = text.replace("\\\\", "").replace('\\"', "")
    return '""'.join(bare.split('"', MAX_JSON_STRUCTURE)[::2])


def json_depth(structure: str) -> int:
    """How deep the brackets nest (an unclosed one counts); 0 for a scalar."""
    return max(accumulate(map(_DEPTH_STEP.__getitem__, _NOT_BRACKET.sub("", structure)), initial=0))


def parse_json(body: bytes) -> Any:
    """The document, once its nesting and size are known to be within budget (400 / 413 otherwise)."""
    try:
        text = body.decode(json.detect_encoding(body))  # UTF-8 (with or without BOM), -16 or -32, as json.loads
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {type(exc).__name__}") from exc
    structure = json_structure(text)
    if json_depth(structure[:MAX_JSON_STRUCTURE]) > MAX_JSON_DEPTH:
        raise RequestError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if len(structure) > MAX_JSON_STRUCTURE:
        raise RequestError(413, f"JSON of more than {MAX_JSON_STRUCTURE} characters outside its strings; a request "
                                f"needs a few hundred")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"body is not valid JSON: {type(exc).__name__}") from exc


def parse_attributes(text: str | None) -> dict[str, str]:
    """``key=value`` pairs separated by commas or semicolons (SageMaker passes the header through as is)."""
    if len(text or "") > MAX_ATTRIBUTES_CHARS:
        raise RequestError(400, f"X-Amzn-SageMaker-Custom-Attributes is over {MAX_ATTRIBUTES_CHARS} characters")
    pairs = {}
    for part in (text or "").replace(";", ",").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return pairs


def parse_query(text: str | None) -> dict[str, str]:
    if len(text or "") > MAX_QUERY_CHARS:
        raise RequestError(400, f"the query string is over {MAX_QUERY_CHARS} characters")
    return dict(parse_qsl(text or ""))


def parse_options(sources: list[dict[str, Any]], default_threshold: float) -> Options:
    """The first source that names an option wins. Numbers or their text; never a boolean."""

    def pick(name: str) -> Any:
        return next((s[name] for s in sources if s.get(name) not in (None, "")), None)

    threshold, limit = pick("score_threshold"), pick("max_detections")
    try:
        threshold = default_threshold if threshold is None else float(_not_bool(threshold))
    except (TypeError, ValueError):
        raise RequestError(400, "score_threshold must be a number in [0, 1]") from None
    if not 0.0 <= threshold <= 1.0:  # NaN too
        raise RequestError(400, "score_threshold must be a number in [0, 1]")
    try:
        limit = MAX_DETECTIONS if limit is None else int(str(_not_bool(limit)))
    except (TypeError, ValueError):
        raise RequestError(400, f"max_detections must be an integer in [1, {MAX_DETECTIONS}]") from None
    if not 1 <= limit <= MAX_DETECTIONS:
        raise RequestError(400, f"max_detections must be an integer in [1, {MAX_DETECTIONS}]")
    return Options(threshold, limit)


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true is not 1
        raise TypeError("a boolean")
    return value


def parse_request(body: bytes, content_type: str | None, attributes: str | None, query: str | None,
                  default_threshold: float, max_pixels: int,
                  max_request_pixels: int = MAX_REQUEST_PIXELS) -> Request:
    kind = media_type(content_type)
    if kind not in (*IMAGE_TYPES, JSON_TYPE):
        raise RequestError(415, f"unsupported content type {kind or '(none)'}; use one of "
                                f"{', '.join((*IMAGE_TYPES, JSON_TYPE))}")
    if not body:
        raise RequestError(400, "empty body")
    header_options, query_options = parse_attributes(attributes), parse_query(query)
    if kind != JSON_TYPE:
        options = parse_options([header_options, query_options], default_threshold)
        return Request(_within_budget([read_frame(body, max_pixels)], max_pixels, max_request_pixels), options,
                       batch=False)
    document = parse_json(body)
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
    frames = [read_frame(_b64(i.get("image")), max_pixels) for i in instances]
    return Request(_within_budget(frames, max_pixels, max_request_pixels), options, batch)


def _within_budget(frames: list[Frame], max_pixels: int, max_request_pixels: int) -> Frames:
    checked = Frames(frames, max_pixels)
    if checked.pixels > max_request_pixels:
        raise RequestError(413, f"{len(frames)} images of {checked.pixels} pixels in all are over the request's "
                                f"limit of {max_request_pixels} pixels")
    return checked


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
