"""SageMaker data capture files -> the frames and answers of one monitoring window.

Each line of a capture file (``*.jsonl`` at any depth under ``dataset_source``) is one invocation::

    {"captureData": {"endpointInput": {"observedContentType", "mode", "data", "encoding"},
                     "endpointOutput": {...}},
     "eventMetadata": {"eventId", "inferenceTime": "2026-11-25T10:00:00Z", ...}, "eventVersion": "0"}

``encoding`` BASE64 holds the body's bytes; JSON or CSV the body as text. A request body is an image file
(``image/jpeg``, ``image/png``, ``application/x-image``) or JSON ``{"image": b64}``, ``{"instances": [{"image":
b64}, ...]}`` or a list of such objects (the inference container's formats); an answer is ``{"width", "height",
"detections"}`` or ``{"predictions": [...]}``. A line that gives neither a frame nor an answer is skipped and counted
with its reason; payloads are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features import UndecodableError

JSON_TYPES = ("application/json", "application/jsonlines", "text/json")


@dataclass
class Record:
    images: list[bytes]  # encoded frames of the request (empty when the input was not captured or not decodable)
    answers: list[Any]  # one answer object per frame (empty likewise)
    problems: list[str] = field(default_factory=list)  # reasons one part was unusable


@dataclass
class ReadStats:
    files: int = 0
    lines: int = 0
    in_window: int = 0
    outside_window: int = 0
    used: int = 0  # records that gave a frame or an answer
    skipped: Counter = field(default_factory=Counter)  # reason -> records with nothing usable
    partial: Counter = field(default_factory=Counter)  # reason -> records with one unusable part


def parse_time(text: str) -> datetime:
    """ISO 8601 (``Z`` or an offset; naive means UTC)."""
    value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def capture_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _body(part: Any, side: str) -> tuple[bytes, str]:
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise UndecodableError(f"{side}: no 'data' string")
    encoding = str(part.get("encoding", "")).upper()
    content_type = str(part.get("observedContentType") or "").split(";", 1)[0].strip().lower()
    if encoding == "BASE64":
        try:
            return base64.b64decode(part["data"], validate=True), content_type
        except (binascii.Error, ValueError):
            raise UndecodableError(f"{side}: invalid base64") from None
    if encoding in ("JSON", "CSV"):
        return part["data"].encode(), content_type
    raise UndecodableError(f"{side}: unknown encoding {encoding or '(none)'}")


def _json(body: bytes, side: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise UndecodableError(f"{side}: invalid JSON") from None


def _b64_image(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise UndecodableError("input: 'image' is not a base64 string")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UndecodableError("input: 'image' is not valid base64") from None


def request_images(part: Any) -> list[bytes]:
    body, content_type = _body(part, "input")
    if content_type in JSON_TYPES or body.lstrip()[:1] in (b"{", b"["):
        document = _json(body, "input")
        if isinstance(document, dict) and "instances" in document:
            document = document["instances"]
        instances = document if isinstance(document, list) else [document]
        if not instances or not all(isinstance(i, dict) for i in instances):
            raise UndecodableError("input: JSON is not {\"image\": ...} or a list of such objects")
        return [_b64_image(i.get("image")) for i in instances]
    return [body]


def response_answers(part: Any) -> list[Any]:
    body, _ = _body(part, "output")
    document = _json(body, "output")
    if isinstance(document, dict) and isinstance(document.get("predictions"), list):
        return document["predictions"]
    return [document]


def decode_line(line: str) -> tuple[dict[str, Any], Record]:
    """(eventMetadata, the record); raises UndecodableError when the line is not a capture record at all."""
    try:
        event = json.loads(line)
    except ValueError:
        raise UndecodableError("line: invalid JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("captureData"), dict):
        raise UndecodableError("line: no 'captureData' object")
    capture, metadata = event["captureData"], event.get("eventMetadata")
    record = Record([], [])
    if "endpointInput" in capture:
        try:
            record.images = request_images(capture["endpointInput"])
        except UndecodableError as exc:
            record.problems.append(str(exc))
    if "endpointOutput" in capture:
        try:
            record.answers = response_answers(capture["endpointOutput"])
        except UndecodableError as exc:
            record.problems.append(str(exc))
    if "endpointInput" not in capture and "endpointOutput" not in capture:
        record.problems.append("line: neither endpointInput nor endpointOutput")
    return metadata if isinstance(metadata, dict) else {}, record


def in_window(metadata: dict[str, Any], start: datetime | None, end: datetime | None) -> bool:
    """``start <= inferenceTime < end`` when the record has a time; raises UndecodableError for a bad time."""
    stamp = metadata.get("inferenceTime")
    if stamp is None or (start is None and end is None):
        return True
    try:
        when = parse_time(str(stamp))
    except ValueError:
        raise UndecodableError("line: unparsable eventMetadata.inferenceTime") from None
    return (start is None or when >= start) and (end is None or when < end)


def read_window(root: Path, start: datetime | None, end: datetime | None, stats: ReadStats) -> Iterator[Record]:
    """The window's records, file by file and line by line (never the whole window in memory)."""
    for path in capture_files(root):
        stats.files += 1
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                stats.lines += 1
                try:
                    metadata, record = decode_line(line)
                    if not in_window(metadata, start, end):
                        stats.outside_window += 1
                        continue
                except UndecodableError as exc:
                    stats.in_window += 1  # unknown time: counted against the window, as it may belong to it
                    stats.skipped[str(exc)] += 1
                    continue
                stats.in_window += 1
                yield record
