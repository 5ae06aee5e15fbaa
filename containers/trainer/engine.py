"""One training epoch and one evaluation pass (the torchvision detection references' ``engine.py``, trimmed)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import coco_eval
import torch
from data import Category, DetectionDataset, Sample, collate


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; ``str(exc)`` is the job's failure reason."""

    def __init__(self, epoch: int, step: int, lr: float, losses: dict[str, float]) -> None:
        self.epoch, self.step, self.lr, self.losses = epoch, step, lr, losses
        super().__init__(f"NaN loss at epoch {epoch} step {step}: lower the learning rate (lr={lr:g})")


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: torch.utils.data.DataLoader,
                    device: torch.device, epoch: int, lr_at: Callable[[int], float], first_step: int, lr: float,
                    clip_norm: float = 10.0, log: Callable[[str], None] = print) -> tuple[float, int]:
    """Returns (mean loss, global step after the epoch). ``lr_at(step)`` gives the learning rate of a global step
    (warm-up, then the schedule); ``lr`` is the configured rate, named in a NaN failure."""
    model.train()
    total, count, step = 0.0, 0, first_step
    last_log = time.monotonic()
    for batch, (images, targets) in enumerate(loader, start=1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(epoch, batch, lr, {k: float(v.detach()) for k, v in loss_dict.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        total += value * len(images)
        count += len(images)
        step += 1
        if time.monotonic() - last_log >= 30:
            last_log = time.monotonic()
            parts = " ".join(f"{k}={float(v.detach()):.4f}" for k, v in loss_dict.items())
            log(f"epoch {epoch} step {batch}/{len(loader)}: loss={value:.4f} {parts}")
    return (total / count if count else float("nan")), step


@torch.inference_mode()
def predict(model: torch.nn.Module, samples: list[Sample], device: torch.device, cats: list[Category],
            batch_size: int = 8) -> list[dict[str, Any]]:
    """COCO detections (original frame pixels, x y w h) of every sample."""
    model.eval()
    category_of = {c.label: c.id for c in cats}
    detections = []
    loader = torch.utils.data.DataLoader(DetectionDataset(samples), batch_size=batch_size, shuffle=False,
                                         collate_fn=collate)
    offset = 0
    for images, _targets in loader:
        outputs = model([image.to(device) for image in images])
        for output, sample in zip(outputs, samples[offset:offset + len(images)], strict=True):
            sx, sy = sample.scale
            boxes = output["boxes"].cpu().double()
            for box, label, score in zip(boxes.tolist(), output["labels"].tolist(), output["scores"].tolist(),
                                         strict=True):
                if label not in category_of:
                    continue
                x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
                detections.append({"image_id": sample.image_id, "category_id": category_of[label],
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
        offset += len(images)
    return detections


def evaluate(model: torch.nn.Module, samples: list[Sample], gt: dict[str, Any], device: torch.device,
             cats: list[Category], score_threshold: float = 0.5,
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(COCO metrics of the split, the detections)."""
    detections = predict(model, samples, device, cats)
    return coco_eval.evaluate_coco(gt, detections, score_threshold), detections
