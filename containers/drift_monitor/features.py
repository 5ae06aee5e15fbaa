"""Feature values of one frame (image statistics) and of one endpoint answer (detections), as ``drift.Sample`` takes
them. The same functions serve the baseline (dataset frames, predictions or evaluation.json) and the monitor
(captured requests and responses), so both sides are measured identically."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

WORK_MAX_SIDE = 320  # frames are measured at most this size: sharpness depends on the resolution
SATURATION_MIN = 40  # of 255: below it a pixel's hue is noise (grey smoke, black vignette, specular white)
MAX_PIXELS = 40_000_000  # the inference container's limit: larger frames are not something the endpoint answered


class UndecodableError(ValueError):
    """One image or answer cannot be measured; the message is the reason counted in the report."""


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG/... bytes -> RGB uint8 HxWx3."""
    if not data:
        raise UndecodableError("input: empty image")
    array = np.frombuffer(data, np.uint8)
    try:
        bgr = cv2.imdecode(array, cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None or bgr.ndim != 3 or min(bgr.shape[:2]) < 1:
        raise UndecodableError("input: not a decodable image")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise UndecodableError("input: image over the pixel limit")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_features(rgb: np.ndarray) -> dict[str, Any]:
    """Brightness, contrast, sharpness, saturation, channel means (0..1 but sharpness) and the hue histogram."""
    h, w = rgb.shape[:2]
    scale = WORK_MAX_SIDE / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H in 0..179
    means = rgb.reshape(-1, 3).mean(axis=0) / 255.0
    coloured = hsv[..., 1] >= SATURATION_MIN
    hue = None  # a frame without coloured pixels (black, white) says nothing about hue
    if coloured.any():
        counts = np.bincount(hsv[..., 0][coloured] // 10, minlength=18)[:18].astype(float)
        hue = counts / counts.sum()
    return {
        "brightness": float(gray.mean()) / 255.0,
        "contrast": float(gray.std()) / 255.0,
        "sharpness": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
        "saturation": float(hsv[..., 1].mean()) / 255.0,
        "red": float(means[0]), "green": float(means[1]), "blue": float(means[2]),
        "hue": hue,
    }


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise UndecodableError(f"output: {what} is not a number")
    return float(value)


def answer_features(answer: Any) -> dict[str, Any]:
    """One frame's answer ``{"width", "height", "detections": [{"label", "score", "box": [x1, y1, x2, y2]}]}``."""
    if not isinstance(answer, dict):
        raise UndecodableError("output: answer is not a JSON object")
    if "error" in answer and "detections" not in answer:
        raise UndecodableError("output: error response")
    detections = answer.get("detections")
    if not isinstance(detections, list):
        raise UndecodableError("output: no 'detections' list")
    width, height = answer.get("width"), answer.get("height")
    area = (_number(width, "width") * _number(height, "height")) if width is not None and height is not None else 0
    scores, areas, labels = [], [], []
    for det in detections:
        if not isinstance(det, dict):
            raise UndecodableError("output: a detection is not an object")
        scores.append(_number(det.get("score"), "score"))
        labels.append(str(det.get("label", det.get("category_id", "?"))))
        box = det.get("box")
        if area > 0 and isinstance(box, list) and len(box) == 4:
            x1, y1, x2, y2 = (_number(v, "box") for v in box)
            areas.append(max(0.0, x2 - x1) * max(0.0, y2 - y1) / area)
    return {"score": scores, "detections_per_frame": len(detections), "box_area": areas, "class": labels}


def evaluation_answer(image: dict[str, Any], score_threshold: float, size: tuple[int, int] | None) -> dict[str, Any]:
    """An ``evaluation.json`` image record as the endpoint would answer it: detections scoring >= the model's
    threshold (the endpoint's default), best first, at most 100, COCO ``bbox`` [x, y, w, h] -> ``box``."""
    found = [d for d in image.get("detections", []) if float(d["score"]) >= score_threshold]
    found = sorted(found, key=lambda d: -float(d["score"]))[:100]
    answer: dict[str, Any] = {"detections": [
        {"label": d["category"], "score": float(d["score"]),
         "box": [d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]}
        for d in found]}
    if size:
        answer["width"], answer["height"] = size
    return answer
