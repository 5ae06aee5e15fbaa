"""Synthetic per-image evaluations (ground truth + detections of a model of a given skill) for promotion tests."""

from __future__ import annotations

import random

CLASSES = ("scalpel", "retractor", "tumor")


def synthetic_eval(seed: int, skill: float, videos: int = 6, frames: int = 8) -> list[dict]:
    """Per-image ground truth and detections of a model of the given skill (0: noise, 1: perfect)."""
    rng = random.Random(seed)
    truth_rng = random.Random(1234)  # the test set is the same whatever the model
    images = []
    for v in range(videos):
        for f in range(frames):
            truth = [{"category": truth_rng.choice(CLASSES),
                      "bbox": [truth_rng.uniform(0, 400), truth_rng.uniform(0, 200), truth_rng.uniform(20, 80),
                               truth_rng.uniform(20, 80)]} for _ in range(truth_rng.randint(1, 3))]
            detections = []
            for box in truth:
                if rng.random() < skill:
                    jitter = (1 - skill) * 15
                    detections.append({"category": box["category"], "score": rng.uniform(0.5, 1.0),
                                       "bbox": [c + rng.gauss(0, jitter) for c in box["bbox"][:2]] + box["bbox"][2:]})
            for _ in range(rng.randint(0, 2)):
                detections.append({"category": rng.choice(CLASSES), "score": rng.uniform(0, 0.9) * (1 - skill / 2),
                                   "bbox": [rng.uniform(0, 400), rng.uniform(0, 200), 30, 30]})
            images.append({"image_id": f"v{v}-{f:03d}", "video_id": f"v{v}", "ground_truth": truth,
                           "detections": detections})
    return images


def exact_eval(detected: dict[str, list[int]], truths: int = 10, videos: int | None = None) -> list[dict]:
    """An evaluation whose AP@0.5 per class is exactly controlled: every ground-truth box is alone in its image, and
    a model either finds it exactly (score 0.9) or not at all; no false positives. ``detected[class][v]`` is how many
    of video ``v``'s ``truths`` boxes of that class the model finds, so a class's AP is the share of COCO's 101
    recall points at or below its recall (precision is 1 up to it). Image ids depend only on the layout, so two
    models' evaluations built with the same ``truths`` and number of videos are of the same test set."""
    videos = videos if videos is not None else len(next(iter(detected.values())))
    images = []
    for name in CLASSES:
        found = detected.get(name, [truths] * videos)
        for v in range(videos):
            for k in range(truths):
                box = [10.0 + k, 20.0, 40.0, 30.0]
                images.append({"image_id": f"{name}-v{v}-{k:03d}", "video_id": f"v{v}",
                               "ground_truth": [{"category": name, "bbox": box}],
                               "detections": [{"category": name, "bbox": box, "score": 0.9}] if k < found[v]
                               else []})
    return images
