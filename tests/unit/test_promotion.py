"""The mAP promotion rule: COCO-exact AP@0.5, and the properties the rule must hold for every input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from include.promotion import DifferentTestSets, PromotionPolicy, class_ap50, map50, match, promotion_decision
from tests.evaluations import CLASSES, synthetic_eval


def test_ap50_equals_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = synthetic_eval(seed=3, skill=0.7)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    ids = {n: i + 1 for i, n in enumerate(CLASSES)}
    gt = {"images": [{"id": i + 1, "width": 640, "height": 360} for i in range(len(images))], "categories": categories,
          "annotations": [{"id": k + 1, "image_id": i + 1, "category_id": ids[b["category"]], "bbox": b["bbox"],
                           "area": b["bbox"][2] * b["bbox"][3], "iscrowd": 0}
                          for i, image in enumerate(images) for k, b in enumerate(image["ground_truth"], start=i * 10)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = COCO(str(tmp_path / "gt.json"))
    detections = coco.loadRes([{"image_id": i + 1, "category_id": ids[d["category"]], "bbox": d["bbox"],
                                "score": d["score"]} for i, image in enumerate(images) for d in image["detections"]])
    evaluator = COCOeval(coco, detections, "bbox")
    evaluator.params.iouThrs = np.array([0.5])
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # recall points x classes, all areas, 100 dets
    expected = {n: float(precision[:, k][precision[:, k] > -1].mean()) for k, n in enumerate(CLASSES)}
    ours = class_ap50(match(images, CLASSES))
    assert ours == pytest.approx(expected, abs=1e-9)


def test_no_champion_the_floor_decides():
    good, weak = synthetic_eval(1, 0.97), synthetic_eval(2, 0.4)
    assert promotion_decision(good, None, CLASSES).approved
    decision = promotion_decision(weak, None, CLASSES)
    assert not decision.approved and "below the floor 0.80" in decision.summary


def test_a_clearly_better_candidate_replaces_the_champion_with_its_figures():
    decision = promotion_decision(synthetic_eval(5, 0.99), synthetic_eval(6, 0.85), CLASSES,
                                  PromotionPolicy(floor_map50=0.5))
    assert decision.approved, decision.summary
    assert decision.figures["difference_ci"][0] > 0 and decision.figures["champion_map50"] < \
        decision.figures["candidate_map50"]


def test_different_test_sets_cannot_be_compared():
    with pytest.raises(DifferentTestSets, match="re-evaluate the champion"):
        promotion_decision(synthetic_eval(1, 0.9), synthetic_eval(1, 0.9, videos=5), CLASSES)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0.3, 1.0), st.floats(0.3, 1.0),
       st.floats(0.0, 1.0))
def test_the_rule_never_approves_a_worse_or_below_floor_candidate(seed_a, seed_b, skill_a, skill_b, floor):
    candidate, champion = synthetic_eval(seed_a, skill_a, videos=4, frames=4), synthetic_eval(seed_b, skill_b,
                                                                                            videos=4, frames=4)
    policy = PromotionPolicy(floor_map50=floor, resamples=200, seed=seed_a)
    decision = promotion_decision(candidate, champion, CLASSES, policy)
    cand, champ = map50(match(candidate, CLASSES)), map50(match(champion, CLASSES))
    if decision.approved:
        assert cand >= floor and cand > champ
    assert promotion_decision(candidate, champion, CLASSES, policy).to_dict() == decision.to_dict()  # deterministic


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.3, 1.0))
def test_a_candidate_never_beats_itself(seed, skill):
    images = synthetic_eval(seed, skill, videos=4, frames=4)
    assert not promotion_decision(images, images, CLASSES, PromotionPolicy(floor_map50=0.0, resamples=200)).approved


def test_a_one_video_test_set_is_resampled_by_frames_not_decided_on_a_point_estimate():
    candidate, champion = synthetic_eval(1, 0.95, videos=1, frames=16), synthetic_eval(2, 0.6, videos=1, frames=16)
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.0, resamples=300))
    low, high = decision.figures["difference_ci"]
    assert decision.figures["unit"].startswith("frame") and low < high
