"""Labeled dataset versions for tests: synthetic frames laid out as the frame extractor writes them, labeled with
their true boxes, published as a dataset version (the 5 files of ``include.labeling.dataset``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2

from include.labeling import dataset as datasets
from include.labeling.manifest import Box, LabeledFrame
from include.synthetic import CLASSES, make_scene, render_frame

FRAMES_BUCKET = "surgical-frames-processed"


def make_dataset(root: Path, videos: int = 3, frames: int = 4, boxes: bool = True, width: int = 160,
                 height: int = 96, step: int = 3, seed: int = 100, prefix: str = "vid",
                 scenario: str = "normal") -> tuple[Path, Path]:
    """Returns (dataset version folder, frames channel folder with ``<video_id>/<index>.jpg``)."""
    frames_dir = root / "frames-channel"
    labeled = []
    for v in range(videos):
        video_id = f"{prefix}{v:0{20 - len(prefix)}d}"
        scene = make_scene(width, height, 5.0, seed=seed + v, scenario=scenario)
        (frames_dir / video_id).mkdir(parents=True)
        for i in range(frames):
            picture, truth = render_frame(scene, i * step)
            cv2.imwrite(str(frames_dir / video_id / f"{i:06d}.jpg"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            labeled.append(LabeledFrame(
                f"s3://{FRAMES_BUCKET}/frames/{video_id}/{i:06d}.jpg", width, height,
                tuple(Box(b.label, b.x, b.y, b.w, b.h, 1.0) for b in truth) if boxes else ()))
    splits = datasets.assign_splits(sorted({f.video_id for f in labeled}), {})
    version = datasets.DatasetVersion(labeled, CLASSES, splits)
    folder = root / "dataset" / version.version
    folder.mkdir(parents=True)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in version.entries))
    for split in datasets.SPLITS:
        (folder / f"coco_{split}.json").write_text(json.dumps(version.coco(split)))
    (folder / "card.json").write_text(json.dumps(version.card()))
    return folder, frames_dir


def upload_dataset(s3: Any, dataset: Path, frames: Path, annotations_bucket: str = "surgical-annotations") -> str:
    """Put the frames and the version's files where the pipeline keeps them (``latest.json`` untouched)."""
    for path in sorted(frames.rglob("*.jpg")):
        s3.put_object(Bucket=FRAMES_BUCKET, Key=f"frames/{path.relative_to(frames).as_posix()}",
                      Body=path.read_bytes())
    for path in sorted(dataset.iterdir()):
        s3.put_object(Bucket=annotations_bucket, Key=f"datasets/{dataset.name}/{path.name}", Body=path.read_bytes())
    return dataset.name
