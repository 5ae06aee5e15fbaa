"""The evaluation report: PNG plots and ``index.html`` in the model folder's ``report/``.

Plots (matplotlib, Agg): precision/recall per class at IoU 0.5, AP per class (@[.5:.95] and @0.5), the class
confusion matrix at IoU 0.5, four test frames with the labeled boxes (green, dashed) and the predicted ones above the
score threshold (coloured by class, with scores), and the training curves (loss, val mAP per epoch).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches
from PIL import Image

COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def pr_curves(evaluation: dict[str, Any], folder: Path) -> str:
    curves = evaluation["pr_curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.6), squeeze=False)
    for ax, (i, (name, curve)) in zip(axes[0], enumerate(curves.items()), strict=True):
        ap50 = evaluation["per_class"][name]["ap50"]
        if curve["precision"] is None:
            ax.text(0.5, 0.5, "no labeled box\nin the test split", ha="center", va="center")
        else:
            ax.plot(curve["recall"], curve["precision"], color=COLOURS[i % len(COLOURS)])
            ax.fill_between(curve["recall"], curve["precision"], alpha=0.15, color=COLOURS[i % len(COLOURS)])
        ax.set_title(f"{name}: AP@0.5 = {ap50:.3f}" if ap50 is not None else name)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    return _save(fig, folder / "pr_curves.png")


def ap_bars(evaluation: dict[str, Any], folder: Path) -> str:
    names = list(evaluation["per_class"])
    ap = [evaluation["per_class"][n]["ap"] or 0.0 for n in names]
    ap50 = [evaluation["per_class"][n]["ap50"] or 0.0 for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 3.6))
    ax.bar(x - 0.2, ap50, 0.4, label="AP@0.5", color="#2ca02c")
    ax.bar(x + 0.2, ap, 0.4, label="AP@[.5:.95]", color="#1f77b4")
    for xi, a50, a in zip(x, ap50, ap, strict=True):
        ax.text(xi - 0.2, a50 + 0.01, f"{a50:.2f}", ha="center", fontsize=8)
        ax.text(xi + 0.2, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
    absent = [n for n in names if evaluation["per_class"][n]["ap"] is None]
    ax.set_xticks(x, [f"{n}\n(no test box)" if n in absent else n for n in names])
    ax.set_ylim(0, 1.1)
    ax.set_title(f"test AP per class (mAP@0.5 {evaluation['map50']:.3f}, mAP {evaluation['map']:.3f})")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, folder / "ap_per_class.png")


def confusion(evaluation: dict[str, Any], folder: Path) -> str:
    cm = evaluation["confusion_matrix"]
    matrix = np.array(cm["matrix"])
    labels = cm["labels"]
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("labeled")
    ax.set_title(f"confusion at IoU {cm['iou']}, score >= {cm['score_threshold']:.2f}")
    return _save(fig, folder / "confusion_matrix.png")


def pick_frames(gt: dict[str, Any], count: int = 4) -> list[dict[str, Any]]:
    """``count`` test frames spread over the videos and over time (with boxes when there are any)."""
    with_boxes = {a["image_id"] for a in gt["annotations"]}
    images = sorted(gt["images"], key=lambda i: i["id"])
    pool = [i for i in images if i["id"] in with_boxes] or images
    by_video: dict[str, list[dict[str, Any]]] = {}
    for info in pool:
        by_video.setdefault(str(info.get("video_id") or info["file_name"].split("/")[-2]), []).append(info)
    chosen: list[dict[str, Any]] = []
    round_ = 0
    while len(chosen) < min(count, len(pool)):
        for frames in by_video.values():
            positions = np.linspace(0, len(frames) - 1, num=max(1, count)).round().astype(int)
            if round_ < len(positions) and frames[positions[round_]] not in chosen and len(chosen) < count:
                chosen.append(frames[positions[round_]])
        round_ += 1
        if round_ > count + len(pool):
            break
    return chosen


def frame_plots(gt: dict[str, Any], detections: list[dict[str, Any]], frames: dict[int, Path],
                config: dict[str, Any], threshold: float, folder: Path) -> list[str]:
    names = {c["category_id"]: c["name"] for c in config["classes"]}
    colour = {c["category_id"]: COLOURS[i % len(COLOURS)] for i, c in enumerate(config["classes"])}
    files = []
    for n, info in enumerate(pick_frames(gt), start=1):
        with Image.open(frames[info["id"]]) as img:
            picture = np.asarray(img.convert("RGB"))
        fig, ax = plt.subplots(figsize=(picture.shape[1] / 90, picture.shape[0] / 90 + 0.4))
        ax.imshow(picture)
        for ann in (a for a in gt["annotations"] if a["image_id"] == info["id"]):
            x, y, w, h = ann["bbox"]
            ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, edgecolor="#00ff00", linewidth=2, linestyle="--"))
            ax.text(x, y + h, f"label: {names.get(ann['category_id'], '?')}", color="#00ff00", fontsize=7,
                    va="top")
        for det in (d for d in detections if d["image_id"] == info["id"] and d["score"] >= threshold):
            x, y, w, h = det["bbox"]
            c = colour.get(det["category_id"], "red")
            ax.add_patch(patches.Rectangle((x, y), w, h, fill=False, edgecolor=c, linewidth=2))
            ax.text(x, y - 2, f"{names.get(det['category_id'], '?')} {det['score']:.2f}", color="white", fontsize=7,
                    bbox={"facecolor": c, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
        ax.set_title(f"{info['file_name']}: labeled (green, dashed) vs predicted", fontsize=8)
        ax.axis("off")
        files.append(_save(fig, folder / f"frame_{n}.png"))
    return files


def training_curves(history: list[dict[str, Any]], folder: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="#d62728", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    right = ax.twinx()
    right.plot(epochs, [h["val_map50"] for h in history], "s-", color="#2ca02c", label="val mAP@0.5")
    right.plot(epochs, [h["val_map"] for h in history], "^-", color="#1f77b4", label="val mAP")
    right.set_ylim(0, 1)
    right.set_ylabel("val mAP")
    fig.legend(loc="upper center", ncols=3, fontsize=8)
    return _save(fig, folder / "training.png")


def write_report(folder: Path, evaluation: dict[str, Any], gt: dict[str, Any], detections: list[dict[str, Any]],
                 frames: dict[int, Path], config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    threshold = evaluation["score_threshold"]
    figures = [("Precision / recall per class (IoU 0.5)", pr_curves(evaluation, folder)),
               ("AP per class", ap_bars(evaluation, folder)),
               ("Class confusion matrix (IoU 0.5)", confusion(evaluation, folder)),
               ("Training", training_curves(evaluation["history"], folder))]
    frame_files = frame_plots(gt, detections, frames, config, threshold, folder)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e['gt_boxes']}</td><td>{_fmt(e['ap50'])}</td><td>{_fmt(e['ap'])}</td>"
        f"<td>{_fmt(e['ap75'])}</td></tr>" for name, e in evaluation["per_class"].items())
    history = "".join(
        f"<tr><td>{h['epoch']}</td><td>{h['train_loss']:.4f}</td><td>{h['val_map50']:.4f}</td><td>{h['val_map']:.4f}"
        f"</td><td>{h['lr']:.6f}</td><td>{h['seconds']:.1f}</td></tr>" for h in evaluation["history"])
    sections = "".join(f'<h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">'
                       for title, name in figures)
    frames_html = "".join(f'<img src="{name}" alt="test frame {i}">' for i, name in enumerate(frame_files, 1))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation: {html.escape(config['model'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:100%;margin:6px 0;display:block}}
.frames img{{display:inline-block;max-width:49%}}</style></head><body>
<h1>Surgical detector evaluation on the held-out test split</h1>
<p>Model <b>{html.escape(config['model'])}</b> (export: {html.escape(config['export']['format'])}), input
{config['image_size']} px, dataset version <code>{html.escape(str(evaluation['dataset_version']))}</code>,
best epoch {evaluation['best_epoch']} of {evaluation['epochs_run']} on val (mAP@0.5 {evaluation['val_map50']:.4f}).
Test: {evaluation['test_images']} frames of {len(evaluation['test_videos'])} video(s), {evaluation['test_boxes']}
labeled boxes.</p>
<table><tr><th>metric</th><th>value</th></tr>
<tr><td>mAP@0.5</td><td>{evaluation['map50']:.4f}</td></tr><tr><td>mAP@[.5:.95]</td><td>{evaluation['map']:.4f}</td></tr>
<tr><td>mAP@0.75</td><td>{evaluation['map75']:.4f}</td></tr><tr><td>score threshold</td><td>{threshold:.4f}</td></tr>
</table>
<h2>Per class</h2><table><tr><th>class</th><th>test boxes</th><th>AP@0.5</th><th>AP@[.5:.95]</th><th>AP@0.75</th></tr>
{rows}</table>
{sections}
<h2>Test frames: labeled (green, dashed) vs predicted (score &gt;= {threshold:.2f})</h2>
<div class="frames">{frames_html}</div>
<h2>Epochs</h2><table><tr><th>epoch</th><th>train loss</th><th>val mAP@0.5</th><th>val mAP</th><th>lr</th><th>s</th>
</tr>{history}</table>
<h2>Hyperparameters</h2><pre>{html.escape(json.dumps(config['hyperparameters'], indent=1, sort_keys=True))}</pre>
</body></html>
"""
    (folder / "index.html").write_text(page)
    return folder / "index.html"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
