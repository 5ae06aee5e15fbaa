"""Evaluation job: score a trained model (a ``model.tar.gz``) on a dataset version's test split.

The promotion rule compares a candidate with the champion on the **same** test set. When the dataset changed since
the champion was trained, its own ``evaluation.json`` is for another test set, so the train_and_register DAG runs this
container as a SageMaker Processing job to re-score the champion on the candidate's test set::

    python /opt/program/entrypoint.py evaluate [--model DIR] [--dataset DIR] [--frames DIR] [--output DIR]

Defaults are the Processing job's paths: ``/opt/ml/processing/input/{model,dataset,frames}`` and
``/opt/ml/processing/evaluation``. ``--model`` is a folder holding ``model.tar.gz`` (a ProcessingInput of the
artifact) or the unpacked files. Classes are matched by name: a class the model never learned scores AP 0. The output
``evaluation.json`` has the trainer's schema (metrics, per-class AP, PR curves, per-image records), with
``evaluated_model`` saying which model it scored.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

PROCESSING = Path("/opt/ml/processing")


def _model_dir(path: Path, scratch: Path) -> Path:
    if (path / "model_config.json").is_file():
        return path
    archive = path if path.is_file() else path / "model.tar.gz"
    if not archive.is_file():
        from train import TrainingFailure

        raise TrainingFailure(f"no model: {path} holds neither model_config.json nor model.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(scratch, filter="data")
    return scratch


def load_model(path: Path, scratch: Path, device: Any) -> tuple[dict[str, Any], Any]:
    """(``model_config.json``, the detector with ``model.pt`` loaded, on ``device``, in eval mode) of a model folder
    or ``model.tar.gz`` (unpacked into ``scratch``); shared with ``predict.py``."""
    import torch
    from train import build_model

    model_dir = _model_dir(path, scratch)
    config = json.loads((model_dir / "model_config.json").read_text())
    hp = config.get("hyperparameters", {})
    model = build_model(config["model"], len(config["classes"]), int(config["image_size"]), config.get("model_kwargs"),
                        float(hp.get("anchor_min_ratio", 0.2)))
    model.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))
    return config, model.to(device).eval()


def model_info(config: dict[str, Any]) -> dict[str, Any]:
    """Which model a job scored or ran: its architecture and the dataset version it was trained on."""
    return {"trained_on": config.get("dataset_version"), "model": config["model"]}


def parser(command: str, output: Path) -> argparse.ArgumentParser:
    """The options every Processing command of the trainer takes (``--model``, ``--frames``, ``--output``)."""
    result = argparse.ArgumentParser(prog=f"entrypoint.py {command}")
    result.add_argument("--model", type=Path, default=PROCESSING / "input" / "model")
    result.add_argument("--frames", type=Path, default=PROCESSING / "input" / "frames")
    result.add_argument("--output", type=Path, default=output)
    return result


def run(argv: list[str]) -> dict[str, Any]:
    import engine
    import torch
    from data import Category, DataError, load_coco, load_split
    from train import TrainingFailure, _card, cpu_count, log

    options = parser("evaluate", PROCESSING / "evaluation")
    options.add_argument("--dataset", type=Path, default=PROCESSING / "input" / "dataset")
    args = options.parse_args(argv)
    started = time.monotonic()
    torch.set_num_threads(cpu_count())
    with tempfile.TemporaryDirectory() as scratch:
        config, model = load_model(args.model, Path(scratch), torch.device("cpu"))
        try:
            test = load_coco(args.dataset, "test")
        except DataError as exc:
            raise TrainingFailure(str(exc)) from exc
        if not test["images"]:
            raise TrainingFailure("empty dataset: coco_test.json has no images (nothing to evaluate the model on)")
        label_of = {c["name"]: c["label"] for c in config["classes"]}
        cats = [Category(int(c["id"]), str(c["name"]), int(label_of.get(c["name"], -1)))
                for c in sorted(test["categories"], key=lambda c: c["id"])]
        unknown = [c.name for c in cats if c.label < 0]
        if unknown:
            log(f"classes the model was not trained on (AP 0): {', '.join(unknown)}")
        try:
            samples = load_split(test, args.frames, int(config["image_size"]), cats)
        except DataError as exc:
            raise TrainingFailure(str(exc)) from exc
        known = [c for c in cats if c.label >= 0]
        metrics, _ = engine.evaluate(model, samples, test, torch.device("cpu"), known,
                                     score_threshold=float(config["score_threshold"]))
    card = _card(args.dataset)
    evaluation = {
        "schema": "surgical-mlops/evaluation/v1", "split": "test", "dataset_version": card.get("version"),
        "model": config["model"], "map": metrics["map"], "map50": metrics["map50"], "map75": metrics["map75"],
        "per_class": metrics["per_class"], "classes_evaluated": metrics["classes_evaluated"],
        "pr_curves": metrics["pr_curves"], "score_threshold": config["score_threshold"],
        "test_images": len(test["images"]),
        "test_boxes": sum(1 for a in test["annotations"] if not a.get("iscrowd", 0)),
        "test_videos": sorted({s.video_id for s in samples}),
        "evaluated_model": model_info(config),
        "images": metrics["images"],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
    log(f"test_map50={metrics['map50']:.4f} test_map={metrics['map']:.4f} on dataset {card.get('version')} "
        f"({len(test['images'])} images) in {time.monotonic() - started:.1f} s")
    return evaluation
