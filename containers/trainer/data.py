"""COCO detection data for the trainer: the dataset version's COCO files, the frames channel, transforms.

A split (``coco_<split>.json`` of a dataset version) names its images by ``file_name`` =
``frames/<video_id>/<index>.jpg``, relative to the frames bucket. The frames channel is that bucket's ``frames/``
prefix downloaded, so an image lies at ``<channel>/<video_id>/<index>.jpg``; a channel holding the whole bucket
(``<channel>/frames/<video_id>/...``) works too.

Images are decoded once and kept in memory already resized to the model's input size (longer side ``image_size``)
with the very resize the model applies at inference (``GeneralizedRCNNTransform``: bilinear, no antialiasing), so
training, evaluation and the exported model see the same pixels. Boxes are kept in the resized image's pixels;
``scale`` maps them back to the original frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection.transform import _resize_image_and_masks


class DataError(Exception):
    """The data cannot be used; ``str(exc)`` is the job's failure reason."""


@dataclass(frozen=True)
class Category:
    id: int  # the COCO category id
    name: str
    label: int  # the model's label (1..K; 0 is the background)


def categories(coco: dict[str, Any]) -> list[Category]:
    """The split's categories in COCO id order, labelled 1..K for the model."""
    cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
    return [Category(int(c["id"]), str(c["name"]), i + 1) for i, c in enumerate(cats)]


def load_coco(dataset_dir: Path, split: str) -> dict[str, Any]:
    path = dataset_dir / f"coco_{split}.json"
    if not path.is_file():
        raise DataError(f"dataset channel has no coco_{split}.json (expected the 5 files of a dataset version)")
    try:
        coco = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"coco_{split}.json is not valid JSON: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"coco_{split}.json has no '{key}' list")
    return coco


def frame_path(frames_dir: Path, file_name: str) -> Path:
    """``frames/<video_id>/<index>.jpg`` -> the file in the channel (with or without the ``frames/`` level)."""
    relative = Path(file_name)
    candidates = [frames_dir / relative]
    if relative.parts and relative.parts[0] == "frames":
        candidates.insert(0, frames_dir / Path(*relative.parts[1:]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(f"missing frame: {file_name} is not in the frames channel")


def target_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(height, width) after resizing the longer side to ``image_size`` (what ``_resize_image_and_masks`` gives)."""
    scale = min(image_size / min(height, width), image_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


def resize_like_model(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """float CHW in [0, 1] -> resized exactly as the model's transform does with min_size = max_size = image_size."""
    resized, _ = _resize_image_and_masks(image, float(image_size), float(image_size), None, None)
    return resized


@dataclass
class Sample:
    image_id: int
    file_name: str
    video_id: str
    width: int  # the original frame's size
    height: int
    image: torch.Tensor  # uint8 CHW, resized
    boxes: torch.Tensor  # float [N, 4] x1 y1 x2 y2 in resized pixels
    labels: torch.Tensor  # int64 [N], model labels

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): resized pixels -> original pixels."""
        return self.width / self.image.shape[2], self.height / self.image.shape[1]


def load_split(coco: dict[str, Any], frames_dir: Path, image_size: int, cats: list[Category]) -> list[Sample]:
    """Every image of the split, decoded and resized, with its boxes (degenerate boxes dropped)."""
    label_of = {c.id: c.label for c in cats}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    samples = []
    for info in sorted(coco["images"], key=lambda i: i["id"]):
        path = frame_path(frames_dir, info["file_name"])
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise DataError(f"unreadable frame: {info['file_name']}: {exc}") from exc
        height, width = array.shape[:2]
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)
        resized = resize_like_model(tensor, image_size)
        sy, sx = resized.shape[1] / height, resized.shape[2] / width
        boxes, labels = [], []
        for ann in by_image.get(int(info["id"]), []):
            if ann.get("iscrowd", 0) or int(ann["category_id"]) not in label_of:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = max(0.0, x) * sx, max(0.0, y) * sy
            x2, y2 = min(float(width), x + w) * sx, min(float(height), y + h) * sy
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                boxes.append([x1, y1, x2, y2])
                labels.append(label_of[int(ann["category_id"])])
        samples.append(Sample(
            int(info["id"]), info["file_name"], str(info.get("video_id") or Path(info["file_name"]).parent.name),
            width, height, resized.mul(255).round_().to(torch.uint8),
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.int64)))
    return samples


# -- transforms (training only) ------------------------------------------------------------------------------------
class TrainTransform:
    """Random flips (surgical views have no up or left), a photometric jitter and a random zoom/crop.

    Draws from the generator it is given, so an epoch's augmentation depends only on the seed and the epoch.
    """

    def __init__(self, augment: str = "full") -> None:
        if augment not in ("none", "flip", "full"):
            raise ValueError(f"augment must be none, flip or full, got {augment!r}")
        self.augment = augment

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = image.float().div(255)
        boxes = boxes.clone()
        if self.augment == "none":
            return image, boxes, labels
        _, h, w = image.shape
        if _rand(g) < 0.5:
            image = image.flip(-1)
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        if _rand(g) < 0.5:
            image = image.flip(-2)
            boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
        if self.augment == "flip":
            return image, boxes, labels
        # photometric: brightness, contrast, saturation
        brightness = 1 + (_rand(g) - 0.5) * 0.5
        contrast = 1 + (_rand(g) - 0.5) * 0.5
        saturation = 1 + (_rand(g) - 0.5) * 0.6
        image = image * brightness
        mean = image.mean()
        image = (image - mean) * contrast + mean
        grey = image.mean(dim=0, keepdim=True)
        image = ((image - grey) * saturation + grey).clamp_(0, 1)
        # zoom: crop a window of 70-100 % of each side (the model resizes it back up)
        if _rand(g) < 0.5:
            image, boxes, labels = _random_crop(image, boxes, labels, g)
        return image, boxes, labels


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _random_crop(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, h, w = image.shape
    cw, ch = int(w * (0.7 + 0.3 * _rand(g))), int(h * (0.7 + 0.3 * _rand(g)))
    x0, y0 = int((w - cw) * _rand(g)), int((h - ch) * _rand(g))
    clipped = boxes.clone()
    clipped[:, [0, 2]] = (clipped[:, [0, 2]] - x0).clamp(0, cw)
    clipped[:, [1, 3]] = (clipped[:, [1, 3]] - y0).clamp(0, ch)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = kept_area >= 0.6 * area  # a box mostly cut off would teach the model to box fragments
    cut = (kept_area > 0) & ~keep
    if bool(cut.any()):  # a visible fragment without a box would teach it to ignore the object: no crop
        return image, boxes, labels
    return image[:, y0:y0 + ch, x0:x0 + cw], clipped[keep], labels[keep]


class DetectionDataset(torch.utils.data.Dataset):
    """Samples -> (image float CHW, target dict); training samples are augmented with a per-epoch generator."""

    def __init__(self, samples: list[Sample], transform: TrainTransform | None = None, seed: int = 0) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.samples[index]
        if self.transform is None:
            image, boxes, labels = s.image.float().div(255), s.boxes, s.labels
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
            image, boxes, labels = self.transform(s.image, s.boxes, s.labels, g)
        return image, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(s.image_id)}


def collate(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list, list]:
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
