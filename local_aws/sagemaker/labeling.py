"""The local Ground Truth: a simulated private workforce that draws bounding boxes, and the labeling-job runner.

Ground Truth is closed to new AWS customers, so the local SageMaker labels frames itself. A labeling job
(``CreateLabelingJob``, built-in bounding-box task or its label-adjustment workflow) runs in a thread:

1. the label category configuration (``LabelCategoryConfigS3Uri``) gives the classes, ``class_id`` = list order;
2. each line of the input manifest (``ManifestS3Uri``, JSON lines with ``source-ref``) is one data object;
3. ``NumberOfHumanWorkersPerDataObject`` simulated workers, drawn per object from a seeded pool, each draw boxes
   from the hidden truth of the frame with their own noise (see :class:`Noise`);
4. their answers are consolidated into one set of boxes with a confidence per box (:func:`consolidate`);
5. the output manifest is written where Ground Truth writes it,
   ``<S3OutputPath>/<job>/manifests/output/output.manifest``, with the worker responses under
   ``annotations/worker-response/iteration-1/<object>/<time>.json`` (one S3 object per data object: the
   slowest part of a job against the local S3, about 9,000 frames/min; ``LOCAL_WORKFORCE_WORKER_RESPONSES=0``
   skips them) and the consolidated labels, 1,000 objects a file, under
   ``annotations/consolidated-annotation/consolidation-response/iteration-1/``.

Where the truth comes from. Only this module reads the truth store (``StackSettings.truth_dir``,
``<sha256 of the video file>.json``, written by ``include.synthetic``): for a frame
``s3://<bucket>/<folder>/000012.jpg`` it reads ``<folder>/frames.json`` (the frame extractor's description: the
source video's ``sha256``, each frame's ``timestamp``, the frame and video sizes), takes the truth frame nearest to
the frame's timestamp (none when the nearest is more than one source frame away) and scales its boxes from the
video's size (the truth record's ``width``/``height``) to the frame's. A frame without truth (no ``frames.json``,
a video the project did not generate) shows the workers nothing: it is labeled with no boxes, as a human who finds
no object would label it. A class the label category configuration does not offer cannot be drawn.

Output format (Ground Truth's "Bounding Box Job Output", checked against the AWS developer guide): each output line
is the input line plus ``<LabelAttributeName>`` = ``{"image_size": [{"width", "height", "depth"}], "annotations":
[{"class_id", "left", "top", "width", "height"}]}`` (integer pixels) and ``<LabelAttributeName>-metadata`` =
``{"objects": [{"confidence"}], "class-map": {"<id>": "<label>"}, "type": "groundtruth/object-detection",
"human-annotated": "yes", "creation-date": "YYYY-MM-DDTHH:MM:SS.ffffff", "job-name": "labeling-job/<name>"}``;
an adjustment job adds ``"adjustment-status": "adjusted" | "unadjusted"`` (``adjusted`` when at least one worker
changed the boxes). As in AWS's example, the ``class-map`` holds the classes of the boxes in that line (``{}``
for a frame without boxes), and a line's existing keys are kept (the label attribute's own keys overwritten).

Consolidation, compared with Ground Truth's ``ACS-BoundingBox`` (documented as: "finds the most similar boxes from
different workers based on the Jaccard index, or intersection over union, of the boxes and averages them"):

- same: boxes of different workers are matched by IoU and a matched group is averaged (each edge's mean, rounded
  to whole pixels); one box per worker per group; a confidence per box in [0, 1]; with one worker per object every
  confidence is ``0.0`` (the developer guide: "If a single worker annotates a task ... the confidence score is set
  to 0.00");
- simplified (AWS's exact algorithm and its confidence model are not published): groups are formed greedily, the
  most similar pair first, joining two groups when they share no worker and their mean boxes overlap with
  IoU >= 0.5; a group is kept when at least half of the object's workers drew it; its class is the majority vote
  (a tie goes to the lowest ``class_id``); and its confidence, rounded to 2 decimals, is

      confidence = (v / n) x (1 - (1 - m) / sqrt(max(1, k - 1)))

  with ``n`` the workers on the object, ``k`` the boxes in the group, ``v`` those of the winning class and ``m``
  their mean IoU with the consolidated box: the vote share times an estimate of the consolidated box's IoU with
  the true box (the mean of k noisy boxes strays from the truth ``1 / sqrt(k - 1)`` times as far as the boxes
  stray from their mean). Identical boxes from every worker give 1.0; a box drawn by 3 of 5 workers with m = 0.85
  gives 0.6 x 0.894 = 0.54; agreement of more workers gives higher confidence. AWS's confidence model is not
  published (nor whether it weighs workers by estimated quality); every worker weighs the same here.

The simulated workforce (all noise seeded from the job name: the same job name gives the same labels):

- a pool of ``max(10, 2 N)`` workers, each with a skill factor drawn uniformly from [``skill_min``, ``skill_max``]
  (default [0.6, 1.6]) that scales all of that worker's noise; each object gets ``N`` distinct workers of the pool;
- per true box: missed with probability ``miss_rate x skill``; each edge moved by a normal error of standard
  deviation ``box_jitter x skill x`` the box's width (left/right) or height (top/bottom); the wrong class with
  probability ``wrong_class_rate x skill``; per frame, one spurious box with probability
  ``false_positive_rate x skill``;
- adjustment workers (``PreHumanTaskLambdaArn`` ending in ``PRE-AdjustmentBoundingBox``) start from the existing
  boxes of the line (the label attribute whose ``-metadata`` twin has ``"type": "groundtruth/object-detection"``;
  if several, the one with the latest ``creation-date``) and are ``adjustment_gain`` (default 3) times more
  accurate: a box that overlaps its object with IoU >= ``keep_iou`` (0.9) and has the right class is left as it
  is; one further off is redrawn; a wrong class is corrected; a spurious box is deleted; a missed object is added.

Noise knobs (defaults: ``box_jitter`` 0.06, ``miss_rate`` 0.05, ``wrong_class_rate`` 0.03,
``false_positive_rate`` 0.02, ``skill_min`` 0.6, ``skill_max`` 1.6, ``adjustment_gain`` 3.0, ``keep_iou`` 0.9):
environment variables ``LOCAL_WORKFORCE_<KNOB>`` (``LOCAL_WORKFORCE_MISS_RATE=0.1``) of the SageMaker service, then
the job's tag ``local:annotator-noise`` (local only, ignored by AWS) whose value is either a JSON object or, since
SageMaker's tag values may not hold ``{``, ``"`` or ``,``, ``knob=value`` pairs separated by spaces
(``box_jitter=0.1 miss_rate=0.2``). An unknown knob or a value out of range fails the job with the reason.

Failures, as AWS reports them on the job: a missing or unreadable input manifest or label category configuration,
an empty manifest, a line that is not a JSON object, a task other than bounding boxes, a streaming job: ``Failed``
with the reason. A data object whose image cannot be read (missing object, not an ``s3://`` reference, not an
image) is counted in ``LabelCounters.FailedNonRetryableError`` and left out of the output manifest; the job still
completes. ``StopLabelingJob`` ends the job ``Stopped`` with what was labeled so far written out (as AWS places
results obtained before a stop in the output location). Not simulated: automated data labeling, task time limits
and availability lifetimes, ``StoppingConditions``, SSE-KMS on the output objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from include.labeling.consolidation import (  # noqa: F401 - re-exported: the local Ground Truth's vocabulary
    DEFAULT_DEPTH,
    IOU_THRESHOLD,
    OBJECT_DETECTION,
    Box,
    ConsolidatedBox,
    consolidate,
    creation_date,
    existing_boxes,
    iou,
    label_metadata,
    label_value,
    match_boxes,
    output_line,
    pixel_box,
)
from include.labeling.ground_truth import parse_label_categories
from local_aws.sagemaker.resources import Resources, now
from local_aws.settings import REGION, StackSettings

log = logging.getLogger("local_aws.sagemaker.labeling")

LOG_GROUP = "/aws/sagemaker/LabelingJobs"
NOISE_TAG = "local:annotator-noise"
ENV_PREFIX = "LOCAL_WORKFORCE_"
WORKER_RESPONSES_ENV = "LOCAL_WORKFORCE_WORKER_RESPONSES"  # "0": skip the per-object worker-response files
BOUNDING_BOX_PRE = "PRE-BoundingBox"
ADJUSTMENT_PRE = "PRE-AdjustmentBoundingBox"
TRUTH_SCHEMA = "surgical-mlops/synthetic-truth/v1"
MATCH_IOU = 0.3  # an adjustment worker takes an existing box for the object it overlaps at least this much
COUNTERS_EVERY = 20  # frames between LabelCounters updates
LOG_EVERY_S = 1.0
CONSOLIDATION_BATCH = 1000  # data objects per consolidation-response file


# -- the simulated workforce ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Noise:
    """How the simulated workers err (see the module docstring); every rate is per box (or per frame for
    ``false_positive_rate``) before the worker's skill factor."""

    box_jitter: float = 0.06
    miss_rate: float = 0.05
    wrong_class_rate: float = 0.03
    false_positive_rate: float = 0.02
    skill_min: float = 0.6
    skill_max: float = 1.6
    adjustment_gain: float = 3.0
    keep_iou: float = 0.9

    def __post_init__(self) -> None:
        for name in ("box_jitter", "miss_rate", "wrong_class_rate", "false_positive_rate", "keep_iou"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not (math.isfinite(self.skill_min) and math.isfinite(self.skill_max)
                and 0.0 <= self.skill_min <= self.skill_max <= 10.0):
            raise ValueError(f"need 0 <= skill_min <= skill_max <= 10, got {self.skill_min} and {self.skill_max}")
        if not (math.isfinite(self.adjustment_gain) and 1.0 <= self.adjustment_gain <= 100.0):
            raise ValueError(f"adjustment_gain must be in [1, 100], got {self.adjustment_gain}")

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))


KNOBS = tuple(f.name for f in fields(Noise))


def noise_settings(tags: Sequence[Mapping[str, str]] = (), environ: Mapping[str, str] | None = None) -> Noise:
    """Defaults, then ``LOCAL_WORKFORCE_<KNOB>`` variables, then the job's ``local:annotator-noise`` tag.

    Raises ``ValueError`` naming the source of an unknown knob or a bad value.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, float] = {}
    for knob in KNOBS:
        raw = environ.get(ENV_PREFIX + knob.upper())
        if raw is not None and raw.strip():
            values[knob] = _knob_value(raw, f"{ENV_PREFIX}{knob.upper()}")
    for tag in tags:
        if tag.get("Key") == NOISE_TAG:
            values.update(parse_noise_tag(tag.get("Value", "")))
    try:
        return Noise(**values)
    except ValueError as exc:
        raise ValueError(f"annotator noise: {exc}") from exc


def parse_noise_tag(value: str) -> dict[str, float]:
    """``{"miss_rate": 0.1}`` or ``miss_rate=0.1 box_jitter=0.2`` -> ``{"miss_rate": 0.1, ...}``."""
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"tag {NOISE_TAG}: not a JSON object: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ValueError(f"tag {NOISE_TAG}: not a JSON object")
        pairs = list(parsed.items())
    else:
        pairs = []
        for item in text.split():
            knob, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"tag {NOISE_TAG}: expected knob=value, got {item!r}")
            pairs.append((knob, raw))
    values = {}
    for knob, raw in pairs:
        if knob not in KNOBS:
            raise ValueError(f"tag {NOISE_TAG}: unknown knob {knob!r}; known: {', '.join(KNOBS)}")
        values[knob] = _knob_value(raw, f"tag {NOISE_TAG} {knob}")
    return values


def _knob_value(raw: Any, what: str) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"{what}: not a number ({raw!r})")
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: not a number ({raw!r})") from exc
    if not math.isfinite(value):
        raise ValueError(f"{what}: not a finite number ({raw!r})")
    return value


@dataclass(frozen=True)
class Worker:
    worker_id: str
    skill: float


@dataclass(frozen=True)
class WorkerAnswer:
    worker: Worker
    boxes: tuple[Box, ...]
    seconds: float  # simulated time spent on the task


class Workforce:
    """The simulated private workforce of one labeling job (seeded from the job name)."""

    def __init__(self, job_name: str, classes: Sequence[str], workers_per_object: int,
                 noise: Noise | None = None) -> None:
        if workers_per_object < 1:
            raise ValueError(f"workers per object must be at least 1, got {workers_per_object}")
        if not classes:
            raise ValueError("a workforce needs at least one class")
        self.job_name, self.classes, self.n = job_name, list(classes), workers_per_object
        self.noise = noise or Noise()
        rng = random.Random(f"workforce:{job_name}")  # noqa: S311 - simulation, not security
        self.pool = [Worker(f"private.{REGION}.{rng.getrandbits(64):016x}",
                            rng.uniform(self.noise.skill_min, self.noise.skill_max))
                     for _ in range(max(10, 2 * workers_per_object))]

    def crew(self, object_id: int) -> list[Worker]:
        """The workers who label data object ``object_id``."""
        return random.Random(f"crew:{self.job_name}:{object_id}").sample(self.pool, self.n)  # noqa: S311

    def _rng(self, object_id: int, worker: Worker) -> random.Random:
        return random.Random(f"answer:{self.job_name}:{object_id}:{worker.worker_id}")  # noqa: S311

    def annotate(self, object_id: int, truth: Sequence[Box], width: int, height: int) -> list[WorkerAnswer]:
        """First pass: every worker of the object's crew draws boxes around what they see."""
        answers = []
        for worker in self.crew(object_id):
            rng, s = self._rng(object_id, worker), worker.skill
            boxes = []
            for true_box in truth:
                if rng.random() < min(1.0, self.noise.miss_rate * s):
                    continue
                class_id = self._class(rng, true_box.class_id, self.noise.wrong_class_rate * s)
                boxes.append(self._draw(rng, true_box, class_id, self.noise.box_jitter * s, width, height))
            if rng.random() < min(1.0, self.noise.false_positive_rate * s):
                boxes.append(self._spurious(rng, width, height))
            answers.append(WorkerAnswer(worker, tuple(boxes), self._seconds(rng, len(boxes))))
        return answers

    def adjust(self, object_id: int, truth: Sequence[Box], existing: Sequence[Box], width: int,
               height: int) -> list[WorkerAnswer]:
        """Label adjustment: every worker corrects the existing boxes (``adjustment_gain`` times more accurate)."""
        answers = []
        matched = match_boxes(existing, truth, MATCH_IOU)
        taken = set(matched.values())
        gain = self.noise.adjustment_gain
        for worker in self.crew(object_id):
            rng, s = self._rng(object_id, worker), worker.skill / gain
            miss, wrong = min(1.0, self.noise.miss_rate * s), self.noise.wrong_class_rate * s
            boxes = []
            for index, box in enumerate(existing):
                if index not in matched:  # spurious: deleted unless overlooked
                    if rng.random() < miss:
                        boxes.append(box)
                    continue
                true_box = truth[matched[index]]
                class_id = self._class(rng, true_box.class_id, wrong)
                if iou(box, true_box) >= self.noise.keep_iou and class_id == box.class_id:
                    boxes.append(box)
                elif iou(box, true_box) >= self.noise.keep_iou:
                    boxes.append(replace(box, class_id=class_id))
                else:
                    boxes.append(self._draw(rng, true_box, class_id, self.noise.box_jitter * s, width, height))
            for index, true_box in enumerate(truth):
                if index not in taken and rng.random() >= miss:  # an object the first pass missed
                    class_id = self._class(rng, true_box.class_id, wrong)
                    boxes.append(self._draw(rng, true_box, class_id, self.noise.box_jitter * s, width, height))
            if rng.random() < min(1.0, self.noise.false_positive_rate * s):
                boxes.append(self._spurious(rng, width, height))
            answers.append(WorkerAnswer(worker, tuple(boxes), self._seconds(rng, len(boxes))))
        return answers

    def _class(self, rng: random.Random, class_id: int, wrong_rate: float) -> int:
        if len(self.classes) > 1 and rng.random() < min(1.0, wrong_rate):
            return rng.choice([c for c in range(len(self.classes)) if c != class_id])
        return class_id

    @staticmethod
    def _draw(rng: random.Random, true_box: Box, class_id: int, jitter: float, width: int, height: int) -> Box:
        sx, sy = jitter * true_box.width, jitter * true_box.height
        return pixel_box(class_id, true_box.left + rng.gauss(0, sx), true_box.top + rng.gauss(0, sy),
                         true_box.right + rng.gauss(0, sx), true_box.bottom + rng.gauss(0, sy), width, height)

    def _spurious(self, rng: random.Random, width: int, height: int) -> Box:
        w, h = rng.uniform(0.05, 0.25) * width, rng.uniform(0.05, 0.25) * height
        left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
        return pixel_box(rng.randrange(len(self.classes)), left, top, left + w, top + h, width, height)

    @staticmethod
    def _seconds(rng: random.Random, boxes: int) -> float:
        return round(4.0 + boxes * rng.uniform(3.0, 9.0) + rng.expovariate(1 / 3.0), 3)


# -- frames and their hidden truth ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameInfo:
    width: int
    height: int
    depth: int
    truth: tuple[Box, ...] | None  # in frame pixels; None: the workers see nothing (no truth for this frame)


def split_uri(uri: str) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an S3 object URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"not an S3 object URI: {uri!r}")
    return bucket, key


class FrameCatalog:
    """What the workers see of a frame: its size and its true boxes. Caches one listing, one ``frames.json`` per
    folder and one truth record per video, so a frame costs no request of its own."""

    def __init__(self, s3: Any, truth_dir: Path, classes: Sequence[str]) -> None:
        self.s3, self.truth_dir = s3, Path(truth_dir)
        self.class_ids = {name: i for i, name in enumerate(classes)}
        self._listings: dict[tuple[str, str], set[str]] = {}
        self._frames: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._truths: dict[str, dict[str, Any] | None] = {}

    def info(self, uri: str) -> FrameInfo | None:
        """None when the image cannot be read (missing object, not an image)."""
        bucket, key = split_uri(uri)
        folder = str(PurePosixPath(key).parent) if "/" in key else ""
        if key not in self._listing(bucket, folder):
            return None
        name = PurePosixPath(key).name
        meta = self._frames_json(bucket, folder)
        if meta is not None and meta["width"] and meta["height"]:
            width, height, depth = meta["width"], meta["height"], DEFAULT_DEPTH
        else:
            size = self._image_size(bucket, key)
            if size is None:
                return None
            width, height, depth = size
        timestamp = meta["timestamps"].get(name) if meta is not None else None
        truth = None
        if meta is not None and timestamp is not None and meta["sha256"]:
            truth = self._frame_truth(meta, timestamp, width, height)
        return FrameInfo(width, height, depth, truth)

    def _listing(self, bucket: str, folder: str) -> set[str]:
        cache_key = (bucket, folder)
        if cache_key not in self._listings:
            keys: set[str] = set()
            prefix = f"{folder}/" if folder else ""
            try:
                for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                                              Delimiter="/"):
                    keys.update(obj["Key"] for obj in page.get("Contents", []))
            except ClientError as exc:
                log.warning("cannot list s3://%s/%s: %s", bucket, prefix, exc)
            self._listings[cache_key] = keys
        return self._listings[cache_key]

    def _frames_json(self, bucket: str, folder: str) -> dict[str, Any] | None:
        cache_key = (bucket, folder)
        if cache_key not in self._frames:
            self._frames[cache_key] = None
            key = f"{folder}/frames.json" if folder else "frames.json"
            if key in self._listing(bucket, folder):
                try:
                    document = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                    video = document.get("video") or {}
                    self._frames[cache_key] = {
                        "sha256": (document.get("source") or {}).get("sha256"),
                        "width": int(document.get("width") or 0), "height": int(document.get("height") or 0),
                        "video_width": video.get("width"), "video_height": video.get("height"),
                        "timestamps": {f["file"]: float(f["timestamp"]) for f in document.get("frames", [])},
                    }
                except (ClientError, ValueError, TypeError, KeyError, AttributeError) as exc:
                    log.warning("s3://%s/%s is not a usable frames.json: %s", bucket, key, exc)
        return self._frames[cache_key]

    def _truth(self, sha256: str) -> dict[str, Any] | None:
        if sha256 not in self._truths:
            self._truths[sha256] = None
            path = self.truth_dir / f"{sha256}.json"
            if len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256) and path.is_file():
                try:
                    record = json.loads(path.read_text())
                    if record.get("schema") == TRUTH_SCHEMA:
                        frames = sorted(record["frames"], key=lambda f: f["t"])
                        self._truths[sha256] = {"times": [float(f["t"]) for f in frames], "frames": frames,
                                                "width": record.get("width"), "height": record.get("height"),
                                                "fps": float(record.get("fps") or 0)}
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("truth %s is unreadable: %s", path.name, exc)
        return self._truths[sha256]

    def _frame_truth(self, meta: dict[str, Any], timestamp: float, width: int,
                     height: int) -> tuple[Box, ...] | None:
        record = self._truth(meta["sha256"])
        if record is None or not record["times"]:
            return None
        times = record["times"]
        at = bisect_left(times, timestamp)
        nearest = min((i for i in (at - 1, at) if 0 <= i < len(times)), key=lambda i: abs(times[i] - timestamp))
        interval = 1 / record["fps"] if record["fps"] > 0 else 0.04
        if abs(times[nearest] - timestamp) > interval + 1e-6:
            return None
        source_w = record["width"] or meta["video_width"] or width
        source_h = record["height"] or meta["video_height"] or height
        sx, sy = width / source_w, height / source_h
        boxes = []
        for b in record["frames"][nearest]["boxes"]:
            class_id = self.class_ids.get(b["label"])
            if class_id is None:  # the task does not offer this class: nobody can draw it
                continue
            left, top = max(0.0, b["x"] * sx), max(0.0, b["y"] * sy)
            right, bottom = min(float(width), (b["x"] + b["w"]) * sx), min(float(height), (b["y"] + b["h"]) * sy)
            if right - left >= 1 and bottom - top >= 1:
                boxes.append(Box(class_id, left, top, right - left, bottom - top))
        return tuple(boxes)

    def _image_size(self, bucket: str, key: str) -> tuple[int, int, int] | None:
        try:
            head = self.s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-131071")["Body"].read()
        except ClientError:
            return None
        return image_size(head)


def image_size(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, depth) from the first bytes of a JPEG or PNG; None for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(data[25], 3)
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), channels
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height, data[i + 9]) if width and height else None
        i += 2 + length
    return None


# -- the labeling-job runner ---------------------------------------------------------------------------------------
class JobFailed(Exception):
    """The job cannot run; ``str(exc)`` is its ``FailureReason``."""


class _LogWriter:
    """The job's CloudWatch Logs stream; the service's own log if CloudWatch Logs cannot be reached."""

    def __init__(self, name: str, client: Any | None) -> None:
        self.name = name
        self.stream: Any = None
        try:
            from local_aws.sagemaker.logs import LogStream

            self.stream = LogStream(LOG_GROUP, name, client=client)
        except (ClientError, BotoCoreError) as exc:
            log.warning("labeling job %s: no CloudWatch Logs stream (%s); logging here only", name, exc)

    def write(self, line: str) -> None:
        log.info("labeling job %s: %s", self.name, line)
        if self.stream is not None:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.stream.write(line)

    def flush(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(ClientError, BotoCoreError):
                self.stream.flush()


class LabelingRunner:
    """Runs labeling jobs in threads (``start``/``stop``), or in the caller's thread (``run``)."""

    def __init__(self, resources: Resources, settings: StackSettings, s3: Any | None = None,
                 logs: Any | None = None, clock: Callable[[], float] = time.time) -> None:
        self.resources, self.settings = resources, settings
        self._s3, self._logs, self._clock = s3, logs, clock
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = boto3.client("s3")
        return self._s3

    def _stop_event(self, name: str) -> threading.Event:
        with self._lock:
            return self._stops.setdefault(name, threading.Event())

    def start(self, name: str) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(name,), daemon=True, name=f"LabelingJob:{name}")
        with self._lock:
            self._stops[name] = threading.Event()  # a new job of a reused name starts unstopped
            self._threads[name] = thread
        thread.start()
        return thread

    def stop(self, name: str) -> None:
        """Ask the job to stop after its current data object (``StopLabelingJob`` has set it ``Stopping``)."""
        self._stop_event(name).set()
        with self._lock:
            running = name in self._threads
        if not running:  # it ended between the status check and now: do not leave it Stopping
            def settle(d: dict[str, Any]) -> None:
                if d.get("LabelingJobStatus") == "Stopping":
                    done = "LabelingJobOutput" in d and not d.get("LabelCounters", {}).get("Unlabeled")
                    d["LabelingJobStatus"] = "Completed" if done else "Stopped"

            with contextlib.suppress(Exception):
                self.resources.update("LabelingJob", name, settle)

    def wait(self, name: str, timeout: float | None = None) -> bool:
        """Wait for a job started with ``start``; True when it has ended."""
        with self._lock:
            thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def run(self, name: str) -> None:
        """Label every data object of the job and record the outcome on its description."""
        stream: _LogWriter | None = None
        try:
            stream = _LogWriter(name, self._logs)
            self._label(name, stream)
        except JobFailed as exc:
            if stream:
                stream.write(f"FAILED: {exc}")
            self._finish(name, "Failed", reason=str(exc))
        except Exception as exc:  # a runner bug must fail the job, not leave it InProgress forever
            log.exception("labeling job %s failed in the runner", name)
            self._finish(name, "Failed", reason=f"InternalServerError: local labeling runner error: {exc}")
        finally:
            if stream:
                stream.flush()
            with self._lock:
                self._stops.pop(name, None)
                self._threads.pop(name, None)

    # -- the job ----------------------------------------------------------------------------------------------------
    def _label(self, name: str, stream: _LogWriter) -> None:
        job = self.resources.describe("LabelingJob", name)
        source = job["InputConfig"]["DataSource"]
        if "S3DataSource" not in source:
            raise JobFailed("ClientError: streaming labeling jobs (SnsDataSource) are not supported by the local "
                            "SageMaker; give InputConfig.DataSource.S3DataSource.ManifestS3Uri")
        task = job["HumanTaskConfig"]
        pre = task.get("PreHumanTaskLambdaArn", "")
        adjustment = pre.endswith(ADJUSTMENT_PRE)
        if not (adjustment or pre.endswith(BOUNDING_BOX_PRE)):
            raise JobFailed(f"ClientError: the local workforce labels bounding boxes only: PreHumanTaskLambdaArn "
                            f"must be Ground Truth's {BOUNDING_BOX_PRE} or {ADJUSTMENT_PRE} function, got {pre!r}")
        attribute = job["LabelAttributeName"]
        try:
            noise = noise_settings(self.resources.list_tags(job["LabelingJobArn"])["Tags"])
        except ValueError as exc:
            raise JobFailed(f"ClientError: {exc}") from exc
        label_uri = job.get("LabelCategoryConfigS3Uri")
        if not label_uri:
            raise JobFailed("ClientError: LabelCategoryConfigS3Uri is required for a bounding box labeling job")
        try:
            classes = parse_label_categories(self._read(label_uri, "the label category configuration"), label_uri)
        except ValueError as exc:
            raise JobFailed(f"ClientError: {exc}") from exc
        manifest_uri = source["S3DataSource"]["ManifestS3Uri"]
        records = self._manifest(manifest_uri)
        workers = int(task.get("NumberOfHumanWorkersPerDataObject") or 1)
        output_root = f"{job['OutputConfig']['S3OutputPath'].rstrip('/')}/{name}"
        output_uri = f"{output_root}/manifests/output/output.manifest"
        try:
            split_uri(output_uri)
        except ValueError as exc:
            raise JobFailed(f"ClientError: OutputConfig.S3OutputPath: {exc}") from exc

        write_responses = os.environ.get(WORKER_RESPONSES_ENV, "1").strip().lower() not in ("0", "false", "no")
        workforce = Workforce(name, classes, workers, noise)
        catalog = FrameCatalog(self.s3, self.settings.truth_dir, classes)
        total = len(records)
        stream.write(f"local workforce: {'label adjustment' if adjustment else 'bounding box'} job, {total} data "
                     f"object(s), {workers} worker(s) per object, classes {', '.join(classes)}; noise: "
                     f"{noise.describe()}")
        self._counters(name, 0, 0, total)
        stop = self._stop_event(name)
        lines: list[str] = []
        consolidated: list[dict[str, Any]] = []
        uploads: list[Future[Any]] = []
        labeled = failed = batch = 0
        last_log = time.monotonic()
        started = time.monotonic()
        stopped = False
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"gt-{name[:20]}") as pool:
            for object_id, record in enumerate(records):
                if stop.is_set():
                    stopped = True
                    break
                outcome = self._object(object_id, record, attribute, adjustment, workforce, catalog, name)
                if outcome is None:
                    failed += 1
                else:
                    line, answers, width, height = outcome
                    labeled += 1
                    lines.append(json.dumps(line, separators=(",", ":")))
                    consolidated.append({"datasetObjectId": str(object_id), "consolidatedAnnotation": {"content": {
                        attribute: line[attribute], f"{attribute}-metadata": line[f"{attribute}-metadata"]}}})
                    if write_responses:
                        uploads.append(pool.submit(
                            self._put, f"{output_root}/annotations/worker-response/iteration-1/{object_id}/"
                                       f"{_stamp(self._clock())}.json",
                            worker_response(answers, classes, width, height, self._clock())))
                done = labeled + failed
                if len(consolidated) >= CONSOLIDATION_BATCH:
                    batch += 1
                    uploads.append(pool.submit(self._put, _consolidation_key(output_root, batch), consolidated))
                    consolidated = []
                if done % COUNTERS_EVERY == 0:
                    self._counters(name, labeled, failed, total - done)
                    if time.monotonic() - last_log >= LOG_EVERY_S:
                        last_log = time.monotonic()
                        stream.write(f"labeled {labeled}/{total} frames ({failed} failed)")
            if consolidated:
                batch += 1
                uploads.append(pool.submit(self._put, _consolidation_key(output_root, batch), consolidated))
            upload_errors = [f.exception() for f in uploads if f.exception() is not None]
        if upload_errors:
            stream.write(f"warning: {len(upload_errors)} annotation file(s) could not be written: {upload_errors[0]}")
        try:
            self._put(output_uri, "".join(f"{line}\n" for line in lines))
        except (ClientError, BotoCoreError) as exc:
            raise JobFailed(f"ClientError: cannot write the output manifest to {output_uri}: {exc}") from exc
        wall = time.monotonic() - started
        rate = (labeled + failed) / wall * 60 if wall > 0 else 0.0
        unlabeled = total - labeled - failed
        status = "Stopped" if stopped else "Completed"
        stream.write(f"{status.lower()}: {labeled} labeled, {failed} failed, {unlabeled} unlabeled of {total} in "
                     f"{wall:.2f} s ({rate:,.0f} frames/min); output {output_uri}")
        self._finish(name, status, counters=(labeled, failed, unlabeled),
                     output={"OutputDatasetS3Uri": output_uri})

    def _object(self, object_id: int, record: dict[str, Any], attribute: str, adjustment: bool,
                workforce: Workforce, catalog: FrameCatalog, name: str,
                ) -> tuple[dict[str, Any], list[WorkerAnswer], int, int] | None:
        """One data object -> (output line, worker answers, width, height), or None if its image is unreadable."""
        try:
            frame = catalog.info(record.get("source-ref"))  # type: ignore[arg-type]
        except ValueError:
            frame = None
        if frame is None:
            return None
        truth = frame.truth
        status = None
        if adjustment:
            existing = existing_boxes(record, attribute, workforce.classes, frame.width, frame.height)
            if truth is None:  # nothing to compare with: every worker leaves the boxes as they are
                answers = [WorkerAnswer(w, tuple(existing), 3.0) for w in workforce.crew(object_id)]
            else:
                answers = workforce.adjust(object_id, truth, existing, frame.width, frame.height)
            before = sorted(b.key() for b in existing)
            status = "adjusted" if any(sorted(b.key() for b in a.boxes) != before for a in answers) else "unadjusted"
        elif truth is None:
            answers = [WorkerAnswer(w, (), 3.0) for w in workforce.crew(object_id)]
        else:
            answers = workforce.annotate(object_id, truth, frame.width, frame.height)
        boxes = consolidate([a.boxes for a in answers], frame.width, frame.height, workers=workforce.n)
        line = output_line(record, attribute, boxes, frame.width, frame.height, workforce.classes, name,
                           creation_date(self._clock()), frame.depth, status)
        return line, answers, frame.width, frame.height

    def _read(self, uri: str, what: str) -> str:
        try:
            bucket, key = split_uri(uri)
        except ValueError as exc:
            raise JobFailed(f"ClientError: {what}: {exc}") from exc
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise JobFailed(f"ClientError: cannot read {what} {uri}: {error.get('Code', 'Error')} "
                            f"({error.get('Message', exc)})") from exc
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobFailed(f"ClientError: {what} {uri} is not UTF-8 text: {exc}") from exc

    def _manifest(self, uri: str) -> list[dict[str, Any]]:
        text = self._read(uri, "the input manifest")
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobFailed(f"ClientError: the input manifest {uri} is not JSON lines: line {number}: "
                                f"{exc}") from exc
            if not isinstance(record, dict):
                raise JobFailed(f"ClientError: the input manifest {uri}: line {number} is not a JSON object")
            records.append(record)
        if not records:
            raise JobFailed(f"ClientError: the input manifest {uri} has no data objects")
        return records

    def _put(self, uri: str, body: Any) -> None:
        bucket, key = split_uri(uri)
        data = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        self.s3.put_object(Bucket=bucket, Key=key, Body=data.encode())

    def _counters(self, name: str, labeled: int, failed: int, unlabeled: int) -> None:
        counters = {"TotalLabeled": labeled, "HumanLabeled": labeled, "MachineLabeled": 0,
                    "FailedNonRetryableError": failed, "Unlabeled": unlabeled}
        self.resources.update("LabelingJob", name, lambda d: d.update(LabelCounters=counters,
                                                                       LastModifiedTime=now()))

    def _finish(self, name: str, status: str, reason: str | None = None,
                counters: tuple[int, int, int] | None = None, output: dict[str, str] | None = None) -> None:
        def change(d: dict[str, Any]) -> None:
            final = status
            if final == "Completed" and d.get("LabelingJobStatus") == "Stopping":
                final = "Stopped"  # a stop that arrived after the last object
            d["LabelingJobStatus"] = final
            d["LastModifiedTime"] = now()
            if reason:
                d["FailureReason"] = reason[:1024]
            if counters is not None:
                labeled, failed, unlabeled = counters
                d["LabelCounters"] = {"TotalLabeled": labeled, "HumanLabeled": labeled, "MachineLabeled": 0,
                                      "FailedNonRetryableError": failed, "Unlabeled": unlabeled}
            if output is not None:
                d["LabelingJobOutput"] = output

        try:
            self.resources.update("LabelingJob", name, change)
        except Exception:  # the job was deleted meanwhile
            log.exception("labeling job %s: cannot record status %s", name, status)


def worker_response(answers: Sequence[WorkerAnswer], classes: Sequence[str], width: int, height: int,
                    at: float) -> dict[str, Any]:
    """One data object's worker responses as Ground Truth stores them (the built-in template's ``boundingBox``)."""
    result = []
    for answer in answers:
        submitted = at
        accepted = at - answer.seconds
        result.append({
            "acceptanceTime": _iso_z(accepted),
            "answerContent": {"boundingBox": {
                "boundingBoxes": [{"height": round(b.height), "label": classes[b.class_id], "left": round(b.left),
                                   "top": round(b.top), "width": round(b.width)} for b in answer.boxes],
                "inputImageProperties": {"height": height, "width": width}}},
            "submissionTime": _iso_z(submitted),
            "timeSpentInSeconds": answer.seconds,
            "workerId": answer.worker.worker_id,
            "workerMetadata": {"identityData": {
                "identityProviderType": "Cognito",
                "issuer": f"https://cognito-idp.{REGION}.amazonaws.com/{REGION}_localworkforce",
                "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, answer.worker.worker_id))}},
        })
    return {"answers": result}


def _iso_z(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d_%H:%M:%S")


def _consolidation_key(output_root: str, batch: int) -> str:
    return (f"{output_root}/annotations/consolidated-annotation/consolidation-response/iteration-1/"
            f"batch-{batch:05d}.json")


__all__ = ["Box", "ConsolidatedBox", "FrameCatalog", "FrameInfo", "JobFailed", "LabelingRunner", "Noise",
           "WorkerAnswer", "Workforce", "consolidate", "creation_date", "existing_boxes", "image_size", "iou",
           "label_metadata", "label_value", "match_boxes", "noise_settings", "output_line",
           "parse_noise_tag", "pixel_box", "worker_response"]
