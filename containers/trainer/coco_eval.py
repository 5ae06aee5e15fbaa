"""COCO detection metrics with pycocotools, and what the promotion rule and the report need from them.

- :func:`evaluate_coco`: mAP@[.5:.95], mAP@0.5, mAP@0.75, per-class AP (@[.5:.95] and @0.5), per-class
  precision/recall curves at IoU 0.5 (COCO's 101 recall points 0, 0.01, ..., 1), and per image the detections with
  their score and whether COCO matched them to a true box at IoU 0.5 (``tp50``), plus per class the true boxes,
  true/false positives and misses at IoU 0.5 above the score threshold.
- :func:`ap50_from_images`: AP@0.5 recomputed from those per-image records exactly as pycocotools accumulates it, so a
  bootstrap over images (resampling test frames or videos) can recompute mAP@0.5 without the model.
- :func:`confusion_matrix`: class confusion at IoU 0.5 (class-agnostic matching, background row and column).

Classes without a true box in the split have no AP (``None``) and are left out of the means, as COCO does.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# pycocotools' recall thresholds (recThrs) exactly: np.linspace's values (0.7000000000000001, not 0.7), so a recall
# that lands on a threshold samples the same detection as COCOeval does; RECALL_POINTS are the same, rounded, for the
# PR curves written to JSON.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
RECALL_POINTS = [round(float(x), 2) for x in RECALL_THRESHOLDS]


def _coco(gt: dict[str, Any]) -> COCO:
    coco = COCO()
    data = copy.deepcopy(gt)
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(gt: dict[str, Any], detections: list[dict[str, Any]], score_threshold: float = 0.5,
                  ) -> dict[str, Any]:
    """``gt``: a COCO detection dict; ``detections``: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

    Returns the metrics described in the module docstring (plain JSON types).
    """
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    names = {c["id"]: c["name"] for c in cats}
    coco_gt = _coco(gt)
    image_ids = sorted(int(i["id"]) for i in gt["images"])
    gt_counts = {c["id"]: 0 for c in cats}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            gt_counts[int(ann["category_id"])] = gt_counts.get(int(ann["category_id"]), 0) + 1
    result: dict[str, Any] = {"map": 0.0, "map50": 0.0, "map75": 0.0, "per_class": {}, "pr_curves": {},
                              "images": [], "summary": ""}
    dets = [d for d in detections if int(d["image_id"]) in set(image_ids)]
    evaluator = None
    if dets and image_ids:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        result["summary"] = out.getvalue()
        stats = evaluator.stats
        result.update(map=_metric(stats[0]), map50=_metric(stats[1]), map75=_metric(stats[2]))
    precision = evaluator.eval["precision"] if evaluator is not None else None  # [T, R, K, A, M]
    for k, cat in enumerate(cats):
        cid, name = cat["id"], cat["name"]
        has_gt = gt_counts.get(cid, 0) > 0
        entry: dict[str, Any] = {"category_id": cid, "gt_boxes": gt_counts.get(cid, 0), "ap": None, "ap50": None,
                                 "ap75": None}
        curve = None
        if has_gt:
            if precision is not None:
                pr = precision[:, :, k, 0, -1]
                entry["ap"] = _mean_valid(pr)
                entry["ap50"] = _mean_valid(pr[0])
                entry["ap75"] = _mean_valid(pr[5])
                curve = [round(max(0.0, float(p)), 4) for p in pr[0]]
            else:  # no detection at all: every AP is 0
                entry.update(ap=0.0, ap50=0.0, ap75=0.0)
                curve = [0.0] * len(RECALL_POINTS)
        result["per_class"][name] = entry
        result["pr_curves"][name] = {"iou": 0.5, "recall": RECALL_POINTS, "precision": curve}
    result["images"] = _per_image(gt, dets, evaluator, names, score_threshold)
    result["classes_evaluated"] = [c["name"] for c in cats if gt_counts.get(c["id"], 0) > 0]
    return result


def _metric(value: float) -> float:
    return round(max(0.0, float(value)), 6)  # COCO's -1 (nothing to evaluate) reads as 0


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return round(float(np.mean(valid)), 6) if valid.size else None


def _per_image(gt: dict[str, Any], dets: list[dict[str, Any]], evaluator: COCOeval | None, names: dict[int, str],
               score_threshold: float) -> list[dict[str, Any]]:
    """Per test image: video, true boxes (count per class and the boxes: the promotion rule re-matches them),
    detections with score and tp50, counts at the threshold."""
    matched: dict[int, bool] = {}  # detection id in coco_dt -> matched at IoU 0.5
    det_of_id: dict[int, dict[str, Any]] = {}
    if evaluator is not None:
        for ann in evaluator.cocoDt.dataset["annotations"]:
            det_of_id[int(ann["id"])] = ann
        for e in evaluator.evalImgs:
            if e is None or e["aRng"] != evaluator.params.areaRng[0]:
                continue
            for det_id, match, ignored in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0], strict=True):
                if not ignored:
                    matched[int(det_id)] = bool(match > 0)
    gt_by_image: dict[int, dict[str, int]] = {}
    boxes_by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            per = gt_by_image.setdefault(int(ann["image_id"]), {})
            name = names.get(int(ann["category_id"]))
            if name is not None:
                per[name] = per.get(name, 0) + 1
                boxes_by_image.setdefault(int(ann["image_id"]), []).append(
                    {"category": name, "bbox": [round(float(v), 1) for v in ann["bbox"]]})
    dets_by_image: dict[int, list[dict[str, Any]]] = {}
    for det_id, ann in det_of_id.items():
        if det_id in matched:  # beyond COCO's 100 per image and class: not evaluated
            dets_by_image.setdefault(int(ann["image_id"]), []).append(
                {"category": names[int(ann["category_id"])], "category_id": int(ann["category_id"]),
                 "bbox": [round(float(v), 1) for v in ann["bbox"]], "score": float(ann["score"]),
                 "tp50": matched[det_id]})
    images = []
    for info in sorted(gt["images"], key=lambda i: i["id"]):
        image_id = int(info["id"])
        truth = gt_by_image.get(image_id, {})
        found = sorted(dets_by_image.get(image_id, []), key=lambda d: -d["score"])
        counts = {}
        for name in names.values():
            above = [d for d in found if d["category"] == name and d["score"] >= score_threshold]
            tp = sum(d["tp50"] for d in above)
            counts[name] = {"tp": tp, "fp": len(above) - tp, "fn": truth.get(name, 0) - tp}
        images.append({"image_id": image_id, "file_name": info["file_name"],
                       "video_id": str(info.get("video_id") or info["file_name"].split("/")[-2]),
                       "gt": truth, "ground_truth": boxes_by_image.get(image_id, []), "counts": counts,
                       "detections": found})
    return images


def ap50_from_images(images: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """mAP@0.5 and per-class AP@0.5 from per-image records (``evaluation.json``'s ``images``, any subset or
    resample of them, repeats allowed), accumulated as pycocotools does: detections sorted by score (stable),
    precision made monotone, sampled at the 101 recall points. Classes without a true box are left out."""
    per_class: dict[str, float | None] = {}
    for name in classes:
        scores, tps, n_gt = [], [], 0
        for image in images:
            n_gt += int(image["gt"].get(name, 0))
            for d in sorted((d for d in image["detections"] if d["category"] == name), key=lambda d: -d["score"]):
                scores.append(d["score"])
                tps.append(bool(d["tp50"]))
        if n_gt == 0:
            per_class[name] = None
            continue
        order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
        tp = np.asarray(tps, dtype=bool)[order] if tps else np.zeros(0, dtype=bool)
        tp_sum = np.cumsum(tp).astype(float)
        fp_sum = np.cumsum(~tp).astype(float)
        recall = tp_sum / n_gt
        precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
        for i in range(len(precision) - 1, 0, -1):
            precision[i - 1] = max(precision[i - 1], precision[i])
        sampled = np.zeros(len(RECALL_POINTS))
        indices = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
        for r, index in enumerate(indices):
            if index < len(precision):
                sampled[r] = precision[index]
        per_class[name] = float(np.mean(sampled))
    valid = [v for v in per_class.values() if v is not None]
    return {"map50": float(np.mean(valid)) if valid else 0.0, "per_class": per_class}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of [N, 4] and [M, 4] boxes given as x, y, w, h."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0][:, None], b[:, 0][None]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1][:, None], b[:, 1][None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def confusion_matrix(gt: dict[str, Any], detections: list[dict[str, Any]], score_threshold: float,
                     iou_threshold: float = 0.5) -> dict[str, Any]:
    """Rows: true class (last: background = a detection that matches no true box); columns: predicted class
    (last: background = a true box no detection found). Matching ignores the class, highest score first."""
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    k = len(cats)
    matrix = np.zeros((k + 1, k + 1), dtype=int)
    truth: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0) and int(ann["category_id"]) in index:
            truth.setdefault(int(ann["image_id"]), []).append(ann)
    found: dict[int, list[dict[str, Any]]] = {}
    for det in detections:
        if det["score"] >= score_threshold and int(det["category_id"]) in index:
            found.setdefault(int(det["image_id"]), []).append(det)
    for info in gt["images"]:
        image_id = int(info["id"])
        gts = truth.get(image_id, [])
        dts = sorted(found.get(image_id, []), key=lambda d: -d["score"])
        ious = box_iou(np.array([d["bbox"] for d in dts], dtype=float).reshape(-1, 4),
                       np.array([g["bbox"] for g in gts], dtype=float).reshape(-1, 4))
        used: set[int] = set()
        for di, det in enumerate(dts):
            best, best_iou = -1, iou_threshold
            for gi in range(len(gts)):
                if gi not in used and ious[di, gi] >= best_iou:
                    best, best_iou = gi, ious[di, gi]
            if best >= 0:
                used.add(best)
                matrix[index[int(gts[best]["category_id"])], index[int(det["category_id"])]] += 1
            else:
                matrix[k, index[int(det["category_id"])]] += 1
        for gi, g in enumerate(gts):
            if gi not in used:
                matrix[index[int(g["category_id"])], k] += 1
    labels = [c["name"] for c in cats] + ["background"]
    return {"labels": labels, "rows": "true", "columns": "predicted", "iou": iou_threshold,
            "score_threshold": score_threshold, "matrix": matrix.tolist()}


def best_f1_threshold(images: list[dict[str, Any]], default: float = 0.5) -> float:
    """The score threshold with the best F1 at IoU 0.5 over all classes of these per-image records."""
    dets = sorted((d for image in images for d in image["detections"]), key=lambda d: -d["score"])
    n_gt = sum(int(v) for image in images for v in image["gt"].values())
    if not dets or n_gt == 0:
        return default
    best_f1, best_threshold, tp = -1.0, default, 0
    for i, d in enumerate(dets):
        tp += bool(d["tp50"])
        if i + 1 < len(dets) and dets[i + 1]["score"] == d["score"]:
            continue
        f1 = 2 * tp / (i + 1 + n_gt)
        if f1 > best_f1:
            best_f1, best_threshold = f1, d["score"]
    return round(float(best_threshold), 4)
