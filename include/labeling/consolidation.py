"""Bounding boxes in Ground Truth's output format, and the consolidation of several annotators' boxes into one set.

Shared by the two labeling backends: the local Ground Truth (``local_aws.sagemaker.labeling``, which consolidates
as AWS's ``ACS-BoundingBox`` Lambda does; its module docstring describes the rule and the confidence formula) and
the Label Studio backend (``include.labeling.label_studio``), where the pipeline consolidates the annotations it
exports, so both write the same output manifest and the review step reads the same confidences.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

OBJECT_DETECTION = "groundtruth/object-detection"
IOU_THRESHOLD = 0.5
DEFAULT_DEPTH = 3

# -- boxes ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixels of the labeled image: ``left``/``top`` corner, ``width``/``height``."""

    class_id: int
    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def key(self) -> tuple[int, int, int, int, int]:
        return (self.class_id, round(self.left), round(self.top), round(self.width), round(self.height))

    def annotation(self) -> dict[str, int]:
        """The box as a Ground Truth annotation: integer pixels, keys in AWS's order."""
        return {"class_id": int(self.class_id), "left": round(self.left), "top": round(self.top),
                "width": round(self.width), "height": round(self.height)}


@dataclass(frozen=True, slots=True)
class ConsolidatedBox:
    box: Box
    confidence: float
    support: int  # workers whose box is in the group


def iou(a: Box, b: Box) -> float:
    """Intersection over union (Jaccard index) of two boxes; 0 when either is empty."""
    iw = min(a.right, b.right) - max(a.left, b.left)
    ih = min(a.bottom, b.bottom) - max(a.top, b.top)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def pixel_box(class_id: int, left: float, top: float, right: float, bottom: float, width: int,
              height: int) -> Box:
    """Edges rounded to whole pixels and clipped to the image; at least one pixel wide and high."""
    x0 = min(max(round(left), 0), width - 1)
    y0 = min(max(round(top), 0), height - 1)
    x1 = min(max(round(right), x0 + 1), width)
    y1 = min(max(round(bottom), y0 + 1), height)
    return Box(class_id, x0, y0, x1 - x0, y1 - y0)


def consolidate(answers: Sequence[Sequence[Box]], width: int, height: int, *, workers: int | None = None,
                iou_threshold: float = IOU_THRESHOLD) -> list[ConsolidatedBox]:
    """The boxes of several workers (one list per worker) -> one set of boxes with a confidence each.

    See the module docstring for the rule and the confidence formula. ``workers`` defaults to ``len(answers)``
    (a worker who drew nothing still counts). Returns boxes in integer pixels inside the image, ordered by the
    position of their group's first box.
    """
    n = workers if workers is not None else len(answers)
    items = [(w, box) for w, boxes in enumerate(answers) for box in boxes if box.width > 0 and box.height > 0]
    if not items or n <= 0:
        return []
    parent = list(range(len(items)))
    members: dict[int, list[int]] = {i: [i] for i in range(len(items))}
    owners: dict[int, set[int]] = {i: {items[i][0]} for i in range(len(items))}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = []
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if items[i][0] != items[j][0]:
                overlap = iou(items[i][1], items[j][1])
                if overlap >= iou_threshold:
                    pairs.append((-overlap, i, j))
    pairs.sort()
    for _, i, j in pairs:
        ri, rj = root(i), root(j)
        if ri == rj or owners[ri] & owners[rj]:
            continue
        if iou(_mean_box([items[k][1] for k in members[ri]]),
               _mean_box([items[k][1] for k in members[rj]])) < iou_threshold:
            continue
        keep, gone = min(ri, rj), max(ri, rj)
        parent[gone] = keep
        members[keep] = sorted(members[keep] + members.pop(gone))
        owners[keep] |= owners.pop(gone)
    result = []
    for group_root in sorted(members):
        group = [items[k][1] for k in members[group_root]]
        support = len(owners[group_root])
        if 2 * support < n:
            continue
        mean = _mean_box(group)
        votes = Counter(b.class_id for b in group)
        class_id = min(votes, key=lambda c: (-votes[c], c))
        box = pixel_box(class_id, mean.left, mean.top, mean.right, mean.bottom, width, height)
        mean_iou = sum(iou(b, box) for b in group) / len(group)
        # The mean of k boxes strays from the true box 1/sqrt(k - 1) times as far as the boxes stray from their mean.
        estimated_iou = 1.0 - (1.0 - mean_iou) / math.sqrt(max(1, len(group) - 1))
        confidence = 0.0 if n == 1 else round(min(1.0, max(0.0, votes[class_id] / n * estimated_iou)), 2)
        result.append(ConsolidatedBox(box, confidence, support))
    return result


def _mean_box(boxes: Sequence[Box]) -> Box:
    k = len(boxes)
    left = sum(b.left for b in boxes) / k
    top = sum(b.top for b in boxes) / k
    right = sum(b.right for b in boxes) / k
    bottom = sum(b.bottom for b in boxes) / k
    return Box(boxes[0].class_id, left, top, right - left, bottom - top)


def match_boxes(found: Sequence[Box], truth: Sequence[Box], min_iou: float = IOU_THRESHOLD) -> dict[int, int]:
    """Greedy one-to-one matching by IoU, the best pair first: ``{index in found: index in truth}``."""
    pairs = sorted((-iou(f, t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for negative, i, j in pairs:
        if -negative < min_iou:
            break
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


# -- Ground Truth's output format ----------------------------------------------------------------------------------
def creation_date(at: float | None = None) -> str:
    """Ground Truth's ``creation-date``: UTC, microseconds, no zone (``2018-10-18T22:18:13.527256``)."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def label_value(boxes: Sequence[ConsolidatedBox], width: int, height: int,
                depth: int = DEFAULT_DEPTH) -> dict[str, Any]:
    return {"image_size": [{"width": int(width), "height": int(height), "depth": int(depth)}],
            "annotations": [c.box.annotation() for c in boxes]}


def label_metadata(boxes: Sequence[ConsolidatedBox], classes: Sequence[str], job_name: str, created: str,
                   adjustment_status: str | None = None) -> dict[str, Any]:
    present = sorted({c.box.class_id for c in boxes})
    metadata: dict[str, Any] = {
        "objects": [{"confidence": c.confidence} for c in boxes],
        "class-map": {str(i): classes[i] for i in present},
        "type": OBJECT_DETECTION,
        "human-annotated": "yes",
        "creation-date": created,
        "job-name": f"labeling-job/{job_name.lower()}",
    }
    if adjustment_status is not None:
        metadata["adjustment-status"] = adjustment_status
    return metadata


def output_line(record: Mapping[str, Any], attribute: str, boxes: Sequence[ConsolidatedBox], width: int,
                height: int, classes: Sequence[str], job_name: str, created: str, depth: int = DEFAULT_DEPTH,
                adjustment_status: str | None = None) -> dict[str, Any]:
    """The input manifest line plus the label attribute and its ``-metadata`` (replacing any such keys)."""
    line = {k: v for k, v in record.items() if k not in (attribute, f"{attribute}-metadata")}
    line[attribute] = label_value(boxes, width, height, depth)
    line[f"{attribute}-metadata"] = label_metadata(boxes, classes, job_name, created, adjustment_status)
    return line


def existing_boxes(record: Mapping[str, Any], exclude: str, classes: Sequence[str], width: int,
                   height: int) -> list[Box]:
    """The boxes an adjustment job starts from: the line's object-detection label attribute (the latest, if
    several; never ``exclude``, the job's own attribute), classes mapped by name, scaled to ``width`` x ``height``."""
    candidates = []
    for key, value in record.items():
        metadata = record.get(f"{key}-metadata")
        if (key != exclude and isinstance(value, dict) and isinstance(metadata, dict)
                and metadata.get("type") == OBJECT_DETECTION):
            candidates.append((str(metadata.get("creation-date", "")), key))
    if not candidates:
        return []
    key = max(candidates)[1]
    value, metadata = record[key], record[f"{key}-metadata"]
    class_map = metadata.get("class-map") or {}
    index = {name: i for i, name in enumerate(classes)}
    try:
        size = value.get("image_size", [{}])[0]
        sx = width / float(size.get("width") or width)
        sy = height / float(size.get("height") or height)
    except (TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError):
        sx = sy = 1.0
    boxes = []
    for annotation in value.get("annotations") or []:
        try:
            old = int(annotation["class_id"])
            left, top = float(annotation["left"]) * sx, float(annotation["top"]) * sy
            right = left + float(annotation["width"]) * sx
            bottom = top + float(annotation["height"]) * sy
        except (KeyError, TypeError, ValueError):
            continue
        name = class_map.get(str(old))
        class_id = old if name is None else index.get(name, -1)  # a label the job no longer offers: dropped
        if not 0 <= class_id < len(classes) or right <= left or bottom <= top:
            continue
        boxes.append(pixel_box(class_id, left, top, right, bottom, width, height))
    return boxes
