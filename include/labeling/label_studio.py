"""The Label Studio labeling backend's formats: a Ground Truth labeling request -> a Label Studio round, and back.

The labeling DAG builds one ``CreateLabelingJob`` request per round whichever the backend (``select_frames`` for the
first pass, ``triage`` for the review), so this module reads the same request:

- the round's project title is the job name (the idempotency key: a re-run finds the project it created);
- the classes come from the label category configuration, the frames from the input manifest (one task per line,
  the line kept in the task's ``meta`` so the output line can carry it on), ``NumberOfHumanWorkersPerDataObject``
  is the project's overlap (annotations per task), and a request whose pre-annotation Lambda is the adjustment
  one (``PRE-AdjustmentBoundingBox``, as Ground Truth decides it) is a review round: its tasks start from the
  line's existing boxes;
- first-pass tasks start from the champion model's predictions when there are some (annotators correct rather
  than draw);
- the finished round is written as Ground Truth writes a job's output: ``<S3OutputPath>/<job>/manifests/output/
  output.manifest``, each line the input line plus ``<LabelAttributeName>`` and its ``-metadata``, the annotators'
  boxes consolidated as the Ground Truth backend consolidates them (``include.labeling.consolidation``), so the
  triage, the review and the dataset code are the same for both backends.

Coordinates: Label Studio's rectangles are in percent of the image (``x``, ``y``, ``width``, ``height``, with
``original_width``/``original_height``); Ground Truth's in whole pixels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from include.labeling.consolidation import Box, consolidate, creation_date, existing_boxes, output_line, pixel_box

FROM_NAME, TO_NAME = "label", "image"
ADJUSTMENT_LAMBDA = "PRE-AdjustmentBoundingBox"
TASK_PAGE_SIZE = 200
COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")


class LabelStudioFormatError(ValueError):
    """A request, a task or an annotation that cannot be turned into the other format."""


@dataclass(frozen=True)
class Round:
    """One labeling round: what the ``CreateLabelingJob`` request says, in Label Studio's terms."""

    name: str
    attribute: str
    manifest_uri: str
    label_config_uri: str
    output_path: str
    workers: int
    review: bool

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> Round:
        try:
            task = request["HumanTaskConfig"]
            return cls(name=request["LabelingJobName"], attribute=request["LabelAttributeName"],
                       manifest_uri=request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"],
                       label_config_uri=request["LabelCategoryConfigS3Uri"],
                       output_path=request["OutputConfig"]["S3OutputPath"].rstrip("/"),
                       workers=int(task["NumberOfHumanWorkersPerDataObject"]),
                       review=str(task.get("PreHumanTaskLambdaArn", "")).endswith(ADJUSTMENT_LAMBDA))
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelStudioFormatError(f"not a CreateLabelingJob request for a bounding-box task: {exc!r}") from exc

    @property
    def output_manifest_uri(self) -> str:
        return f"{self.output_path}/{self.name}/manifests/output/output.manifest"

    def describe(self, counters: Mapping[str, int], project_url: str) -> dict[str, Any]:
        """The round as ``DescribeLabelingJob`` shows a finished job: what the DAG's next tasks read."""
        return {"LabelingJobName": self.name, "LabelingJobStatus": "Completed", "LabelAttributeName": self.attribute,
                "LabelCounters": dict(counters), "LabelingJobOutput": {"OutputDatasetS3Uri": self.output_manifest_uri},
                "LabelStudioProject": project_url}


def label_config(classes: Sequence[str], review: bool = False) -> str:
    """The labeling interface: the frame and one rectangle tool per class."""
    if not classes:
        raise LabelStudioFormatError("a labeling round needs at least one class")
    labels = "".join(f"<Label value={quoteattr(c)} background={quoteattr(COLORS[i % len(COLORS)])}/>"
                     for i, c in enumerate(classes))
    header = ("Review: correct the boxes (move, resize, relabel, delete, add), then submit" if review else
              "Draw a box around each surgical instrument and tumor (correct the suggested boxes); leave frames "
              "with none of them empty")
    return (f"<View><Header value={quoteattr(header)}/>"
            f"<Image name=\"{TO_NAME}\" value=\"$image\" zoom=\"true\"/>"
            f"<RectangleLabels name=\"{FROM_NAME}\" toName=\"{TO_NAME}\" strokeWidth=\"2\">{labels}</RectangleLabels>"
            "</View>")


def rectangle(box: Box, classes: Sequence[str], width: int, height: int, score: float | None = None) -> dict:
    """A pixel box -> a Label Studio rectangle result (percent of the image)."""
    value = {"x": 100.0 * box.left / width, "y": 100.0 * box.top / height, "width": 100.0 * box.width / width,
             "height": 100.0 * box.height / height, "rotation": 0, "rectanglelabels": [classes[box.class_id]]}
    result = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels", "original_width": width,
              "original_height": height, "image_rotation": 0, "value": value}
    if score is not None:
        result["score"] = round(float(score), 4)
    return result


def boxes_from_result(result: Iterable[Mapping[str, Any]], classes: Sequence[str], width: int,
                      height: int) -> list[Box]:
    """The rectangles of an annotation -> pixel boxes of a ``width`` x ``height`` frame (other results ignored;
    a label the round does not offer, a rotated or empty rectangle: :class:`LabelStudioFormatError`)."""
    index = {c: i for i, c in enumerate(classes)}
    boxes = []
    for item in result:
        if item.get("type") != "rectanglelabels":
            continue
        value = item.get("value") or {}
        labels = value.get("rectanglelabels") or []
        if len(labels) != 1 or labels[0] not in index:
            raise LabelStudioFormatError(f"a rectangle with label(s) {labels}: expected one of {list(classes)}")
        if abs(float(value.get("rotation") or 0)) > 0.5:
            raise LabelStudioFormatError("a rotated rectangle: the dataset holds axis-aligned boxes only")
        x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
        right, bottom = x + float(value["width"]) * width / 100, y + float(value["height"]) * height / 100
        if right - x < 0.5 or bottom - y < 0.5:
            raise LabelStudioFormatError("an empty rectangle")
        boxes.append(pixel_box(index[labels[0]], x, y, right, bottom, width, height))
    return boxes


def task(record: Mapping[str, Any], width: int, height: int, classes: Sequence[str], round_: Round,
         predicted: Sequence[tuple[Box, float]] = (), model_version: str = "") -> dict[str, Any]:
    """One manifest line -> one Label Studio task (imported with its suggestions as a prediction)."""
    if round_.review:
        suggestions = [(b, None) for b in existing_boxes(record, round_.attribute, classes, width, height)]
        model_version = "first-pass"
    else:
        suggestions = list(predicted)
    item: dict[str, Any] = {"data": {"image": record["source-ref"]},
                            "meta": {"line": dict(record), "width": width, "height": height,
                                     "round": round_.name, "review": round_.review}}
    if suggestions or round_.review:
        scores = [s for _, s in suggestions if s is not None]
        item["predictions"] = [{"model_version": model_version or "champion",
                                "score": round(min(scores), 4) if scores else 1.0,
                                "result": [rectangle(b, classes, width, height, s) for b, s in suggestions]}]
    return item


def predictions_by_frame(lines: Iterable[str], prefix: str, classes: Sequence[str]) -> dict[str, list]:
    """The trainer's ``predict`` output (``predictions.jsonl``) -> ``{s3 uri of the frame: [(Box, score)]}``;
    ``prefix`` is the S3 prefix the frame paths are relative to. Classes the round does not offer are dropped."""
    index = {c: i for i, c in enumerate(classes)}
    found: dict[str, list] = {}
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        width, height = int(row["width"]), int(row["height"])
        found[prefix.rstrip("/") + "/" + row["frame"]] = [
            (pixel_box(index[b["label"]], b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"],
                       width, height), float(b["score"]))
            for b in row.get("boxes", []) if b.get("label") in index]
    return found


def finished(annotation: Mapping[str, Any]) -> bool:
    return not annotation.get("was_cancelled") and annotation.get("result") is not None


def paged_tasks(get: Callable[[dict[str, Any]], Any], project_id: int,
                page_size: int = TASK_PAGE_SIZE) -> Iterator[dict[str, Any]]:
    """Every task of a project through Label Studio's paged ``GET /api/tasks``: ``get(params)`` makes the call and
    returns its JSON body, ``{"tasks": [...], "total": N}`` (a bare list from servers that do not page). Shared by
    the Airflow hook and the local simulated annotators."""
    page = 1
    while True:
        body = get({"project": int(project_id), "page": page, "page_size": page_size, "fields": "all"})
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        yield from tasks
        if not tasks or not isinstance(body, dict) or page * page_size >= int(body.get("total") or 0):
            return
        page += 1


def output_manifest(tasks: Iterable[Mapping[str, Any]], classes: Sequence[str], round_: Round,
                    created: str | None = None) -> tuple[str, dict[str, int], list[str]]:
    """Exported tasks -> (Ground Truth output manifest, LabelCounters, errors). Each task's finished annotations
    are consolidated into one set of boxes; a task with an annotation that cannot be read is left out with its
    reason (as a data object Ground Truth could not label), the rest of the round is kept."""
    created = created or creation_date()
    lines, errors = [], []
    counters = {"TotalLabeled": 0, "HumanLabeled": 0, "MachineLabeled": 0, "FailedNonRetryableError": 0,
                "Unlabeled": 0}
    for item in sorted(tasks, key=lambda t: t["id"]):
        meta = item.get("meta") or {}
        record, width, height = meta.get("line"), meta.get("width"), meta.get("height")
        annotations = [a for a in item.get("annotations") or [] if finished(a)]
        if not isinstance(record, dict) or not width or not height:
            errors.append(f"task {item['id']}: no manifest line or frame size in its meta")
            counters["FailedNonRetryableError"] += 1
            continue
        if not annotations:
            counters["Unlabeled"] += 1
            continue
        try:
            answers = [boxes_from_result(a["result"], classes, width, height) for a in annotations]
        except (LabelStudioFormatError, KeyError, TypeError, ValueError) as exc:
            errors.append(f"task {item['id']} ({record.get('source-ref')}): {exc}")
            counters["FailedNonRetryableError"] += 1
            continue
        boxes = consolidate(answers, width, height, workers=len(answers))
        status = None
        if round_.review:
            before = sorted(b.key() for b in existing_boxes(record, round_.attribute, classes, width, height))
            status = "adjusted" if any(sorted(b.key() for b in a) != before for a in answers) else "unadjusted"
        lines.append(json.dumps(output_line(record, round_.attribute, boxes, width, height, classes, round_.name,
                                            created, adjustment_status=status)))
        counters["TotalLabeled"] += 1
        counters["HumanLabeled"] += 1
    return "".join(line + "\n" for line in lines), counters, errors
