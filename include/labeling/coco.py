"""Labeled frames -> a COCO detection file (images, annotations, categories), the format pycocotools reads."""

from __future__ import annotations

from typing import Any

from include.labeling.manifest import LabeledFrame


def frame_file(source_ref: str) -> str:
    """The image's path relative to the frames bucket: ``frames/<video_id>/<index>.jpg``."""
    return source_ref.split("/", 3)[3]


def to_coco(frames: list[LabeledFrame], classes: list[str] | tuple[str, ...], description: str) -> dict[str, Any]:
    category_ids = {name: i + 1 for i, name in enumerate(classes)}  # COCO ids start at 1 (0 is background)
    images, annotations = [], []
    for image_id, frame in enumerate(sorted(frames, key=lambda f: f.source_ref), start=1):
        images.append({"id": image_id, "file_name": frame_file(frame.source_ref), "width": frame.width,
                       "height": frame.height, "video_id": frame.video_id})
        for box in frame.boxes:
            if box.label not in category_ids:
                raise ValueError(f"{frame.source_ref}: label {box.label!r} is not one of {list(classes)}")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_ids[box.label],
                                "bbox": [round(box.x, 2), round(box.y, 2), round(box.w, 2), round(box.h, 2)],
                                "area": round(box.w * box.h, 2), "iscrowd": 0,
                                "score": round(box.confidence, 4)})
    return {"info": {"description": description, "version": "1.0"}, "licenses": [], "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": name, "supercategory": "surgical"} for name, i in category_ids.items()]}
