"""Labeling's data side: Ground Truth requests, output manifest checks, COCO, immutable dataset versions."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from include.config import build_config
from include.labeling import consolidation
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


# -- consolidation: several workers' boxes -> one set, in Ground Truth's output format ------------------------------
PB, CB = consolidation.Box, consolidation.ConsolidatedBox


def test_box_edges_key_and_annotation():
    box = PB(1, 10.4, 20.6, 30.5, 40.5)
    assert (PB(1, 10, 20, 30, 40).right, PB(1, 10, 20, 30, 40).bottom) == (40, 60)
    assert box.key() == (1, 10, 21, 30, 40)
    assert list(box.annotation().items()) == [("class_id", 1), ("left", 10), ("top", 21), ("width", 30),
                                              ("height", 40)]


@pytest.mark.parametrize(("a", "b", "expected"), [
    (PB(0, 0, 0, 10, 20), PB(0, 5, 0, 10, 20), 1 / 3),
    (PB(0, 0, 0, 10, 10), PB(0, 9, 0, 10, 10), 10 / 190),  # one pixel of overlap across
    (PB(0, 0, 0, 10, 10), PB(0, 0, 9, 10, 10), 10 / 190),  # one pixel of overlap down
    (PB(0, 0, 0, 0.5, 0.5), PB(0, 0, 0, 0.5, 0.5), 1.0),  # sub-pixel boxes overlap too
    (PB(0, 0, 0, 10, 10), PB(0, 10, 0, 10, 10), 0.0),  # touching
    (PB(0, 0, 0, 10, 10), PB(0, 20, 0, 10, 10), 0.0),
    (PB(0, 0, 0, 10, 10), PB(0, 5, 20, 10, 10), 0.0),  # overlapping columns, apart rows
    (PB(0, 0, 0, 1e-200, 1e-200), PB(0, 0, 0, 1e-200, 1e-200), 0.0),  # areas underflow to 0: empty
])
def test_iou_exactly(a, b, expected):
    assert consolidation.iou(a, b) == expected == consolidation.iou(b, a)


def test_pixel_boxes_are_whole_pixels_inside_the_image_and_never_empty():
    assert consolidation.pixel_box(0, -5.4, 3.5, 700, 2.0, 640, 360) == PB(0, 0, 4, 640, 1)
    assert consolidation.pixel_box(1, 700, 400, 720, 410, 640, 360) == PB(1, 639, 359, 1, 1)
    assert consolidation.pixel_box(2, 10, 20, 10, 20, 640, 360) == PB(2, 10, 20, 1, 1)
    assert consolidation.pixel_box(2, 10.4, 20.6, 30.5, 40.5, 640, 360) == PB(2, 10, 21, 20, 19)


def test_mean_box_averages_each_edge():
    assert consolidation._mean_box([PB(1, 0, 0, 10, 10), PB(1, 2, 4, 10, 20)]) == PB(1, 1.0, 2.0, 10.0, 15.0)


A, NEAR, NEARER = PB(0, 10, 10, 20, 20), PB(0, 12, 10, 20, 20), PB(0, 14, 10, 20, 20)


def test_one_worker_gives_zero_confidence():
    assert consolidation.consolidate([[A]], 640, 360) == [CB(A, 0.0, 1)]


def test_confidence_is_the_vote_share_times_the_estimated_iou():
    # two boxes: m = 19*20 / (2*400 - 380) = 0.905, k - 1 = 1
    assert consolidation.consolidate([[A], [NEAR]], 640, 360) == [CB(PB(0, 11, 10, 20, 20), 0.9, 2)]
    # three boxes: m = (0.818 + 1 + 0.818) / 3 = 0.879, 1 - 0.121 / sqrt(2) = 0.914
    assert consolidation.consolidate([[A], [NEAR], [NEARER]], 640, 360) == [CB(PB(0, 12, 10, 20, 20), 0.91, 3)]
    # identical boxes from more answers than workers: capped at 1
    assert consolidation.consolidate([[A], [A], [A]], 640, 360, workers=2) == [CB(A, 1.0, 3)]


def test_the_class_is_the_majority_vote_and_a_tie_goes_to_the_lowest_id():
    votes = [[PB(2, 10, 10, 20, 20)], [PB(1, 12, 10, 20, 20)], [PB(2, 14, 10, 20, 20)]]
    assert consolidation.consolidate(votes, 640, 360) == [CB(PB(2, 12, 10, 20, 20), 0.61, 3)]
    tie = [[PB(2, 10, 10, 20, 20)], [PB(1, 10, 10, 20, 20)]]
    assert consolidation.consolidate(tie, 640, 360) == [CB(PB(1, 10, 10, 20, 20), 0.5, 2)]


def test_a_box_is_kept_when_at_least_half_of_the_workers_drew_it():
    assert consolidation.consolidate([[A], [A], [], []], 640, 360) == [CB(A, 0.5, 2)]
    assert consolidation.consolidate([[A], [], []], 640, 360) == []
    assert consolidation.consolidate([[A], [A]], 640, 360, workers=5) == []  # workers who drew nothing count
    assert consolidation.consolidate([[A], [A]], 640, 360, workers=4) == [CB(A, 0.5, 2)]
    assert consolidation.consolidate([[A]], 640, 360, workers=0) == []


def test_empty_boxes_are_left_out_and_one_pixel_boxes_kept():
    assert consolidation.consolidate([[PB(0, 5, 5, 0, 10)], [PB(0, 5, 5, 10, 0)]], 40, 30) == []
    assert consolidation.consolidate([[PB(0, 5, 5, 1, 1)]], 40, 30) == [CB(PB(0, 5, 5, 1, 1), 0.0, 1)]


def test_boxes_that_overlap_by_exactly_the_threshold_are_grouped():
    wide, square = PB(0, 0, 0, 20, 10), PB(0, 0, 0, 10, 10)  # IoU 0.5
    assert consolidation.consolidate([[wide], [square]], 640, 360) == [CB(PB(0, 0, 0, 15, 10), 0.71, 2)]
    assert consolidation.consolidate([[wide], [square]], 640, 360, iou_threshold=0.6) == [
        CB(wide, 0.5, 1), CB(square, 0.5, 1)]


def test_the_most_similar_pair_is_grouped_first_and_a_worker_has_one_box_per_group():
    # A's best partner is worker 1's second box; its first box then groups with worker 2's
    far, close, other = PB(0, 14, 10, 20, 20), PB(0, 11, 10, 20, 20), PB(0, 19, 10, 20, 20)
    assert consolidation.consolidate([[A], [far, close], [other]], 640, 360) == [
        CB(PB(0, 10, 10, 20, 20), 0.63, 2), CB(PB(0, 16, 10, 20, 20), 0.52, 2)]


def test_equally_similar_pairs_are_grouped_in_the_order_of_their_boxes():
    # A-D and B-C overlap alike (IoU 0.6): A-D comes first, so worker 2's C is left out
    a, b, c, d = PB(0, 10, 0, 10, 10), PB(0, 11, 0, 10, 10), PB(0, 13.5, 0, 10, 10), PB(0, 7.5, 0, 10, 10)
    assert consolidation.consolidate([[a], [b], [c, d]], 60, 30) == [CB(PB(0, 10, 0, 10, 10), 0.86, 3)]
    # worker 1's two boxes overlap worker 0's alike: its first box joins, the other stands alone
    first, second = PB(0, 9.5, 0, 10, 10), PB(0, 7.5, 0, 10, 10)
    assert consolidation.consolidate([[PB(0, 8.5, 0, 10, 10)], [first, second]], 60, 30) == [
        CB(PB(0, 9, 0, 10, 10), 0.9, 2), CB(PB(0, 8, 0, 10, 10), 0.45, 1)]


def test_groups_whose_mean_boxes_drift_apart_stay_apart():
    # A-B group first; B-C then fails on the mean boxes; C-D still groups
    boxes = [[PB(0, 10, 0, 10, 10)], [PB(0, 13, 0, 10, 10)], [PB(0, 16, 0, 10, 10)], [PB(0, 19.2, 0, 10, 10)]]
    assert consolidation.consolidate(boxes, 640, 360) == [CB(PB(0, 12, 0, 10, 10), 0.37, 2),
                                                          CB(PB(0, 18, 0, 10, 10), 0.36, 2)]


def test_each_pair_is_tried_once():
    # the last box fails the mean-box check at its pair's turn and is not taken in later
    boxes = [[PB(0, 22, 1, 10, 10)], [PB(0, 25, 2, 10, 10)], [PB(0, 24, 0, 10, 10)], [PB(0, 26, 0, 10, 10)]]
    assert consolidation.consolidate(boxes, 60, 30) == [CB(PB(0, 25, 1, 10, 10), 0.6, 3)]


def test_a_dropped_group_does_not_hide_the_next_and_the_order_is_the_first_boxes():
    lone = PB(0, 100, 100, 20, 20)
    assert consolidation.consolidate([[lone, A], [PB(0, 11, 10, 20, 20)], []], 640, 360) == [
        CB(PB(0, 10, 10, 20, 20), 0.63, 2)]
    x, y = PB(0, 10, 10, 20, 20), PB(1, 200, 100, 30, 30)
    assert [c.box for c in consolidation.consolidate([[x, y], [y, x]], 640, 360)] == [x, y]


def test_match_boxes_is_greedy_and_one_to_one():
    truth = [PB(0, 0, 0, 10, 10), PB(0, 50, 50, 10, 10)]
    best, second = PB(0, 1, 0, 10, 10), PB(0, 2, 0, 10, 10)  # both overlap truth 0 best
    assert consolidation.match_boxes([second, best], truth) == {1: 0}
    assert consolidation.match_boxes([best, PB(0, 51, 50, 10, 10)], truth) == {0: 0, 1: 1}
    assert consolidation.match_boxes([PB(0, 0, 0, 20, 10)], truth) == {0: 0}  # IoU exactly 0.5
    assert consolidation.match_boxes([PB(0, 0, 0, 20, 10)], truth, min_iou=0.6) == {}
    assert consolidation.match_boxes([PB(0, 30, 30, 10, 10)], truth) == {}
    assert consolidation.match_boxes([], truth) == {}


def test_creation_date_is_utc_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert consolidation.creation_date(0) == "1970-01-01T00:00:00.000000"
        assert consolidation.creation_date(1.5) == "1970-01-01T00:00:01.500000"
        monkeypatch.setattr(consolidation.time, "time", lambda: 86400.25)
        assert consolidation.creation_date() == "1970-01-02T00:00:00.250000"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_an_output_line_exactly():
    boxes = [CB(PB(2, 10, 20, 30, 40), 0.83, 3), CB(PB(0, 1, 2, 3, 4), 0.5, 2)]
    record = {"source-ref": "s3://f/x.jpg", "boxes": "old", "boxes-metadata": "old", "other": 1}
    line = consolidation.output_line(record, "boxes", boxes, 640, 360, CLASSES, "Label-ABC",
                                     "2026-11-25T10:00:00.000000", depth=1, adjustment_status="adjusted")
    assert line == {
        "source-ref": "s3://f/x.jpg", "other": 1,
        "boxes": {"image_size": [{"width": 640, "height": 360, "depth": 1}],
                  "annotations": [{"class_id": 2, "left": 10, "top": 20, "width": 30, "height": 40},
                                  {"class_id": 0, "left": 1, "top": 2, "width": 3, "height": 4}]},
        "boxes-metadata": {"objects": [{"confidence": 0.83}, {"confidence": 0.5}],
                           "class-map": {"0": "scalpel", "2": "tumor"}, "type": "groundtruth/object-detection",
                           "human-annotated": "yes", "creation-date": "2026-11-25T10:00:00.000000",
                           "job-name": "labeling-job/label-abc", "adjustment-status": "adjusted"}}
    assert consolidation.label_value([], 640.0, 360.0) == {
        "image_size": [{"width": 640, "height": 360, "depth": 3}], "annotations": []}
    assert "adjustment-status" not in consolidation.label_metadata(boxes, CLASSES, "j", "c")


def od_label(annotations: list[dict], created: str | None, class_map: dict | None = None,
             image_size: object = None) -> tuple[dict, dict]:
    value: dict = {"annotations": annotations}
    if image_size is not None:
        value["image_size"] = image_size
    metadata: dict = {"type": "groundtruth/object-detection"}
    if created is not None:
        metadata["creation-date"] = created
    if class_map is not None:
        metadata["class-map"] = class_map
    return value, metadata


def ann(class_id: object, left: object, top: object = 10, width: object = 20, height: object = 10) -> dict:
    return {"class_id": class_id, "left": left, "top": top, "width": width, "height": height}


def test_existing_boxes_come_from_the_latest_object_detection_label():
    record = {"source-ref": "s3://f/x.jpg"}
    for key, created, left in (("boxes", "2026-11-25T10:00:00.000000", 1), ("older", "2026-11-24T10:00:00.000000", 2),
                               ("nodate", None, 3), ("review", "2026-11-26T10:00:00.000000", 4)):
        record[key], record[f"{key}-metadata"] = od_label([ann(0, left)], created)
    record["text"], record["text-metadata"] = "x", {"type": "groundtruth/object-detection"}
    record["cls"], record["cls-metadata"] = {"annotations": [ann(0, 5)]}, {"type": "groundtruth/image-classification",
                                                                         "creation-date": "2027"}
    assert consolidation.existing_boxes(record, "review", CLASSES, 640, 360) == [PB(0, 1, 10, 20, 10)]
    assert consolidation.existing_boxes({"source-ref": "s3://f/x.jpg"}, "review", CLASSES, 640, 360) == []


def test_existing_boxes_are_scaled_to_the_frame():
    value, metadata = od_label([ann(1, 10, 10, 20, 5)], "d", image_size=[{"width": 320, "height": 90, "depth": 3}])
    assert consolidation.existing_boxes({"b": value, "b-metadata": metadata}, "x", CLASSES, 640, 360) == [
        PB(1, 20, 40, 40, 20)]


@pytest.mark.parametrize("image_size", [[], "x", [{"width": "wide", "height": 90}], None, [{}], [{"width": 0}]])
def test_existing_boxes_without_a_usable_image_size_are_not_scaled(image_size):
    value, metadata = od_label([ann(1, 10, 10, 20, 5)], "d", image_size=image_size)
    assert consolidation.existing_boxes({"b": value, "b-metadata": metadata}, "x", CLASSES, 640, 360) == [
        PB(1, 10, 10, 20, 5)]


def test_existing_boxes_map_classes_by_name_and_drop_what_cannot_be_drawn():
    annotations = [
        {"class_id": 0, "left": 1},  # no size: skipped
        ann(0, 10),  # "tumor" in the old job: class 2 now
        ann(5, 20),  # "gauze": no longer offered
        ann(1, 30),  # not in the class-map: its id is kept
        ann(3, 40),  # not in the class-map and out of range
        ann(1, "left"),  # not a number: skipped
        ann(1, 50, width=0),  # empty across
        ann(1, 60, height=0),  # empty down
        ann(1, 70, width=-5),  # negative
        ann(4, 80),  # "scalpel": class 0
    ]
    value, metadata = od_label(annotations, "d", class_map={"0": "tumor", "5": "gauze", "4": "scalpel"},
                               image_size=[{"width": 640, "height": 360}])
    assert consolidation.existing_boxes({"b": value, "b-metadata": metadata}, "x", CLASSES, 640, 360) == [
        PB(2, 10, 10, 20, 10), PB(1, 30, 10, 20, 10), PB(0, 80, 10, 20, 10)]
