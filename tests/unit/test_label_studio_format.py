"""The Label Studio backend's formats: request -> round, boxes <-> rectangles, exported tasks -> GT manifest."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from include.labeling import label_studio as ls
from include.labeling.consolidation import Box
from include.labeling.ground_truth import labeling_job_request
from include.labeling.manifest import parse_manifest

CLASSES = ["scalpel", "retractor", "tumor"]
W, H = 480, 270


def request(adjustment: bool = False, workers: int = 3) -> dict:
    return labeling_job_request(
        name="label-abc" + ("-review" if adjustment else ""), region="us-east-1",
        manifest_uri="s3://ann/labeling/label-abc/input.manifest", label_config_uri="s3://ann/labeling/cats.json",
        output_uri="s3://ann/labeling/output", role_arn="arn:aws:iam::123456789012:role/r",
        workteam_arn="arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t",
        label_attribute="boxes-reviewed" if adjustment else "boxes", workers=workers, kms_key=None,
        adjustment=adjustment)


def annotation(*boxes: Box, cancelled: bool = False) -> dict:
    return {"result": [ls.rectangle(b, CLASSES, W, H) for b in boxes], "was_cancelled": cancelled}


def exported(task_id: int, record: dict, *annotations: dict, review: bool = False) -> dict:
    return {"id": task_id, "annotations": list(annotations),
            "meta": {"line": record, "width": W, "height": H, "review": review}}


def test_a_round_reads_the_ground_truth_request():
    first, review = ls.Round.from_request(request()), ls.Round.from_request(request(adjustment=True, workers=1))
    assert (first.name, first.attribute, first.workers, first.review) == ("label-abc", "boxes", 3, False)
    assert review.review and review.workers == 1
    assert first.output_manifest_uri == "s3://ann/labeling/output/label-abc/manifests/output/output.manifest"
    described = first.describe({"TotalLabeled": 2}, "http://ls/projects/1")
    assert described["LabelingJobOutput"]["OutputDatasetS3Uri"] == first.output_manifest_uri
    with pytest.raises(ls.LabelStudioFormatError, match="CreateLabelingJob"):
        ls.Round.from_request({"LabelingJobName": "x"})


def test_the_label_config_is_xml_with_one_label_per_class():
    root = ET.fromstring(ls.label_config(["scalpel", 'a "quoted" <class>']))
    labels = root.find("RectangleLabels")
    assert labels is not None and labels.get("toName") == "image"
    assert [label.get("value") for label in labels.findall("Label")] == ["scalpel", 'a "quoted" <class>']
    with pytest.raises(ls.LabelStudioFormatError):
        ls.label_config([])


@given(st.integers(0, 2), st.integers(0, W - 2), st.integers(0, H - 2), st.integers(1, W), st.integers(1, H))
def test_a_box_survives_the_round_trip_through_percent(class_id, left, top, width, height):
    box = Box(class_id, left, top, min(width, W - left), min(height, H - top))
    [back] = ls.boxes_from_result([ls.rectangle(box, CLASSES, W, H)], CLASSES, W, H)
    assert back.key() == box.key()


def test_rectangles_with_an_unknown_label_or_a_rotation_are_refused():
    bad = ls.rectangle(Box(0, 10, 10, 50, 50), CLASSES, W, H)
    bad["value"]["rectanglelabels"] = ["gauze"]
    with pytest.raises(ls.LabelStudioFormatError, match="gauze"):
        ls.boxes_from_result([bad], CLASSES, W, H)
    rotated = ls.rectangle(Box(0, 10, 10, 50, 50), CLASSES, W, H)
    rotated["value"]["rotation"] = 30
    with pytest.raises(ls.LabelStudioFormatError, match="rotated"):
        ls.boxes_from_result([rotated], CLASSES, W, H)


def test_annotations_are_consolidated_into_ground_truths_output_manifest():
    round_ = ls.Round.from_request(request())
    a = {"source-ref": "s3://frames/frames/v1/000000.jpg"}
    b = {"source-ref": "s3://frames/frames/v1/000001.jpg"}
    c = {"source-ref": "s3://frames/frames/v1/000002.jpg"}
    scalpel = Box(0, 100, 50, 80, 40)
    near = Box(0, 102, 51, 79, 40)
    tasks = [exported(1, a, annotation(scalpel), annotation(near), annotation(scalpel)),
             exported(2, b, annotation(), annotation(), annotation()),
             exported(3, c, annotation(scalpel, cancelled=True))]
    manifest, counters, errors = ls.output_manifest(tasks, CLASSES, round_, created="2026-11-26T00:00:00.000000")
    assert errors == [] and counters["TotalLabeled"] == 2 and counters["Unlabeled"] == 1
    report = parse_manifest(manifest, "boxes")
    assert report.errors == []
    first, empty = report.frames
    assert first.source_ref == a["source-ref"] and len(first.boxes) == 1 and first.boxes[0].label == "scalpel"
    assert 0.9 <= first.boxes[0].confidence <= 1.0
    assert empty.boxes == ()
    line = json.loads(manifest.splitlines()[0])
    assert line["boxes-metadata"]["job-name"] == "labeling-job/label-abc"


def test_a_bad_annotation_leaves_its_task_out_and_keeps_the_rest():
    round_ = ls.Round.from_request(request(workers=1))
    good = exported(1, {"source-ref": "s3://f/frames/v/000000.jpg"}, annotation(Box(2, 10, 10, 40, 40)))
    bad = exported(2, {"source-ref": "s3://f/frames/v/000001.jpg"}, annotation(Box(2, 10, 10, 40, 40)))
    bad["annotations"][0]["result"][0]["value"]["rectanglelabels"] = ["gauze"]
    manifest, counters, errors = ls.output_manifest([good, bad], CLASSES, round_)
    assert counters["TotalLabeled"] == 1 and counters["FailedNonRetryableError"] == 1
    assert len(errors) == 1 and "task 2" in errors[0] and "gauze" in errors[0]
    assert len(manifest.splitlines()) == 1


def test_a_review_task_starts_from_the_first_pass_and_records_whether_it_changed():
    first = ls.Round.from_request(request(workers=1))
    record = {"source-ref": "s3://f/frames/v/000000.jpg"}
    manifest, _, _ = ls.output_manifest([exported(1, record, annotation(Box(0, 10, 10, 40, 40)))], CLASSES, first)
    line = json.loads(manifest)
    review = ls.Round.from_request(request(adjustment=True, workers=1))
    item = ls.task(line, W, H, CLASSES, review)
    assert item["meta"]["review"] is True
    assert [r["value"]["rectanglelabels"] for r in item["predictions"][0]["result"]] == [["scalpel"]]
    kept = exported(1, line, {"result": item["predictions"][0]["result"]}, review=True)
    moved = exported(2, line, annotation(Box(1, 10, 10, 40, 40)), review=True)
    out, _, _ = ls.output_manifest([kept, moved], CLASSES, review)
    statuses = [json.loads(x)["boxes-reviewed-metadata"]["adjustment-status"] for x in out.splitlines()]
    assert statuses == ["unadjusted", "adjusted"]


def test_predictions_become_suggested_boxes():
    lines = [json.dumps({"frame": "frames/v/000000.jpg", "width": W, "height": H, "boxes": [
        {"label": "tumor", "score": 0.8, "left": 5, "top": 6, "width": 30, "height": 20},
        {"label": "gauze", "score": 0.9, "left": 5, "top": 6, "width": 30, "height": 20}]}), ""]
    found = ls.predictions_by_frame(lines, "s3://frames/", CLASSES)
    [(box, score)] = found["s3://frames/frames/v/000000.jpg"]
    assert box.key() == (2, 5, 6, 30, 20) and score == 0.8
    item = ls.task({"source-ref": "s3://frames/frames/v/000000.jpg"}, W, H, CLASSES,
                   ls.Round.from_request(request()), found["s3://frames/frames/v/000000.jpg"])
    assert item["predictions"][0]["result"][0]["score"] == 0.8
    assert "predictions" not in ls.task({"source-ref": "s3://x/y.jpg"}, W, H, CLASSES,
                                        ls.Round.from_request(request()))


def test_paged_tasks_reads_every_page_and_stops_at_the_total():
    tasks = [{"id": i} for i in range(450)]
    calls = []

    def get(params):
        calls.append(params)
        start = (params["page"] - 1) * params["page_size"]
        return {"tasks": tasks[start:start + params["page_size"]], "total": len(tasks)}

    assert list(ls.paged_tasks(get, "7")) == tasks
    assert [c["page"] for c in calls] == [1, 2, 3]
    assert calls[0] == {"project": 7, "page": 1, "page_size": 200, "fields": "all"}
    # a server that does not page answers a bare list: one call; an empty first page: one call, nothing
    assert list(ls.paged_tasks(lambda params: [{"id": 1}], 7)) == [{"id": 1}]
    assert list(ls.paged_tasks(lambda params: {"tasks": [], "total": 0}, 7)) == []
