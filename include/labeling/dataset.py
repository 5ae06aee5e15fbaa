"""Immutable, content-addressed dataset versions: entries, train/val/test split by video, card, publish once.

- The version id is the hash of the sorted entries and the classes: the same content always has the same id, and
  one id can only ever name one content.
- Split by video (no video in two splits), stable when videos arrive: a video keeps the split it had in the parent
  version; a new video takes the split its id hashes to, except that a split still empty (train first) takes the next
  new video.
- Published with conditional writes (``If-None-Match: *``): a second publish of the same content is a no-op.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from include.labeling.coco import to_coco
from include.labeling.manifest import LabeledFrame

SPLITS = ("train", "val", "test")
CARD_SCHEMA = "surgical-mlops/dataset-card/v1"


def split_of(video_id: str) -> str:
    bucket = int(hashlib.sha256(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if bucket < 0.7 else "val" if bucket < 0.85 else "test"


def assign_splits(video_ids: list[str], parent: dict[str, str]) -> dict[str, str]:
    splits = {v: parent[v] for v in video_ids if v in parent}
    new = sorted(v for v in video_ids if v not in parent)
    for video in new:
        empty = [s for s in SPLITS if s not in splits.values()]
        # Every split gets a video as early as possible, training first; after that the hash decides.
        splits[video] = empty[0] if empty else split_of(video)
    return splits


@dataclass
class DatasetVersion:
    frames: list[LabeledFrame]
    classes: tuple[str, ...]
    splits: dict[str, str]  # video_id -> split
    parent: str | None = None
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.to_dict().items() if k != "job_name"}
                for f in sorted(self.frames, key=lambda f: f.source_ref)]

    @property
    def version(self) -> str:
        content = json.dumps({"classes": self.classes, "entries": self.entries, "splits": self.splits},
                             sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def coco(self, split: str) -> dict[str, Any]:
        frames = [f for f in self.frames if self.splits[f.video_id] == split]
        return to_coco(frames, self.classes, f"surgical-mlops dataset {self.version} ({split})")

    def card(self) -> dict[str, Any]:
        per_split: dict[str, Any] = {}
        for split in SPLITS:
            frames = [f for f in self.frames if self.splits[f.video_id] == split]
            per_split[split] = {
                "videos": sorted({f.video_id for f in frames}), "frames": len(frames),
                "boxes": dict(sorted(Counter(b.label for f in frames for b in f.boxes).items())),
            }
        return {"schema": CARD_SCHEMA, "version": self.version, "parent": self.parent, "classes": list(self.classes),
                "frames": len(self.frames), "splits": per_split, "label_sources": self.sources}


def merge(parent_frames: list[LabeledFrame], new_frames: list[LabeledFrame]) -> list[LabeledFrame]:
    """The parent's frames with the new labels on top (a relabeled frame replaces its old labels)."""
    by_ref = {f.source_ref: f for f in parent_frames}
    by_ref.update({f.source_ref: f for f in new_frames})
    return list(by_ref.values())


def _put_once(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> bool:
    """Write only if absent; False when the object exists already (then its content must be the same)."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            raise
    existing = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if existing != body:
        raise RuntimeError(f"s3://{bucket}/{key} exists with other content: a dataset version is immutable")
    return False


def publish(s3: Any, bucket: str, dataset: DatasetVersion, prefix: str = "datasets") -> dict[str, Any]:
    """Write the version's files once; returns {"version", "created", "uri"}. The card is written last."""
    base = f"{prefix}/{dataset.version}"
    files = [("manifest.jsonl", "".join(json.dumps(e, sort_keys=True) + "\n" for e in dataset.entries).encode(),
              "application/jsonl")]
    files += [(f"coco_{s}.json", json.dumps(dataset.coco(s), sort_keys=True).encode(), "application/json")
              for s in SPLITS]
    files += [("card.json", json.dumps(dataset.card(), indent=2, sort_keys=True).encode(), "application/json")]
    created = [_put_once(s3, bucket, f"{base}/{name}", body, kind) for name, body, kind in files]
    s3.put_object(Bucket=bucket, Key=f"{prefix}/latest.json", ContentType="application/json",
                  Body=json.dumps({"version": dataset.version}).encode())
    return {"version": dataset.version, "created": all(created), "uri": f"s3://{bucket}/{base}/"}


def load_latest(s3: Any, bucket: str, prefix: str = "datasets") -> tuple[str | None, list[LabeledFrame],
                                                                          dict[str, str]]:
    """The latest published version: (id, frames, video splits), or (None, [], {}) before the first one."""
    try:
        latest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/latest.json")["Body"].read())["version"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None, [], {}
        raise
    lines = s3.get_object(Bucket=bucket, Key=f"{prefix}/{latest}/manifest.jsonl")["Body"].read().decode()
    frames = [LabeledFrame.from_dict(json.loads(line)) for line in lines.splitlines() if line.strip()]
    card = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{latest}/card.json")["Body"].read())
    splits = {video: split for split, info in card["splits"].items() for video in info["videos"]}
    return latest, frames, splits
