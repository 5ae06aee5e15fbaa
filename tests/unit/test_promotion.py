"""The mAP promotion rule: COCO-exact AP@0.5, and the properties the rule must hold for every input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from include.promotion import (
    DifferentTestSets,
    PromotionPolicy,
    _iou,
    class_ap50,
    difference_interval,
    evaluation_records,
    map50,
    match,
    promotion_decision,
)
from tests.evaluations import CLASSES, exact_eval, synthetic_eval


@pytest.mark.parametrize("tied_scores", [False, True])  # ties: both order detections by a stable sort
def test_ap50_equals_pycocotools(tmp_path, tied_scores):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = synthetic_eval(seed=3, skill=0.7)
    if tied_scores:  # scores of 0.3, 0.6 and 0.9 only: hundreds of true and false positives tie
        images = [{**image, "detections": [{**d, "score": round(0.3 * max(1, round(d["score"] / 0.3)), 1)}
                                           for d in image["detections"]]} for image in images]
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
    renamed = [{**image, "image_id": f"other-{image['image_id']}"} for image in synthetic_eval(2, 0.9)]
    with pytest.raises(DifferentTestSets):  # as many images, other ones
        promotion_decision(synthetic_eval(1, 0.9), renamed, CLASSES)


def test_the_same_test_set_in_another_order_is_the_same_test_set():
    candidate, champion = synthetic_eval(1, 0.95), synthetic_eval(2, 0.6)
    matched = match(list(reversed(candidate)), CLASSES)
    assert matched.image_ids == sorted(image["image_id"] for image in candidate)
    decision = promotion_decision(candidate, list(reversed(champion)), CLASSES,
                                  PromotionPolicy(floor_map50=0.0, resamples=100))
    assert decision.figures["champion_map50"] == round(map50(match(champion, CLASSES)), 4)


def test_images_without_a_video_are_units_of_their_own():
    images = [{k: v for k, v in image.items() if k != "video_id"} for image in synthetic_eval(1, 0.9, videos=2)]
    assert match(images, CLASSES).units == sorted(image["image_id"] for image in images)
    assert promotion_decision(images, None, CLASSES).figures["test_units"] == 16


def test_a_truth_goes_to_the_best_scored_detection_once_at_iou_050_or_more():
    truth = [{"category": "tumor", "bbox": [0, 0, 10, 10]}]
    detections = [{"category": "tumor", "bbox": [0, 0, 10, 9], "score": 0.3},  # IoU 0.9, lower score
                  {"category": "tumor", "bbox": [0, 0, 10, 10], "score": 0.8},  # exact, best score: the TP
                  {"category": "tumor", "bbox": [0, 0, 10, 10], "score": 0.5}]  # a duplicate: FP
    matched = match([{"image_id": "a", "ground_truth": truth, "detections": detections}], CLASSES)
    assert matched.scores[0]["tumor"].tolist() == [0.8, 0.5, 0.3]
    assert matched.tps[0]["tumor"].tolist() == [True, False, False]
    half = [{"category": "tumor", "bbox": [0, 0, 10, 5], "score": 0.9}]  # IoU exactly 0.5 counts
    assert match([{"image_id": "a", "ground_truth": truth, "detections": half}], CLASSES).tps[0]["tumor"].tolist() \
        == [True]


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
    assert decision.figures["unit"] == "frame (the test set has one video)" and low < high
    assert decision.figures["test_units"] == 16 and decision.figures["test_images"] == 16


# --- Each of the rule's three conditions at its boundary (exact evaluations: AP is the share of COCO's 101 recall
# points at or below a class's recall, so every figure below is known before the rule runs).

def _map(images) -> float:
    return map50(match(images, CLASSES))


def test_the_default_policy_is_the_documented_one():
    assert PromotionPolicy() == PromotionPolicy(floor_map50=0.8, max_class_regression=0.05, confidence=0.95,
                                                resamples=1000, unit="video", seed=0)


def test_exact_evaluations_have_the_ap_coco_defines():
    images = exact_eval({"scalpel": [10, 10], "retractor": [5, 5], "tumor": [0, 0]})
    assert class_ap50(match(images, CLASSES)) == pytest.approx({"scalpel": 1.0, "retractor": 51 / 101,
                                                                "tumor": 0.0}, abs=1e-12)


def test_the_floor_admits_a_candidate_at_its_value_and_rejects_one_just_below():
    candidate = exact_eval({name: [8, 9, 7, 8] for name in CLASSES})
    value = _map(candidate)
    at = promotion_decision(candidate, None, CLASSES, PromotionPolicy(floor_map50=value))
    assert at.approved and f"meets the floor {value:.2f}" in at.summary and at.figures["floor_map50"] == value
    above = promotion_decision(candidate, None, CLASSES, PromotionPolicy(floor_map50=float(np.nextafter(value, 2))))
    assert not above.approved and "below the floor" in above.summary


@pytest.mark.parametrize(("found", "approved"), [
    ([8, 8, 8, 8, 8, 8, 8, 8, 7, 7], False),  # recall 0.78 -> mAP 79/101 = 0.782: just under 0.8
    ([9, 8, 8, 8, 8, 8, 8, 8, 8, 9], True),  # recall 0.82 -> mAP 83/101 = 0.822: just over
])
def test_the_default_floor_is_080(found, approved):
    candidate = exact_eval({name: found for name in CLASSES})
    assert abs(_map(candidate) - 0.8) < 0.025
    decision = promotion_decision(candidate, None, CLASSES)
    assert decision.approved is approved, decision.summary
    assert decision.reasons[-1] == "no champion yet: the floor alone decides"


def test_a_higher_map_whose_confidence_interval_touches_zero_is_rejected():
    """The candidate is better on one video of four and equal on the rest: every resample without that video shows
    no gain, so the interval's lower end is exactly 0 and the point estimate alone must not promote it."""
    candidate = exact_eval({name: [10, 10, 10, 10] for name in CLASSES})
    champion = exact_eval({name: [5, 10, 10, 10] for name in CLASSES})
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.5, resamples=300))
    assert decision.figures["difference"] > 0 and decision.figures["difference_ci"][0] == 0.0
    assert not decision.approved
    high = decision.figures["difference_ci"][1]
    assert decision.reasons[1] == (f"does not beat the champion: difference {decision.figures['difference']:+.4f}, "
                                   f"95% CI [+0.0000, {high:+.4f}] does not lie above zero")
    assert decision.figures["class_regressions"] == {}


def test_a_gain_on_every_video_is_approved_with_an_interval_above_zero():
    candidate = exact_eval({name: [10] * 6 for name in CLASSES})
    champion = exact_eval({name: [7, 6, 7, 8, 7, 6] for name in CLASSES})
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.5, resamples=200))
    assert decision.approved, decision.summary
    assert decision.figures["difference_ci"][0] > 0 and "beats the champion by" in decision.summary
    assert decision.figures["test_units"] == 6 and decision.figures["unit"] == "video"


def test_an_equal_candidate_is_rejected():
    same = exact_eval({name: [7, 6, 7, 8] for name in CLASSES})
    decision = promotion_decision(same, same, CLASSES, PromotionPolicy(floor_map50=0.0, resamples=200))
    assert not decision.approved and decision.figures["difference"] == 0.0
    assert decision.figures["difference_ci"] == [0.0, 0.0]


def _regressing(tumor: list[int]) -> tuple[list[dict], list[dict]]:
    """A candidate far better on scalpel and retractor on every video, with ``tumor`` found of 10 per video where the
    champion finds all."""
    candidate = exact_eval({"scalpel": [10] * 10, "retractor": [10] * 10, "tumor": tumor})
    champion = exact_eval({"scalpel": [6] * 10, "retractor": [6] * 10, "tumor": [10] * 10})
    return candidate, champion


def test_a_class_regressing_within_the_tolerance_does_not_block():
    candidate, champion = _regressing([9, 10, 9, 10, 9, 10, 9, 10, 10, 10])  # recall 0.96: AP 97/101, -0.040
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.5, resamples=200))
    assert decision.approved, decision.summary
    assert decision.figures["class_regressions"] == {}


def test_a_class_regressing_just_past_the_tolerance_blocks_a_better_model():
    # recall 0.95: AP 95/101 (COCO's recall point "0.95" lies a rounding error above 95/100), -0.059
    candidate, champion = _regressing([9, 9, 9, 9, 9, 10, 10, 10, 10, 10])
    assert class_ap50(match(candidate, CLASSES))["tumor"] == pytest.approx(95 / 101, abs=1e-12)
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.5, resamples=200))
    assert decision.figures["difference_ci"][0] > 0  # it does beat the champion overall
    assert not decision.approved
    assert decision.figures["class_regressions"] == {"tumor": round(95 / 101 - 1, 4)}
    assert "class AP@0.5 regresses beyond 0.05: {'tumor': -0.0594}" in decision.summary


def test_the_class_tolerance_is_inclusive_at_its_value():
    candidate, champion = _regressing([9, 9, 9, 9, 9, 10, 10, 10, 10, 10])
    drop = class_ap50(match(champion, CLASSES))["tumor"] - class_ap50(match(candidate, CLASSES))["tumor"]
    assert 1.0 - drop == class_ap50(match(candidate, CLASSES))["tumor"]  # the boundary is exact in floating point
    at = promotion_decision(candidate, champion, CLASSES,
                            PromotionPolicy(floor_map50=0.5, max_class_regression=drop, resamples=200))
    assert at.approved, at.summary
    below = promotion_decision(candidate, champion, CLASSES,
                               PromotionPolicy(floor_map50=0.5, max_class_regression=drop - 1e-9, resamples=200))
    assert not below.approved and below.figures["class_regressions"] == {"tumor": round(-drop, 4)}


def test_a_candidate_below_the_floor_is_rejected_even_when_it_beats_the_champion():
    candidate = exact_eval({name: [8] * 6 for name in CLASSES})
    champion = exact_eval({name: [5] * 6 for name in CLASSES})
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.9, resamples=200))
    assert not decision.approved
    assert "below the floor 0.90" in decision.summary and "beats the champion by" in decision.summary


_FOUND = st.lists(st.integers(0, 4), min_size=3, max_size=3)


@settings(max_examples=30, deadline=None)
@given(st.fixed_dictionaries({name: _FOUND for name in CLASSES}), st.fixed_dictionaries({name: _FOUND
                                                                                        for name in CLASSES}),
       st.floats(0.0, 1.0), st.floats(0.0, 0.5))
def test_the_decision_is_exactly_the_three_conditions(cand_found, champ_found, floor, tolerance):
    candidate, champion = exact_eval(cand_found, truths=4), exact_eval(champ_found, truths=4)
    policy = PromotionPolicy(floor_map50=floor, max_class_regression=tolerance, resamples=100)
    decision = promotion_decision(candidate, champion, CLASSES, policy)
    cand, champ = match(candidate, CLASSES), match(champion, CLASSES)
    low, _ = difference_interval(cand, champ, policy)
    meets_floor = map50(cand) >= floor
    beats = map50(cand) > map50(champ) and low > 0
    cand_ap, champ_ap = class_ap50(cand), class_ap50(champ)
    regresses = any(cand_ap[c] < champ_ap[c] - tolerance for c in CLASSES)
    assert decision.approved == (meets_floor and beats and not regresses), decision.summary
    assert ("below the floor" in decision.summary) == (not meets_floor)
    assert ("does not beat the champion" in decision.summary) == (not beats)
    assert ("regresses beyond" in decision.summary) == regresses


def test_evaluation_records_key_images_by_file_name_and_refuse_old_evaluations():
    trainer = {"per_class": {"scalpel": 0.5, "tumor": 0.2},
               "images": [{"image_id": 7, "file_name": "frames/a/0001.jpg", "video_id": "a",
                           "ground_truth": [], "detections": []}]}
    records, classes = evaluation_records(trainer)
    assert classes == ["scalpel", "tumor"]
    assert records == [{"image_id": "frames/a/0001.jpg", "video_id": "a", "ground_truth": [], "detections": []}]
    assert evaluation_records({**trainer, "classes": ["tumor"]})[1] == ["tumor"]
    plain = {"per_image": [{"image_id": "x"}], "classes": ["scalpel"]}
    assert evaluation_records(plain) == ([{"image_id": "x"}], ["scalpel"])
    with pytest.raises(ValueError) as failure:
        evaluation_records({"per_class": {}})
    assert str(failure.value) == "evaluation has neither 'images' (trainer) nor 'per_image' records"
    unnamed = {"per_class": {"tumor": 0.1}, "images": [{"image_id": 7, "video_id": "a", "ground_truth": [],
                                                       "detections": []}]}
    assert evaluation_records(unnamed)[0][0]["image_id"] == 7  # no file name: the image id keys it
    old = {"per_class": {}, "images": [{"image_id": 1, "file_name": "f.jpg", "video_id": "a", "detections": []}]}
    with pytest.raises(ValueError, match=r"f\.jpg has no 'ground_truth' boxes"):
        evaluation_records(old)


def test_one_test_image_is_decided_on_its_point_estimate():
    truth = [{"category": "tumor", "bbox": [0, 0, 10, 10]}, {"category": "tumor", "bbox": [50, 50, 10, 10]}]
    found = [{"category": "tumor", "bbox": [0, 0, 10, 10], "score": 0.9}]
    candidate = [{"image_id": "a", "ground_truth": truth, "detections": [*found, {**found[0], "bbox": [50, 50, 10,
                                                                                                        10]}]}]
    champion = [{"image_id": "a", "ground_truth": truth, "detections": found}]
    cand, champ = match(candidate, CLASSES, unit="frame"), match(champion, CLASSES, unit="frame")
    assert (map50(cand), map50(champ)) == (1.0, 51 / 101)
    assert difference_interval(cand, champ, PromotionPolicy(unit="frame", resamples=50)) == (50 / 101, 50 / 101)


def test_two_test_videos_are_resampled_not_decided_on_the_point_estimate():
    """Better on one video of two, equal on the other: a resample of the equal video twice shows no gain."""
    candidate = exact_eval({name: [10, 10] for name in CLASSES})
    champion = exact_eval({name: [5, 10] for name in CLASSES})
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.5, resamples=200))
    assert decision.figures["test_units"] == 2 and decision.figures["difference"] > 0
    assert decision.figures["difference_ci"][0] == 0.0 and not decision.approved


def test_the_interval_has_the_policys_confidence():
    candidate = exact_eval({name: [10, 9, 10, 8, 10, 9] for name in CLASSES})
    champion = exact_eval({name: [7, 9, 5, 8, 6, 9] for name in CLASSES})
    cand, champ = match(candidate, CLASSES), match(champion, CLASSES)
    narrow = difference_interval(cand, champ, PromotionPolicy(confidence=0.5, resamples=400))
    wide = difference_interval(cand, champ, PromotionPolicy(confidence=0.99, resamples=400))
    default = difference_interval(cand, champ, PromotionPolicy(resamples=400))
    assert wide[0] < default[0] < narrow[0] < narrow[1] < default[1] <= wide[1]


def test_a_decision_records_every_figure_it_used():
    """The whole record, with values known from the layout: AP of recall r is (points <= r) / 101 (scalpel 40/40 ->
    1, retractor 39/40 -> 98/101, tumor 35/40 -> 88/101; champion 24/40 -> 61/101, 27/40 -> 68/101, 36/40 -> 91/101).
    The interval is scipy's percentile bootstrap with the policy's seed (scipy is pinned in constraints.txt)."""
    candidate = exact_eval({"scalpel": [10] * 4, "retractor": [9, 10, 10, 10], "tumor": [8, 8, 9, 10]})
    champion = exact_eval({"scalpel": [6] * 4, "retractor": [7, 7, 6, 7], "tumor": [8, 9, 9, 10]})
    decision = promotion_decision(candidate, champion, CLASSES, PromotionPolicy(floor_map50=0.5, resamples=100,
                                                                                seed=3))
    candidate_aps = {"scalpel": 1.0, "retractor": round(98 / 101, 4), "tumor": round(88 / 101, 4)}
    champion_aps = {"scalpel": round(61 / 101, 4), "retractor": round(68 / 101, 4), "tumor": round(91 / 101, 4)}
    assert decision.to_dict() == {
        "approved": True,
        "reasons": ["mAP@0.5 0.9472 meets the floor 0.50", "beats the champion by +0.2211 (95% CI [+0.1996, +0.2527])"],
        "figures": {"candidate_map50": round((101 + 98 + 88) / 303, 4), "floor_map50": 0.5,
                    "candidate_class_ap50": candidate_aps, "test_images": 120, "test_units": 4, "unit": "video",
                    "champion_map50": round((61 + 68 + 91) / 303, 4), "champion_class_ap50": champion_aps,
                    "difference": round((101 + 98 + 88 - 61 - 68 - 91) / 303, 4), "difference_ci": [0.1996, 0.2527],
                    "confidence": 0.95, "resamples": 100, "seed": 3, "class_regressions": {}},
    }
    by_frame = promotion_decision(candidate, None, CLASSES, PromotionPolicy(unit="frame"))
    assert by_frame.to_dict() == {
        "approved": True,
        "reasons": ["mAP@0.5 0.9472 meets the floor 0.80", "no champion yet: the floor alone decides"],
        "figures": {"candidate_map50": 0.9472, "floor_map50": 0.8, "candidate_class_ap50": candidate_aps,
                    "test_images": 120, "test_units": 120, "unit": "frame"}}
    assert by_frame.summary == "Approved: mAP@0.5 0.9472 meets the floor 0.80; no champion yet: the floor alone decides"


def test_a_test_set_without_any_true_box_has_map_zero_and_undefined_class_aps():
    images = [{"image_id": "a", "video_id": "v", "ground_truth": [], "detections": [
        {"category": "tumor", "bbox": [0, 0, 5, 5], "score": 0.5}]}]
    matched = match(images, CLASSES)
    assert all(np.isnan(v) for v in class_ap50(matched).values()) and map50(matched) == 0.0
    decision = promotion_decision(images, None, CLASSES, PromotionPolicy(floor_map50=0.0))
    assert decision.figures["candidate_class_ap50"] == {"scalpel": None, "retractor": None, "tumor": None}


@pytest.mark.parametrize(("box", "other", "iou"), [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),
    ([0, 0, 10, 10], [10, 0, 10, 10], 0.0),  # touching edges share no area
    ([0, 0, 10, 10], [19, 19, 10, 10], 0.0),  # apart on both axes (the gaps' product is no overlap)
    ([0, 0, 10, 10], [15, 0, 10, 10], 0.0),  # apart along x only
    ([0, 0, 10, 10], [0, 15, 10, 10], 0.0),  # apart along y only
    ([0, 0, 10, 10], [0, 9.5, 10, 10], 5 / 195),  # overlapping by less than a pixel
    ([0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], 1.0),  # boxes under one square pixel
    ([3, 3, 0, 0], [3, 3, 0, 0], 0.0),  # no area: no overlap
])
def test_iou(box, other, iou):
    assert _iou(box, np.array([other], dtype=float)) == pytest.approx([iou], abs=1e-12)
    assert _iou(box, np.zeros((0, 4))).shape == (0,)
