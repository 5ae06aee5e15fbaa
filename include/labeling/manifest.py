"""Ground Truth's output manifest (augmented manifest, bounding boxes) -> checked ``LabeledFrame`` objects.

Every line is checked against the format Ground Truth writes: the label attribute with ``annotations`` and
``image_size``, its ``-metadata`` twin with ``objects[].confidence`` and ``class-map``. A bad line is reported with
its line number and reason and left out; the rest of the manifest is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Box:
    label: str
    x: float
    y: float
    w: float
    h: float
    confidence: float = 1.0


@dataclass(frozen=True)
class LabeledFrame:
    source_ref: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    job_name: str = ""
    adjusted: bool = False

    @property
    def video_id(self) -> str:
        """frames/<video_id>/<index>.jpg -> <video_id>."""
        return self.source_ref.rstrip("/").split("/")[-2]

    @property
    def min_confidence(self) -> float:
        return min((b.confidence for b in self.boxes), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"source-ref": self.source_ref, "width": self.width, "height": self.height,
                "boxes": [b.__dict__ for b in self.boxes], "job_name": self.job_name, "adjusted": self.adjusted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabeledFrame:
        return cls(data["source-ref"], data["width"], data["height"], tuple(Box(**b) for b in data["boxes"]),
                   data.get("job_name", ""), data.get("adjusted", False))


@dataclass
class ManifestReport:
    frames: list[LabeledFrame] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ManifestLineError(ValueError):
    pass


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestLineError(f"{what} is not a number ({value!r})")
    return float(value)


def parse_line(line: str, attribute: str) -> LabeledFrame:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestLineError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict) or "source-ref" not in record:
        raise ManifestLineError("no 'source-ref'")
    label, metadata = record.get(attribute), record.get(f"{attribute}-metadata")
    if not isinstance(label, dict) or not isinstance(metadata, dict):
        raise ManifestLineError(f"missing '{attribute}' or '{attribute}-metadata'")
    if metadata.get("type") != "groundtruth/object-detection":
        raise ManifestLineError(f"metadata type is {metadata.get('type')!r}, not groundtruth/object-detection")
    try:
        size = label["image_size"][0]
        width, height = int(_number(size["width"], "image width")), int(_number(size["height"], "image height"))
        annotations, objects, class_map = label["annotations"], metadata["objects"], metadata["class-map"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ManifestLineError(f"missing key {exc}") from exc
    if width <= 0 or height <= 0:
        raise ManifestLineError(f"image size {width}x{height} is not positive")
    if len(objects) != len(annotations):
        raise ManifestLineError(f"{len(annotations)} annotations but {len(objects)} metadata objects")
    boxes = []
    for index, (annotation, obj) in enumerate(zip(annotations, objects, strict=True)):
        try:
            x, y = _number(annotation["left"], "left"), _number(annotation["top"], "top")
            w, h = _number(annotation["width"], "width"), _number(annotation["height"], "height")
            class_id = str(int(annotation["class_id"]))
            confidence = _number(obj["confidence"], "confidence")
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestLineError(f"annotation {index}: bad or missing field {exc}") from exc
        if w <= 0 or h <= 0:
            raise ManifestLineError(f"annotation {index}: width/height must be positive, got {w}x{h}")
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise ManifestLineError(f"annotation {index}: box ({x}, {y}, {w}, {h}) lies outside the "
                                    f"{width}x{height} image")
        if class_id not in class_map:
            raise ManifestLineError(f"annotation {index}: class_id {class_id} is not in the class-map")
        if not 0.0 <= confidence <= 1.0:
            raise ManifestLineError(f"annotation {index}: confidence {confidence} is outside [0, 1]")
        boxes.append(Box(class_map[class_id], x, y, w, h, confidence))
    return LabeledFrame(record["source-ref"], width, height, tuple(boxes), str(metadata.get("job-name", "")),
                        metadata.get("adjustment-status") == "adjusted")


def parse_manifest(text: str, attribute: str) -> ManifestReport:
    report = ManifestReport()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            report.frames.append(parse_line(line, attribute))
        except ManifestLineError as exc:
            report.errors.append(f"output manifest line {number}: {exc}")
    return report
