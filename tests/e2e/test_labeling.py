"""labeling end to end with the opt-in Ground Truth backend: extracted frames -> Ground Truth job (local workforce) ->
review -> dataset version."""

from __future__ import annotations

import json

import numpy as np
import pytest

from include.synthetic import load_truth
from local_aws.settings import REPO_ROOT
from tests.conftest import run_dag_test
from tests.e2e.frames import upload_and_extract

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
ANNOTATIONS, FRAMES = "surgical-annotations", "surgical-frames-processed"
CLASSES = ("scalpel", "retractor", "tumor")


def iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w, h = max(0.0, min(ax2, bx2) - max(a[0], b[0])), max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def extracted(aws, airflow_home, local_stack, tmp_path_factory) -> list[str]:
    """Three generated videos (truth in the stack's hidden store) through ingest_and_extract; their video ids."""
    return upload_and_extract(aws, airflow_home, local_stack, tmp_path_factory.mktemp("labeling-videos"), "lab",
                              seeds=(100, 101, 102))


@pytest.fixture(scope="module")
def labeled(airflow_home, extracted):
    # Ground Truth is an opt-in (closed to new customers): this run asks for it; the test stack's account has it.
    return run_dag_test(airflow_home, REPO_ROOT / "dags", "labeling",
                        conf={"video_ids": extracted, "backend": "ground_truth"})


def _published(aws) -> tuple[str, dict]:
    s3 = aws("s3")
    version = json.loads(s3.get_object(Bucket=ANNOTATIONS, Key="datasets/latest.json")["Body"].read())["version"]
    card = json.loads(s3.get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/card.json")["Body"].read())
    return version, card


def test_frames_are_labeled_reviewed_and_published_as_a_dataset_version(aws, labeled, extracted, tmp_path):
    from pycocotools.coco import COCO

    states, output = labeled
    assert states["publish"] == "success", output[-6000:]
    assert states["ground_truth.first_pass"] == "success"
    version, card = _published(aws)
    assert card["frames"] == sum(split["frames"] for split in card["splits"].values()) > 0
    assert {v for split in card["splits"].values() for v in split["videos"]} == set(extracted)
    assert all(card["splits"][s]["videos"] for s in ("train", "val", "test"))  # one video per split
    for split in ("train", "val", "test"):
        path = tmp_path / f"{split}.json"
        path.write_bytes(aws("s3").get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/coco_{split}.json")
                         ["Body"].read())
        assert COCO(str(path)).getImgIds()
    if states.get("ground_truth.review") == "success":
        assert card["label_sources"]["reviewed"] > 0


def test_label_quality_against_the_hidden_truth(aws, labeled, local_stack):
    """Only this test (and the local workforce) read the truth store: the pipeline never does."""
    s3 = aws("s3")
    version, _ = _published(aws)
    lines = s3.get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/manifest.jsonl")["Body"].read().decode()
    ious, correct, total = [], 0, 0
    manifests: dict[str, dict] = {}
    for line in lines.splitlines():
        entry = json.loads(line)
        video_id = entry["source-ref"].split("/")[-2]
        if video_id not in manifests:
            manifests[video_id] = json.loads(s3.get_object(Bucket=FRAMES, Key=f"frames/{video_id}/frames.json")
                                             ["Body"].read())
        manifest = manifests[video_id]
        truth = load_truth(local_stack.truth_dir, manifest["source"]["sha256"])
        name = entry["source-ref"].rsplit("/", 1)[1]
        timestamp = next(f["timestamp"] for f in manifest["frames"] if f["file"] == name)
        truth_frame = min(truth["frames"], key=lambda f: abs(f["t"] - timestamp))
        sx, sy = entry["width"] / truth["width"], entry["height"] / truth["height"]
        for box in truth_frame["boxes"]:
            scaled = [box["x"] * sx, box["y"] * sy, box["w"] * sx, box["h"] * sy]
            candidates = [(iou(scaled, [b["x"], b["y"], b["w"], b["h"]]), b["label"]) for b in entry["boxes"]]
            best = max(candidates, default=(0.0, None))
            ious.append(best[0])
            total += 1
            correct += best[1] == box["label"]
    mean_iou, accuracy = float(np.mean(ious)), correct / total
    print(f"label quality vs hidden truth: {total} true boxes, mean IoU {mean_iou:.3f}, class accuracy "
          f"{accuracy:.3f}")
    assert mean_iou >= 0.7 and accuracy >= 0.9


def test_labeling_the_same_frames_again_skips_cleanly(aws, airflow_home, labeled, extracted):
    version, _ = _published(aws)
    states, output = run_dag_test(airflow_home, REPO_ROOT / "dags", "labeling",
                                  conf={"video_ids": extracted, "backend": "ground_truth"})
    assert states["select_frames"] == "skipped", output[-4000:]
    assert "failed" not in states.values()
    assert _published(aws)[0] == version
