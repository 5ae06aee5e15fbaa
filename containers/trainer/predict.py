"""Batch predictions: the champion's boxes on new frames, to pre-annotate them in a labeling tool.

Run as a SageMaker Processing job of the trainer image::

    python /opt/program/entrypoint.py predict [--model DIR] [--frames DIR] [--output DIR] [--min-score 0.3]
                                              [--max-boxes 20]

Defaults are the Processing job's paths: ``/opt/ml/processing/input/{model,frames}`` and
``/opt/ml/processing/output``. ``--model`` is a folder holding ``model.tar.gz`` or the unpacked files (as for
``evaluate``). Every ``*.jpg`` under ``--frames`` (recursively, in path order) gets one line of
``predictions.jsonl``::

    {"frame": "<path relative to --frames>", "width": W, "height": H,
     "boxes": [{"label": "<class>", "score": 0.87, "left": 12, "top": 40, "width": 33, "height": 103}]}

with boxes in the frame's pixels (clipped to it), scoring at least ``--min-score``, at most ``--max-boxes`` of them,
highest score first. ``predictions_summary.json`` says which model ran, on how many frames, in how long. Runs on
CUDA when there is one, else on the CPU.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 8
LOG_EVERY = 50


def pixel_boxes(output: dict[str, Any], names: dict[int, str], width: int, height: int, min_score: float,
                max_boxes: int) -> list[dict[str, Any]]:
    """One image's detections -> the labeling tool's boxes: clipped, rounded to pixels, best first."""
    boxes = []
    for (x1, y1, x2, y2), label, score in sorted(zip(output["boxes"].tolist(), output["labels"].tolist(),
                                                     output["scores"].tolist(), strict=True), key=lambda d: -d[2]):
        if score < min_score or label not in names:
            continue
        left, top = round(min(max(x1, 0.0), width)), round(min(max(y1, 0.0), height))
        right, bottom = round(min(max(x2, 0.0), width)), round(min(max(y2, 0.0), height))
        if right > left and bottom > top:
            boxes.append({"label": names[label], "score": round(score, 4), "left": left, "top": top,
                          "width": right - left, "height": bottom - top})
    return boxes[:max_boxes]


def run(argv: list[str]) -> dict[str, Any]:
    import torch
    from evaluate import PROCESSING, load_model, model_info, parser
    from export import read_image
    from train import TrainingFailure, cpu_count, log, pick_device

    options = parser("predict", PROCESSING / "output")
    options.add_argument("--min-score", type=float, default=0.3)
    options.add_argument("--max-boxes", type=int, default=20)
    args = options.parse_args(argv)
    started = time.monotonic()
    frames = sorted(p.relative_to(args.frames).as_posix() for p in args.frames.rglob("*.jpg") if p.is_file())
    if not frames:
        raise TrainingFailure(f"no frames: {args.frames} holds no *.jpg file (nothing to predict)")
    device = pick_device("auto")
    torch.set_num_threads(cpu_count())
    args.output.mkdir(parents=True, exist_ok=True)
    total = 0
    with tempfile.TemporaryDirectory() as scratch:
        config, model = load_model(args.model, Path(scratch), device)
    names = {int(c["label"]): str(c["name"]) for c in config["classes"]}
    log(f"predicting {len(frames)} frames with {config['model']} on {device} (min score {args.min_score}, "
        f"at most {args.max_boxes} boxes per frame)")
    with (args.output / "predictions.jsonl").open("w") as out, torch.inference_mode():
        for start in range(0, len(frames), BATCH):
            batch = frames[start:start + BATCH]
            images = []
            for frame in batch:
                try:
                    images.append(read_image(args.frames / frame))
                except OSError as exc:
                    raise TrainingFailure(f"unreadable frame: {frame}: {exc}") from exc
            outputs = model([image.to(device) for image in images])
            for frame, image, output in zip(batch, images, outputs, strict=True):
                height, width = image.shape[1:]
                boxes = pixel_boxes(output, names, width, height, args.min_score, args.max_boxes)
                total += len(boxes)
                out.write(json.dumps({"frame": frame, "width": width, "height": height, "boxes": boxes}) + "\n")
            done = start + len(batch)
            if done // LOG_EVERY > start // LOG_EVERY or done == len(frames):
                log(f"predicted {done}/{len(frames)} frames: {total} boxes, {time.monotonic() - started:.1f} s")
    summary = {"schema": "surgical-mlops/predictions/v1", "model": model_info(config),
               "classes": list(names.values()), "min_score": args.min_score, "max_boxes": args.max_boxes,
               "device": device.type, "frames": len(frames), "boxes": total,
               "seconds": round(time.monotonic() - started, 2)}
    (args.output / "predictions_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
