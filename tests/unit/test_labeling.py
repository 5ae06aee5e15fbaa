"""Labeling's data side: Ground Truth requests, output manifest checks, COCO, immutable dataset versions."""

from __future__ import annotations

import json

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from include.config import build_config
from include.labeling import dataset as datasets
from include.labeling.ground_truth import GroundTruthRegionError, builtin_lambda_arn, labeling_job_request
from include.labeling.manifest import Box, LabeledFrame, parse_manifest
from tests.sagemaker_api import TEST_KEY_ARN, valid

CLASSES = ("scalpel", "retractor", "tumor")
ATTR = "surgical-boxes"


def gt_line(ref: str, boxes: list[tuple[int, int, int, int, int]], confidences: list[float] | None = None,
            width: int = 640, height: int = 360) -> str:
    confidences = confidences or [0.9] * len(boxes)
    return json.dumps({
        "source-ref": ref,
        ATTR: {"annotations": [{"class_id": c, "left": x, "top": y, "width": w, "height": h}
                               for c, x, y, w, h in boxes],
               "image_size": [{"width": width, "height": height, "depth": 3}]},
        f"{ATTR}-metadata": {"objects": [{"confidence": c} for c in confidences],
                             "class-map": {"0": "scalpel", "1": "retractor", "2": "tumor"},
                             "type": "groundtruth/object-detection", "human-annotated": "yes",
                             "creation-date": "2026-11-25T10:00:00.000000", "job-name": "labeling-job/j"},
    })


def test_request_is_valid_for_sagemaker_with_the_regional_builtin_lambdas():
    config = build_config("local")
    request = labeling_job_request(
        name="label-1", region="eu-west-1", manifest_uri="s3://a/in.manifest", label_config_uri="s3://a/c.json",
        output_uri="s3://a/out", role_arn=config.sagemaker_role_arn, workteam_arn=config.workteam_arn,
        label_attribute=ATTR, workers=3, kms_key=TEST_KEY_ARN)
    valid("CreateLabelingJob", request)
    assert request["OutputConfig"]["KmsKeyId"] == TEST_KEY_ARN
    human = request["HumanTaskConfig"]
    assert human["PreHumanTaskLambdaArn"] == "arn:aws:lambda:eu-west-1:568282634449:function:PRE-BoundingBox"
    assert human["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"].endswith(":ACS-BoundingBox")
    assert builtin_lambda_arn("us-east-1", "ACS", adjustment=True).endswith(":function:ACS-AdjustmentBoundingBox")
    with pytest.raises(GroundTruthRegionError, match="not offered in sa-east-1"):
        builtin_lambda_arn("sa-east-1", "PRE")


def test_bad_manifest_lines_are_named_and_the_rest_is_kept():
    good = gt_line("s3://f/frames/v1/000000.jpg", [(0, 10, 10, 50, 40)])
    lines = [
        good,
        json.dumps({"source-ref": "s3://f/frames/v1/000001.jpg"}),  # no label attribute
        gt_line("s3://f/frames/v1/000002.jpg", [(1, 600, 10, 100, 40)]),  # outside the image
        gt_line("s3://f/frames/v1/000003.jpg", [(2, 10, 10, -5, 40)]),  # negative width
        "{not json",
        gt_line("s3://f/frames/v1/000004.jpg", [(7, 10, 10, 5, 4)]),  # unknown class id
    ]
    report = parse_manifest("\n".join(lines), ATTR)
    assert [f.source_ref for f in report.frames] == ["s3://f/frames/v1/000000.jpg"]
    assert report.errors[0] == f"output manifest line 2: missing '{ATTR}' or '{ATTR}-metadata'"
    assert "line 3: annotation 0: box (600.0, 10.0, 100.0, 40.0) lies outside the 640x360 image" in report.errors[1]
    assert "line 4: annotation 0: width/height must be positive" in report.errors[2]
    assert report.errors[3].startswith("output manifest line 5: not JSON")
    assert "line 6: annotation 0: class_id 7 is not in the class-map" in report.errors[4]


def frame(ref: str, label: str = "scalpel", x: float = 10) -> LabeledFrame:
    return LabeledFrame(ref, 640, 360, (Box(label, x, 20, 50, 30, 0.9),))


def test_coco_files_load_in_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    frames = [frame(f"s3://f/frames/v{v}/00000{i}.jpg") for v in range(3) for i in range(2)]
    version = datasets.DatasetVersion(frames, CLASSES, datasets.assign_splits(["v0", "v1", "v2"], {}))
    for split in datasets.SPLITS:
        path = tmp_path / f"{split}.json"
        path.write_text(json.dumps(version.coco(split)))
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == 2
        assert coco.loadCats(coco.getCatIds())[0]["name"] == "scalpel"


@given(st.lists(st.text("0123456789abcdef", min_size=8, max_size=20), min_size=1, max_size=40, unique=True),
       st.lists(st.text("0123456789abcdef", min_size=8, max_size=20), max_size=10, unique=True))
def test_splits_are_by_video_and_stable_when_videos_arrive(old, new):
    first = datasets.assign_splits(old, {})
    assert set(first) == set(old) and set(first.values()) <= set(datasets.SPLITS)
    second = datasets.assign_splits(old + [v for v in new if v not in old], first)
    assert all(second[v] == first[v] for v in old)  # a video never changes split
    if len(old) >= 3:
        assert set(first.values()) == set(datasets.SPLITS)


@pytest.fixture
def s3(in_process_aws):
    client = boto3.client("s3")
    client.create_bucket(Bucket="annotations")
    return client


def test_publishing_twice_is_one_version_and_a_change_is_a_child(s3):
    frames = [frame(f"s3://f/frames/v{v}/000000.jpg") for v in range(3)]
    splits = datasets.assign_splits(["v0", "v1", "v2"], {})
    first = datasets.publish(s3, "annotations", datasets.DatasetVersion(frames, CLASSES, splits))
    again = datasets.publish(s3, "annotations", datasets.DatasetVersion(list(reversed(frames)), CLASSES, splits))
    assert first["created"] and not again["created"] and again["version"] == first["version"]
    listed = {o["Key"].split("/")[1] for o in s3.list_objects_v2(Bucket="annotations", Prefix="datasets/")["Contents"]
              if o["Key"].count("/") == 2}
    assert listed == {first["version"]}

    parent, parent_frames, parent_splits = datasets.load_latest(s3, "annotations")
    assert parent == first["version"] and parent_splits == splits
    relabeled = datasets.merge(parent_frames, [frame("s3://f/frames/v1/000000.jpg", label="retractor")])
    child = datasets.DatasetVersion(relabeled, CLASSES, parent_splits, parent)
    published = datasets.publish(s3, "annotations", child)
    assert published["version"] != parent
    card = json.loads(s3.get_object(Bucket="annotations", Key=f"datasets/{published['version']}/card.json")["Body"]
                      .read())
    assert card["parent"] == parent and card["frames"] == 3


def test_a_version_id_can_never_name_other_content(s3):
    frames = [frame("s3://f/frames/v0/000000.jpg")]
    version = datasets.DatasetVersion(frames, CLASSES, {"v0": "train"})
    s3.put_object(Bucket="annotations", Key=f"datasets/{version.version}/manifest.jsonl", Body=b"tampered\n")
    with pytest.raises(RuntimeError, match="exists with other content: a dataset version is immutable"):
        datasets.publish(s3, "annotations", version)
