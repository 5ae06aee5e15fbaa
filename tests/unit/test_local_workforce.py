"""The local Ground Truth workforce: consolidation, the simulated workers, and labeling jobs end to end (moto S3)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import boto3
import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from include.labeling.ground_truth import parse_label_categories
from local_aws.sagemaker.backend import SageMakerBackend
from local_aws.sagemaker.labeling import (
    LOG_GROUP,
    Box,
    Noise,
    Workforce,
    consolidate,
    existing_boxes,
    image_size,
    iou,
    match_boxes,
    noise_settings,
    parse_noise_tag,
)
from local_aws.settings import StackSettings

CLASSES = ["scalpel", "retractor", "tumor"]
SOURCE_W, SOURCE_H, SOURCE_FPS = 640, 360, 25.0
FRAME_W, FRAME_H, FRAME_FPS = 320, 180, 5.0
PRE = "arn:aws:lambda:us-east-1:432418664414:function:PRE-BoundingBox"
ACS = "arn:aws:lambda:us-east-1:432418664414:function:ACS-BoundingBox"
PRE_ADJUST = "arn:aws:lambda:us-east-1:432418664414:function:PRE-AdjustmentBoundingBox"
ACS_ADJUST = "arn:aws:lambda:us-east-1:432418664414:function:ACS-AdjustmentBoundingBox"


# -- synthetic truth without videos --------------------------------------------------------------------------------
def random_truth(rng: random.Random, width: int = 640, height: int = 360) -> list[Box]:
    boxes = []
    for _ in range(rng.randint(1, 4)):
        w, h = rng.uniform(30, 200), rng.uniform(30, 160)
        boxes.append(Box(rng.randrange(3), rng.uniform(0, width - w), rng.uniform(0, height - h), w, h))
    return boxes


def score(pairs: list[tuple[list[Box], list[Box]]]) -> tuple[float, float]:
    """(mean IoU over true boxes, a missed one counting 0; class accuracy over the matched ones)."""
    ious, right = [], []
    for truth, found in pairs:
        matched = {t: f for f, t in match_boxes(found, truth, 1e-9).items()}
        for j, true_box in enumerate(truth):
            if j in matched:
                ious.append(iou(found[matched[j]], true_box))
                right.append(found[matched[j]].class_id == true_box.class_id)
            else:
                ious.append(0.0)
    return float(np.mean(ious)), float(np.mean(right))


def first_pass(workers: int, frames: int = 150, job: str = "unit-job") -> list[tuple[list[Box], list]]:
    rng = random.Random(7)
    workforce = Workforce(job, CLASSES, workers)
    out = []
    for object_id in range(frames):
        truth = random_truth(rng)
        answers = workforce.annotate(object_id, truth, 640, 360)
        out.append((truth, consolidate([a.boxes for a in answers], 640, 360, workers=workers)))
    return out


# -- consolidation -------------------------------------------------------------------------------------------------
def test_identical_boxes_consolidate_to_that_box_with_confidence_one():
    box = Box(1, 10, 20, 30, 40)
    result = consolidate([[box], [box], [box]], 640, 360)
    assert len(result) == 1
    assert result[0].box == box and result[0].confidence == pytest.approx(1.0) and result[0].support == 3


def test_minority_boxes_are_dropped_and_the_class_is_the_majority_vote():
    a, b, c = Box(0, 100, 100, 50, 50), Box(0, 102, 99, 50, 52), Box(2, 98, 101, 51, 49)
    lone = Box(1, 400, 200, 40, 40)
    result = consolidate([[a, lone], [b], [c]], 640, 360)
    assert [r.box.class_id for r in result] == [0]
    assert result[0].box.left == 100 and result[0].box.width == 50
    assert 0.5 < result[0].confidence < 0.7  # 2 of 3 votes for the class
    assert consolidate([[a], [], [], []], 640, 360) == []  # 1 of 4 workers: not kept


def test_one_box_per_worker_per_group():
    a, twin = Box(0, 100, 100, 50, 50), Box(0, 101, 100, 50, 50)
    result = consolidate([[a, twin], [Box(0, 100, 101, 50, 50)]], 640, 360)
    assert sorted(r.support for r in result) == [1, 2]


def test_three_workers_at_default_noise_are_accurate():
    pairs = first_pass(3)
    assert sum(len(t) for t, _ in pairs) >= 300
    mean_iou, accuracy = score([(t, [c.box for c in found]) for t, found in pairs])
    assert mean_iou >= 0.8
    assert accuracy >= 0.95


def test_more_workers_give_better_boxes_and_higher_confidence():
    scores, confidences = {}, {}
    for workers in (1, 3, 5):
        pairs = first_pass(workers)
        scores[workers] = score([(t, [c.box for c in found]) for t, found in pairs])[0]
        confidences[workers] = np.mean([c.confidence for _, found in pairs for c in found])
    assert scores[1] < scores[3] < scores[5]
    assert confidences[1] == 0.0  # Ground Truth: one worker per object -> confidence 0.00
    assert confidences[1] < confidences[3] < confidences[5]


def test_adjustment_workers_move_the_boxes_closer_to_the_truth():
    pairs = first_pass(3)
    adjusters = Workforce("unit-adjust", CLASSES, 3)
    adjusted = []
    for object_id, (truth, found) in enumerate(pairs):
        answers = adjusters.adjust(object_id, truth, [c.box for c in found], 640, 360)
        adjusted.append((truth, [c.box for c in consolidate([a.boxes for a in answers], 640, 360)]))
    before = score([(t, [c.box for c in found]) for t, found in pairs])[0]
    after = score(adjusted)[0]
    assert after > before + 0.04


def test_an_adjuster_leaves_good_boxes_alone():
    truth = [Box(0, 100, 100, 80, 60)]
    answers = Workforce("keep", CLASSES, 3, Noise(false_positive_rate=0, miss_rate=0, wrong_class_rate=0)).adjust(
        0, truth, [Box(0, 100, 100, 80, 60)], 640, 360)
    assert all(a.boxes == (Box(0, 100, 100, 80, 60),) for a in answers)


@settings(max_examples=200, deadline=None)
@given(st.integers(8, 2000), st.integers(8, 2000), st.integers(1, 6), st.data())
def test_consolidated_boxes_are_whole_pixels_inside_the_image(width, height, workers, data):
    box = st.builds(lambda c, x, y, w, h: Box(c, x, y, w, h), st.integers(0, 2),
                    st.floats(-50, width + 50), st.floats(-50, height + 50), st.floats(0.5, width),
                    st.floats(0.5, height))
    answers = data.draw(st.lists(st.lists(box, max_size=5), min_size=workers, max_size=workers))
    for result in consolidate(answers, width, height):
        b = result.box
        assert all(isinstance(v, int) for v in (b.left, b.top, b.width, b.height))
        assert 0 <= b.left and 0 <= b.top and b.width >= 1 and b.height >= 1
        assert b.right <= width and b.bottom <= height
        assert 0.0 <= result.confidence <= 1.0
        assert 2 * result.support >= workers


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(1, 5))
def test_the_workforce_is_deterministic_per_job_name(job, workers):
    truth = [Box(0, 50, 60, 100, 80), Box(2, 300, 100, 60, 90)]
    one = Workforce(job, CLASSES, workers).annotate(3, truth, 640, 360)
    two = Workforce(job, CLASSES, workers).annotate(3, truth, 640, 360)
    assert one == two
    assert len({a.worker.worker_id for a in one}) == workers


# -- knobs and small parsers ---------------------------------------------------------------------------------------
def test_noise_from_environment_then_tag():
    env = {"LOCAL_WORKFORCE_MISS_RATE": "0.2", "LOCAL_WORKFORCE_BOX_JITTER": "0.1"}
    assert noise_settings([], env) == Noise(miss_rate=0.2, box_jitter=0.1)
    tags = [{"Key": "local:annotator-noise", "Value": "miss_rate=0.3 false_positive_rate=0"}]
    assert noise_settings(tags, env) == Noise(miss_rate=0.3, box_jitter=0.1, false_positive_rate=0.0)
    assert parse_noise_tag('{"wrong_class_rate": 0.5}') == {"wrong_class_rate": 0.5}
    with pytest.raises(ValueError, match="unknown knob 'mis_rate'"):
        parse_noise_tag("mis_rate=0.1")
    with pytest.raises(ValueError, match=r"miss_rate must be in \[0, 1\]"):
        noise_settings([{"Key": "local:annotator-noise", "Value": "miss_rate=2"}], {})


def test_label_category_configuration_is_checked():
    assert parse_label_categories(json.dumps({"document-version": "2018-11-28",
                                              "labels": [{"label": c} for c in CLASSES]})) == CLASSES
    for bad, reason in (("{", "not valid JSON"), ("{}", "no \"labels\" list"),
                        ('{"labels": [{"label": "a"}, {"label": "a"}]}', "repeats the label"),
                        ('{"labels": [{"name": "a"}]}', r"labels\[0\] has no \"label\"")):
        with pytest.raises(ValueError, match=reason):
            parse_label_categories(bad)


def test_image_size_from_jpeg_and_png_headers():
    image = np.zeros((37, 53, 3), np.uint8)
    assert image_size(cv2.imencode(".jpg", image)[1].tobytes()) == (53, 37, 3)
    assert image_size(cv2.imencode(".png", image)[1].tobytes()) == (53, 37, 3)
    assert image_size(b"GIF89a....") is None


def test_existing_boxes_come_from_the_object_detection_attribute_mapped_by_class_name():
    record = {"source-ref": "s3://b/k.jpg",
              "old": {"image_size": [{"width": 640, "height": 360, "depth": 3}],
                      "annotations": [{"class_id": 0, "left": 10, "top": 20, "width": 30, "height": 40}]},
              "old-metadata": {"type": "groundtruth/object-detection", "class-map": {"0": "tumor"},
                               "creation-date": "2026-01-01T00:00:00.000000"},
              "other": 1, "other-metadata": {"type": "groundtruth/image-classification"}}
    assert existing_boxes(record, "new", CLASSES, 320, 180) == [Box(2, 5, 10, 15, 20)]
    assert existing_boxes(record, "old", CLASSES, 320, 180) == []


# -- labeling jobs through the local SageMaker (moto S3 and CloudWatch Logs) ---------------------------------------
@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in list(os.environ):
        if var.startswith(("AWS_ENDPOINT_URL", "LOCAL_WORKFORCE_", "AWS_PROFILE")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        s3 = boto3.client("s3")
        for bucket in ("frames", "labels"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="labels", Key="config/categories.json", Body=json.dumps(
            {"document-version": "2018-11-28", "labels": [{"label": c} for c in CLASSES]}))
        settings_ = StackSettings(home=tmp_path / "home", host="127.0.0.1", base_port=1)
        backend = SageMakerBackend(settings_)
        yield backend, s3, settings_
        backend.shutdown()


_JPEG = cv2.imencode(".jpg", np.full((FRAME_H, FRAME_W, 3), 90, np.uint8))[1].tobytes()


def put_video(s3, settings_: StackSettings, video_id: str, seed: int, frames: int = 20,
              with_truth: bool = True) -> tuple[list[str], dict]:
    """Frames of a fake extracted video in S3 (frames.json as the extractor writes it) and its truth file."""
    rng = random.Random(seed)
    movers = [(rng.randrange(3), rng.uniform(20, 400), rng.uniform(20, 200), rng.uniform(40, 160),
               rng.uniform(40, 120), rng.uniform(-3, 3), rng.uniform(-2, 2)) for _ in range(3)]
    truth_frames = []
    for i in range(int(frames * SOURCE_FPS / FRAME_FPS)):
        boxes = []
        for c, x, y, w, h, vx, vy in movers:
            left, top = min(max(0, x + vx * i), SOURCE_W - w), min(max(0, y + vy * i), SOURCE_H - h)
            boxes.append({"label": CLASSES[c], "x": round(left), "y": round(top), "w": round(w), "h": round(h)})
        truth_frames.append({"index": i, "t": round(i / SOURCE_FPS, 6), "boxes": boxes})
    sha = hashlib.sha256(f"video-{seed}".encode()).hexdigest()
    truth = {"schema": "surgical-mlops/synthetic-truth/v1", "video_sha256": sha, "width": SOURCE_W,
             "height": SOURCE_H, "fps": SOURCE_FPS, "frame_count": len(truth_frames), "classes": CLASSES,
             "frames": truth_frames}
    if with_truth:
        settings_.truth_dir.mkdir(parents=True, exist_ok=True)
        (settings_.truth_dir / f"{sha}.json").write_text(json.dumps(truth))
    manifest = {"schema": "surgical-mlops/frames/v1", "video_id": video_id, "source": {"sha256": sha, "size": 1},
                "video": {"duration_s": frames / FRAME_FPS, "fps": SOURCE_FPS, "width": SOURCE_W,
                          "height": SOURCE_H, "codec": "h264"},
                "extraction": {"fps": FRAME_FPS}, "frame_count": frames, "width": FRAME_W, "height": FRAME_H,
                "frames": [{"index": k, "file": f"{k:06d}.jpg", "timestamp": round(k / FRAME_FPS, 6)}
                           for k in range(frames)]}
    s3.put_object(Bucket="frames", Key=f"frames/{video_id}/frames.json", Body=json.dumps(manifest))
    uris = []
    for k in range(frames):
        s3.put_object(Bucket="frames", Key=f"frames/{video_id}/{k:06d}.jpg", Body=_JPEG)
        uris.append(f"s3://frames/frames/{video_id}/{k:06d}.jpg")
    return uris, truth


def truth_in_frame(truth: dict, uri: str) -> list[Box]:
    """The true boxes of a frame in its own pixels (the test's own computation, for scoring)."""
    k = int(uri.rsplit("/", 1)[1].split(".")[0])
    source = truth["frames"][round(k / FRAME_FPS * SOURCE_FPS)]
    s = FRAME_W / SOURCE_W
    return [Box(CLASSES.index(b["label"]), b["x"] * s, b["y"] * s, b["w"] * s, b["h"] * s) for b in source["boxes"]]


def put_manifest(s3, key: str, lines: list[dict]) -> str:
    s3.put_object(Bucket="labels", Key=key, Body="".join(json.dumps(line) + "\n" for line in lines))
    return f"s3://labels/{key}"


def job_request(name: str, manifest_uri: str, *, attribute: str = "surgical-boxes", workers: int = 3,
                adjustment: bool = False, label_uri: str = "s3://labels/config/categories.json",
                tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "LabelingJobName": name, "LabelAttributeName": attribute,
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_uri}}},
        "OutputConfig": {"S3OutputPath": "s3://labels/output/"},
        "RoleArn": "arn:aws:iam::123456789012:role/labeling", "LabelCategoryConfigS3Uri": label_uri,
        "HumanTaskConfig": {
            "WorkteamArn": "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/surgical-annotators",
            "UiConfig": {"HumanTaskUiArn": "arn:aws:sagemaker:us-east-1:394669845002:human-task-ui/BoundingBox"},
            "PreHumanTaskLambdaArn": PRE_ADJUST if adjustment else PRE, "TaskTitle": "boxes",
            "TaskDescription": "boxes", "NumberOfHumanWorkersPerDataObject": workers, "TaskTimeLimitInSeconds": 600,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": ACS_ADJUST if adjustment else ACS},
        },
        "Tags": tags or [],
    }


def run_job(backend: SageMakerBackend, request: dict[str, Any]) -> dict[str, Any]:
    backend.dispatch("CreateLabelingJob", request)
    assert backend.labeling.wait(request["LabelingJobName"], timeout=120)
    return backend.dispatch("DescribeLabelingJob", {"LabelingJobName": request["LabelingJobName"]})


def output_lines(s3, job: dict[str, Any]) -> list[dict]:
    bucket, _, key = job["LabelingJobOutput"]["OutputDatasetS3Uri"][5:].partition("/")
    return [json.loads(line) for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()]


_CREATION_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


def check_ground_truth_line(line: dict, source: dict, attribute: str, job_name: str, adjustment: bool = False,
                            ) -> None:
    """Ground Truth's bounding-box output line, key by key and type by type (AWS developer guide, "Bounding Box
    Job Output" and the label adjustment output)."""
    assert set(line) == set(source) | {attribute, f"{attribute}-metadata"}
    assert all(line[k] == v for k, v in source.items() if k not in (attribute, f"{attribute}-metadata"))
    label, metadata = line[attribute], line[f"{attribute}-metadata"]
    assert list(label) == ["image_size", "annotations"]
    assert isinstance(label["image_size"], list) and len(label["image_size"]) == 1
    size = label["image_size"][0]
    assert list(size) == ["width", "height", "depth"]
    assert all(type(v) is int and v > 0 for v in size.values())
    for annotation in label["annotations"]:
        assert list(annotation) == ["class_id", "left", "top", "width", "height"]
        assert all(type(v) is int for v in annotation.values())
        assert 0 <= annotation["class_id"] < len(CLASSES)
        assert annotation["left"] >= 0 and annotation["top"] >= 0
        assert annotation["width"] >= 1 and annotation["height"] >= 1
        assert annotation["left"] + annotation["width"] <= size["width"]
        assert annotation["top"] + annotation["height"] <= size["height"]
    expected = ["objects", "class-map", "type", "human-annotated", "creation-date", "job-name"]
    assert list(metadata) == expected + (["adjustment-status"] if adjustment else [])
    assert len(metadata["objects"]) == len(label["annotations"])
    for obj in metadata["objects"]:
        assert list(obj) == ["confidence"]
        assert type(obj["confidence"]) in (int, float) and 0 <= obj["confidence"] <= 1
    assert metadata["class-map"] == {str(a["class_id"]): CLASSES[a["class_id"]] for a in label["annotations"]}
    assert metadata["type"] == "groundtruth/object-detection"
    assert metadata["human-annotated"] == "yes"
    assert _CREATION_DATE.match(metadata["creation-date"])
    assert metadata["job-name"] == f"labeling-job/{job_name.lower()}"
    if adjustment:
        assert metadata["adjustment-status"] in ("adjusted", "unadjusted")


def boxes_of(line: dict, attribute: str) -> list[Box]:
    return [Box(a["class_id"], a["left"], a["top"], a["width"], a["height"]) for a in line[attribute]["annotations"]]


def test_a_labeling_job_writes_ground_truths_output_manifest(stack):
    backend, s3, settings_ = stack
    uris, truth = put_video(s3, settings_, "vid-a", seed=1, frames=30)
    source_lines = [{"source-ref": u, "frame-index": i} for i, u in enumerate(uris)]
    name = "Surgical-Boxes-1"
    job = run_job(backend, job_request(name, put_manifest(s3, "in/a.manifest", source_lines)))
    assert job["LabelingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["LabelCounters"] == {"TotalLabeled": 30, "HumanLabeled": 30, "MachineLabeled": 0,
                                    "FailedNonRetryableError": 0, "Unlabeled": 0}
    assert job["LabelingJobOutput"]["OutputDatasetS3Uri"] == \
        f"s3://labels/output/{name}/manifests/output/output.manifest"
    lines = output_lines(s3, job)
    assert [line["source-ref"] for line in lines] == uris
    for line, source in zip(lines, source_lines, strict=True):
        check_ground_truth_line(line, source, "surgical-boxes", name)
        assert line["surgical-boxes"]["image_size"] == [{"width": FRAME_W, "height": FRAME_H, "depth": 3}]
    found = [(truth_in_frame(truth, line["source-ref"]), boxes_of(line, "surgical-boxes")) for line in lines]
    mean_iou, accuracy = score(found)
    assert mean_iou >= 0.75 and accuracy >= 0.95
    listing = s3.list_objects_v2(Bucket="labels", Prefix=f"output/{name}/annotations/")["Contents"]
    keys = [o["Key"] for o in listing]
    assert sum("/worker-response/iteration-1/" in k for k in keys) == 30
    assert any("/consolidated-annotation/consolidation-response/iteration-1/" in k for k in keys)
    response = json.loads(s3.get_object(Bucket="labels", Key=next(
        k for k in keys if "/worker-response/iteration-1/0/" in k))["Body"].read())
    assert len(response["answers"]) == 3
    assert set(response["answers"][0]["answerContent"]["boundingBox"]) == {"boundingBoxes", "inputImageProperties"}
    events = boto3.client("logs").get_log_events(logGroupName=LOG_GROUP, logStreamName=name)["events"]
    assert any("completed: 30 labeled" in e["message"] for e in events)


def test_adjustment_job_moves_boxes_closer_to_the_truth(stack):
    backend, s3, settings_ = stack
    uris, truth = put_video(s3, settings_, "vid-b", seed=2, frames=40)
    first = run_job(backend, job_request("first-pass", put_manifest(s3, "in/b.manifest",
                                                                    [{"source-ref": u} for u in uris])))
    first_lines = output_lines(s3, first)
    bucket_key = first["LabelingJobOutput"]["OutputDatasetS3Uri"]
    adjust = run_job(backend, job_request("adjust-pass", bucket_key, attribute="surgical-boxes-adjusted",
                                          adjustment=True))
    assert adjust["LabelingJobStatus"] == "Completed", adjust.get("FailureReason")
    lines = output_lines(s3, adjust)
    for line, source in zip(lines, first_lines, strict=True):
        check_ground_truth_line(line, source, "surgical-boxes-adjusted", "adjust-pass", adjustment=True)
        assert line["surgical-boxes"] == source["surgical-boxes"]  # the chained job's labels are kept
    before = score([(truth_in_frame(truth, x["source-ref"]), boxes_of(x, "surgical-boxes")) for x in lines])[0]
    after = score([(truth_in_frame(truth, x["source-ref"]), boxes_of(x, "surgical-boxes-adjusted"))
                   for x in lines])[0]
    assert after > before + 0.03
    assert any(x["surgical-boxes-adjusted-metadata"]["adjustment-status"] == "adjusted" for x in lines)


def test_a_missing_frame_fails_alone_and_a_frame_without_truth_is_labeled_empty(stack):
    backend, s3, settings_ = stack
    uris, _ = put_video(s3, settings_, "vid-c", seed=3, frames=5)
    no_truth, _ = put_video(s3, settings_, "vid-d", seed=4, frames=2, with_truth=False)
    s3.put_object(Bucket="frames", Key="loose/image.jpg", Body=_JPEG)  # no frames.json: size from the JPEG
    manifest = [{"source-ref": u} for u in uris] + [
        {"source-ref": "s3://frames/frames/vid-c/999999.jpg"}, {"source-ref": "s3://no-such-bucket/x.jpg"},
        {"source-ref": "not-s3"}, {"other": 1}, *({"source-ref": u} for u in no_truth),
        {"source-ref": "s3://frames/loose/image.jpg"}]
    job = run_job(backend, job_request("gaps", put_manifest(s3, "in/c.manifest", manifest)))
    assert job["LabelingJobStatus"] == "Completed"
    assert job["LabelCounters"]["FailedNonRetryableError"] == 4
    assert job["LabelCounters"]["TotalLabeled"] == 8 and job["LabelCounters"]["Unlabeled"] == 0
    lines = output_lines(s3, job)
    assert [line["source-ref"] for line in lines] == uris + no_truth + ["s3://frames/loose/image.jpg"]
    for line in lines[5:]:
        assert line["surgical-boxes"]["annotations"] == [] and line["surgical-boxes-metadata"]["objects"] == []
        assert line["surgical-boxes-metadata"]["class-map"] == {}
    assert lines[-1]["surgical-boxes"]["image_size"] == [{"width": FRAME_W, "height": FRAME_H, "depth": 3}]


@pytest.mark.parametrize(("change", "reason"), [
    ({"LabelCategoryConfigS3Uri": "s3://labels/config/missing.json"},
     "ClientError: cannot read the label category configuration s3://labels/config/missing.json: NoSuchKey"),
    ({"LabelCategoryConfigS3Uri": "s3://labels/config/bad.json"}, "has no \"labels\" list"),
    ({"InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": "s3://labels/in/none.manifest"}}}},
     "ClientError: cannot read the input manifest s3://labels/in/none.manifest: NoSuchKey"),
    ({"InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": "s3://labels/in/broken.manifest"}}}},
     "is not JSON lines: line 2"),
    ({"Tags": [{"Key": "local:annotator-noise", "Value": "jitter=0.1"}]}, "unknown knob 'jitter'"),
])
def test_unusable_inputs_fail_the_job_with_the_reason(stack, change, reason):
    backend, s3, settings_ = stack
    uris, _ = put_video(s3, settings_, "vid-e", seed=5, frames=2)
    s3.put_object(Bucket="labels", Key="config/bad.json", Body=b'{"document-version": "2018-11-28"}')
    s3.put_object(Bucket="labels", Key="in/broken.manifest", Body=b'{"source-ref": "s3://frames/x.jpg"}\n{oops\n')
    request = {**job_request("bad-input", put_manifest(s3, "in/e.manifest", [{"source-ref": u} for u in uris])),
               **change}
    job = run_job(backend, request)
    assert job["LabelingJobStatus"] == "Failed"
    assert reason in job["FailureReason"]


def test_the_same_job_name_gives_the_same_labels(stack, tmp_path):
    backend, s3, settings_ = stack
    uris, _ = put_video(s3, settings_, "vid-f", seed=6, frames=25)
    manifest = put_manifest(s3, "in/f.manifest", [{"source-ref": u} for u in uris])

    def labels() -> list[dict]:
        lines = output_lines(s3, run_job(backend, job_request("same-name", manifest)))
        backend.dispatch("DeleteLabelingJob", {"LabelingJobName": "same-name"})
        for line in lines:
            del line["surgical-boxes-metadata"]["creation-date"]
        return lines

    first = labels()
    assert first == labels()
    assert any(line["surgical-boxes"]["annotations"] for line in first)
    other = output_lines(s3, run_job(backend, job_request("other-name", manifest)))
    assert [x["surgical-boxes"] for x in other] != [x["surgical-boxes"] for x in first]


def test_noise_tag_changes_the_workers(stack):
    backend, s3, settings_ = stack
    uris, _ = put_video(s3, settings_, "vid-g", seed=7, frames=10)
    manifest = put_manifest(s3, "in/g.manifest", [{"source-ref": u} for u in uris])
    perfect = "box_jitter=0 miss_rate=0 wrong_class_rate=0 false_positive_rate=0"
    job = run_job(backend, job_request("perfect", manifest, workers=2,
                                       tags=[{"Key": "local:annotator-noise", "Value": perfect}]))
    for line in output_lines(s3, job):
        assert all(o["confidence"] == 1.0 for o in line["surgical-boxes-metadata"]["objects"])
        assert len(line["surgical-boxes"]["annotations"]) == 3


def test_a_stopped_job_ends_stopped_with_what_it_labeled(stack):
    backend, s3, settings_ = stack
    uris, _ = put_video(s3, settings_, "vid-h", seed=8, frames=4)
    request = job_request("stop-me", put_manifest(s3, "in/h.manifest", [{"source-ref": u} for u in uris]))
    job = {k: v for k, v in request.items() if k != "Tags"}
    job.update(LabelingJobStatus="InProgress", LabelCounters={})
    backend.resources.create("LabelingJob", "stop-me", job, [], RuntimeError("exists"))
    backend.labeling.stop("stop-me")
    backend.labeling.run("stop-me")  # in this thread: the stop came first
    described = backend.dispatch("DescribeLabelingJob", {"LabelingJobName": "stop-me"})
    assert described["LabelingJobStatus"] == "Stopped"
    assert described["LabelCounters"]["Unlabeled"] == 4 and described["LabelCounters"]["TotalLabeled"] == 0
    assert output_lines(s3, described) == []


def test_a_stop_that_arrives_after_the_last_object_still_ends_stopped(stack):
    backend, s3, settings_ = stack
    uris, _ = put_video(s3, settings_, "vid-i", seed=9, frames=3)
    request = job_request("late-stop", put_manifest(s3, "in/i.manifest", [{"source-ref": u} for u in uris]))
    job = {k: v for k, v in request.items() if k != "Tags"}
    job.update(LabelingJobStatus="Stopping", LabelCounters={})  # StopLabelingJob came while it was finishing
    backend.resources.create("LabelingJob", "late-stop", job, [], RuntimeError("exists"))
    backend.labeling.run("late-stop")
    described = backend.dispatch("DescribeLabelingJob", {"LabelingJobName": "late-stop"})
    assert described["LabelingJobStatus"] == "Stopped" and described["LabelCounters"]["TotalLabeled"] == 3
    backend.resources.update("LabelingJob", "late-stop", lambda d: d.update(LabelingJobStatus="Stopping"))
    backend.labeling.stop("late-stop")  # no job running any more: settled at once, not left Stopping
    described = backend.dispatch("DescribeLabelingJob", {"LabelingJobName": "late-stop"})
    assert described["LabelingJobStatus"] == "Completed"


def test_worker_responses_can_be_skipped(stack, monkeypatch):
    backend, s3, settings_ = stack
    monkeypatch.setenv("LOCAL_WORKFORCE_WORKER_RESPONSES", "0")
    uris, _ = put_video(s3, settings_, "vid-j", seed=10, frames=3)
    job = run_job(backend, job_request("quick", put_manifest(s3, "in/j.manifest", [{"source-ref": u} for u in uris])))
    assert job["LabelingJobStatus"] == "Completed"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="labels", Prefix="output/quick/")["Contents"]]
    assert not any("/worker-response/" in k for k in keys)
    assert "output/quick/manifests/output/output.manifest" in keys
