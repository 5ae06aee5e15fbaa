"""The mAP promotion rule: does a candidate model replace the champion?

Both models are scored on the **same** held-out test set (per-image detections and ground truth). Approve only if:

1. the candidate's mAP@0.5 is at or above the floor (0.8 by default);
2. there is no champion, or the candidate beats it: its mAP@0.5 is higher and the bootstrap confidence interval of
   the difference (resampling whole videos, or frames) lies above zero;
3. no class's AP@0.5 falls more than the tolerance below the champion's.

AP@0.5 is COCO's (greedy matching by score at IoU >= 0.5 within an image, 101-point interpolated precision). The
matching is done once per image; a resample only re-weights images, so thousands of resamples cost milliseconds.
Written by hand because pycocotools recomputes everything per call (far too slow for a bootstrap) and no library
bootstraps a detection metric; the interval itself comes from ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


class DifferentTestSets(ValueError):
    """Candidate and champion were scored on different test sets: their numbers cannot be compared."""


@dataclass(frozen=True)
class PromotionPolicy:
    floor_map50: float = 0.8
    max_class_regression: float = 0.05
    confidence: float = 0.95
    resamples: int = 1000
    unit: str = "video"  # resample whole videos (frames of one video are not independent) or "frame"
    seed: int = 0


@dataclass
class Decision:
    approved: bool
    reasons: list[str]
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        verdict = "Approved" if self.approved else "Rejected"
        return f"{verdict}: " + "; ".join(self.reasons)


def _iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y2 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class MatchedImages:
    """Per image and class: detection scores with a TP flag, and the number of true boxes."""

    image_ids: list[str]
    units: list[str]
    classes: list[str]
    scores: list[dict[str, np.ndarray]]
    tps: list[dict[str, np.ndarray]]
    positives: np.ndarray  # images x classes
    _flat: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False,
                                                                        compare=False)

    def flat(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One class's detections over all images in image order: (scores, TP flags, image index of each)."""
        if name not in self._flat:
            sizes = [len(image[name]) for image in self.scores]
            self._flat[name] = (np.concatenate([image[name] for image in self.scores] + [np.zeros(0)]),
                                np.concatenate([image[name] for image in self.tps] + [np.zeros(0, bool)]),
                                np.repeat(np.arange(len(sizes)), sizes))
        return self._flat[name]


def match(per_image: Iterable[dict[str, Any]], classes: Sequence[str], iou_threshold: float = 0.5,
          unit: str = "video") -> MatchedImages:
    """``per_image``: {"image_id", "video_id", "ground_truth": [{category, bbox}], "detections": [{..., score}]}."""
    ids, units, scores, tps, positives = [], [], [], [], []
    for image in sorted(per_image, key=lambda i: str(i["image_id"])):
        ids.append(str(image["image_id"]))
        units.append(str(image.get("video_id", image["image_id"])) if unit == "video" else str(image["image_id"]))
        image_scores, image_tps, counts = {}, {}, []
        for name in classes:
            truth = np.array([g["bbox"] for g in image["ground_truth"] if g["category"] == name], dtype=float)
            truth = truth.reshape(-1, 4)
            detections = sorted((d for d in image["detections"] if d["category"] == name),
                                key=lambda d: -d["score"])
            used = np.zeros(len(truth), dtype=bool)
            flags = []
            for detection in detections:
                overlaps = _iou(detection["bbox"], truth)
                overlaps[used] = -1.0
                best = int(np.argmax(overlaps)) if len(overlaps) else -1
                hit = best >= 0 and overlaps[best] >= iou_threshold
                if hit:
                    used[best] = True
                flags.append(hit)
            image_scores[name] = np.array([d["score"] for d in detections], dtype=float)
            image_tps[name] = np.array(flags, dtype=bool)
            counts.append(len(truth))
        scores.append(image_scores)
        tps.append(image_tps)
        positives.append(counts)
    return MatchedImages(ids, units, list(classes), scores, tps, np.array(positives, dtype=float).reshape(-1,
                                                                                                          len(classes)))


def class_ap50(matched: MatchedImages, weights: np.ndarray | None = None) -> dict[str, float]:
    """AP@0.5 per class over the images, each counted ``weights[i]`` times (a bootstrap resample)."""
    weights = np.ones(len(matched.image_ids)) if weights is None else weights
    result = {}
    for c, name in enumerate(matched.classes):
        total = float((matched.positives[:, c] * weights).sum())
        if total == 0:
            result[name] = float("nan")  # no true box of this class: AP undefined (COCO leaves it out)
            continue
        scores, tps, image_of = matched.flat(name)
        per_detection = weights[image_of]
        kept = per_detection > 0  # a resample leaves some images out
        score, tp, weight = scores[kept], tps[kept], per_detection[kept]
        if len(score) == 0:
            result[name] = 0.0
            continue
        order = np.argsort(-score, kind="mergesort")
        tp_cum = np.cumsum(weight[order] * tp[order])
        fp_cum = np.cumsum(weight[order] * ~tp[order])
        recall = tp_cum / total
        precision = tp_cum / np.maximum(tp_cum + fp_cum, 1e-12)
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # COCO's interpolation: precision envelope
        indices = np.searchsorted(recall, RECALL_POINTS, side="left")
        sampled = np.where(indices < len(precision), precision[np.minimum(indices, len(precision) - 1)], 0.0)
        result[name] = float(sampled.mean())
    return result


def map50(matched: MatchedImages, weights: np.ndarray | None = None) -> float:
    values = [v for v in class_ap50(matched, weights).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else 0.0


def _unit_weights(matched: MatchedImages, chosen_units: np.ndarray, unit_names: list[str]) -> np.ndarray:
    counts = np.bincount(chosen_units.astype(int), minlength=len(unit_names)).astype(float)
    index = {u: i for i, u in enumerate(unit_names)}
    return np.array([counts[index[u]] for u in matched.units])


def difference_interval(candidate: MatchedImages, champion: MatchedImages,
                        policy: PromotionPolicy) -> tuple[float, float]:
    """Bootstrap confidence interval of mAP@0.5(candidate) - mAP@0.5(champion), resampling videos (or frames)."""
    from scipy.stats import bootstrap

    unit_names = sorted(set(candidate.units))
    if len(unit_names) < 2:
        diff = map50(candidate) - map50(champion)
        return diff, diff

    def statistic(chosen: np.ndarray) -> float:
        weights = _unit_weights(candidate, chosen, unit_names)
        return map50(candidate, weights) - map50(champion, weights)

    result = bootstrap((np.arange(len(unit_names)),), statistic, n_resamples=policy.resamples,
                       confidence_level=policy.confidence, method="percentile", vectorized=False,
                       random_state=np.random.default_rng(policy.seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def evaluation_records(evaluation: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """(per-image records, class names) of an evaluation document.

    Two producers: the trainer's ``evaluation.json`` (``images`` with ``file_name``, ``ground_truth`` and
    ``detections``; classes in ``per_class``) and a plain ``per_image`` list with ``classes``. Images are keyed by
    ``file_name`` where there is one: COCO image ids are numbered per dataset version, file names are not, so two
    evaluations of the same test frames line up whichever version numbered them.
    """
    if "per_image" in evaluation:
        return list(evaluation["per_image"]), list(evaluation["classes"])
    if "images" not in evaluation:
        raise ValueError("evaluation has neither 'images' (trainer) nor 'per_image' records")
    records = []
    for image in evaluation["images"]:
        if "ground_truth" not in image:
            raise ValueError(f"evaluation image {image.get('file_name')} has no 'ground_truth' boxes: produced by "
                             f"an older trainer, re-evaluate the model")
        records.append({"image_id": image.get("file_name", image["image_id"]), "video_id": image["video_id"],
                        "ground_truth": image["ground_truth"], "detections": image["detections"]})
    classes = list(evaluation.get("classes") or evaluation["per_class"])
    return records, classes


def promotion_decision(candidate: Iterable[dict[str, Any]], champion: Iterable[dict[str, Any]] | None,
                       classes: Sequence[str], policy: PromotionPolicy | None = None) -> Decision:
    """Approve or reject the candidate, with every figure the decision used."""
    policy = policy or PromotionPolicy()
    cand = match(candidate, classes, unit=policy.unit)
    cand_classes = class_ap50(cand)
    cand_map = map50(cand)
    figures: dict[str, Any] = {"candidate_map50": round(cand_map, 4), "floor_map50": policy.floor_map50,
                               "candidate_class_ap50": _rounded(cand_classes), "test_images": len(cand.image_ids),
                               "test_units": len(set(cand.units)), "unit": policy.unit}
    reasons = []
    approved = True
    if cand_map < policy.floor_map50:
        approved = False
        reasons.append(f"mAP@0.5 {cand_map:.4f} is below the floor {policy.floor_map50:.2f}")
    else:
        reasons.append(f"mAP@0.5 {cand_map:.4f} meets the floor {policy.floor_map50:.2f}")
    if champion is None:
        reasons.append("no champion yet: the floor alone decides")
        return Decision(approved, reasons, figures)
    unit = policy.unit
    if unit == "video" and len(set(cand.units)) < 2:
        # One test video cannot be resampled: resample its frames (a narrower interval than videos would give, as
        # frames of one video are not independent) rather than decide on a point estimate; recorded in the figures.
        unit = "frame"
        cand = match(candidate, classes, unit=unit)
        figures.update(unit="frame (the test set has one video)", test_units=len(set(cand.units)))
    champ = match(champion, classes, unit=unit)
    if champ.image_ids != cand.image_ids:
        raise DifferentTestSets(f"candidate scored on {len(cand.image_ids)} images, champion on "
                              f"{len(champ.image_ids)}: re-evaluate the champion on the candidate's test set")
    champ_classes = class_ap50(champ)
    champ_map = map50(champ)
    low, high = difference_interval(cand, champ, replace(policy, unit=unit))
    figures.update({"champion_map50": round(champ_map, 4), "champion_class_ap50": _rounded(champ_classes),
                    "difference": round(cand_map - champ_map, 4),
                    "difference_ci": [round(low, 4), round(high, 4)], "confidence": policy.confidence,
                    "resamples": policy.resamples, "seed": policy.seed})
    if cand_map <= champ_map or low <= 0:
        approved = False
        reasons.append(f"does not beat the champion: difference {cand_map - champ_map:+.4f}, "
                       f"{policy.confidence:.0%} CI [{low:+.4f}, {high:+.4f}] does not lie above zero")
    else:
        reasons.append(f"beats the champion by {cand_map - champ_map:+.4f} ({policy.confidence:.0%} CI "
                       f"[{low:+.4f}, {high:+.4f}])")
    regressions = {name: round(cand_classes[name] - champ_classes[name], 4) for name in classes
                   if not np.isnan(champ_classes[name]) and not np.isnan(cand_classes[name])
                   and cand_classes[name] < champ_classes[name] - policy.max_class_regression}
    if regressions:
        approved = False
        reasons.append(f"class AP@0.5 regresses beyond {policy.max_class_regression:.2f}: {regressions}")
    figures["class_regressions"] = regressions
    return Decision(approved, reasons, figures)


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if np.isnan(v) else round(v, 4)) for k, v in values.items()}
