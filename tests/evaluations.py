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
