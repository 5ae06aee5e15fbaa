"""Baselining mode: ``statistics.json`` + ``constraints.json`` from a dataset version's frames (input features)
and the model's answers on frames of the same dataset (prediction features).

    python entrypoint.py baseline --frames DIR --dataset DIR --output DIR
        [--predictions FILE | --evaluation FILE] [--splits train] [--bins 10] [--psi-threshold 0.2]
        [--min-sample-size 100] [--max-undecodable-fraction 0.1] [--max-frames 20000]

Each option also reads an environment variable (``BASELINE_FRAMES``, ``BASELINE_DATASET``, ``BASELINE_OUTPUT``,
``BASELINE_PREDICTIONS``, ``BASELINE_EVALUATION``, ``BASELINE_SPLITS``, ``BASELINE_BINS``, ...), the option winning.

Input features: the images of ``coco_<split>.json`` (``file_name`` ``frames/<video_id>/<i>.jpg``) for each split,
found as ``<frames>/<file_name>`` or ``<frames>/<file_name without frames/>``.
Prediction features, first found: ``--predictions`` (JSON lines, one endpoint answer per frame; capture lines are
read for their ``endpointOutput``), else ``--evaluation`` (the trainer's ``evaluation.json``: its ``images`` (the
test split) with the detections scoring >= its ``score_threshold``, the endpoint's default), else none (the monitor
then reports prediction statistics without comparing them).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, NoReturn

import capture
import contract
import drift
import features


class BaselineInputError(Exception):
    """The inputs cannot give a baseline (the job fails with this reason)."""


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(message)


def parse_args(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    def default(name: str, fallback: Any = None) -> Any:
        return env.get(f"BASELINE_{name.upper()}") or fallback

    parser = _Parser(prog="drift_monitor baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=default("frames"), help="frames channel folder")
    parser.add_argument("--dataset", type=Path, default=default("dataset"), help="dataset version folder")
    parser.add_argument("--output", type=Path, default=default("output"), help="folder for the two documents")
    parser.add_argument("--predictions", type=Path, default=default("predictions"))
    parser.add_argument("--evaluation", type=Path, default=default("evaluation"))
    parser.add_argument("--splits", default=default("splits", "train"), help="comma-separated (default train)")
    parser.add_argument("--bins", type=int, default=int(default("bins", drift.DEFAULT_BINS)))
    parser.add_argument("--psi-threshold", type=float,
                        default=float(default("psi_threshold", drift.DEFAULT_PSI_THRESHOLD)))
    parser.add_argument("--min-sample-size", type=int,
                        default=int(default("min_sample_size", drift.DEFAULT_MIN_SAMPLE_SIZE)))
    parser.add_argument("--max-undecodable-fraction", type=float,
                        default=float(default("max_undecodable_fraction", drift.DEFAULT_MAX_UNDECODABLE_FRACTION)))
    parser.add_argument("--max-frames", type=int, default=int(default("max_frames", 20000)),
                        help="evenly spaced subsample of the frames above this many")
    args = parser.parse_args(argv)
    for name in ("frames", "dataset", "output"):
        if getattr(args, name) is None:
            raise _ArgumentError(f"--{name} (or BASELINE_{name.upper()}) is required")
    if args.bins < 2 or args.psi_threshold <= 0 or args.min_sample_size < 1 or args.max_frames < 1:
        raise _ArgumentError("need --bins >= 2, --psi-threshold > 0, --min-sample-size >= 1, --max-frames >= 1")
    return args


def dataset_images(dataset: Path, splits: list[str]) -> list[dict[str, Any]]:
    images = []
    for split in splits:
        path = dataset / f"coco_{split}.json"
        try:
            images += contract.read_json(path, f"coco_{split}.json")["images"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BaselineInputError(f"dataset split {split}: {exc}") from None
    return images


def frame_path(frames: Path, file_name: str) -> Path | None:
    name = Path(file_name)
    candidates = [frames / name]
    if name.parts and name.parts[0] == "frames":
        candidates.append(frames.joinpath(*name.parts[1:]))
    return next((p for p in candidates if p.is_file()), None)


def input_sample(args: argparse.Namespace, sample: drift.Sample) -> dict[str, Any]:
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    images = dataset_images(args.dataset, splits)
    if len(images) > args.max_frames:
        step = len(images) / args.max_frames
        images = [images[int(i * step)] for i in range(args.max_frames)]
    used, missing, undecodable = 0, 0, 0
    for k, image in enumerate(images, 1):
        path = frame_path(args.frames, str(image.get("file_name", "")))
        if path is None:
            missing += 1
            continue
        try:
            sample.add(features.frame_features(features.decode_image(path.read_bytes())))
            used += 1
        except features.UndecodableError:
            undecodable += 1
        if k % 1000 == 0:
            print(f"measured {used} of {k} frames", flush=True)
    print(f"input features: {used} frames of splits {','.join(splits)} ({missing} missing, {undecodable} "
          f"undecodable)")
    if used == 0:
        raise BaselineInputError(f"no frame of splits {','.join(splits)} of {args.dataset.name} was found under the "
                                 f"frames folder ({len(images)} listed, {missing} missing)")
    return {"splits": splits, "frames": used, "missing_frames": missing, "undecodable_frames": undecodable}


def _sizes(dataset: Path) -> dict[str, tuple[int, int]]:
    sizes = {}
    for path in sorted(dataset.glob("coco_*.json")):
        try:
            for image in contract.read_json(path, path.name)["images"]:
                sizes[str(image["file_name"])] = (int(image["width"]), int(image["height"]))
        except (ValueError, KeyError, TypeError):
            continue
    return sizes


def prediction_sample(args: argparse.Namespace, sample: drift.Sample) -> dict[str, Any]:
    answers, skipped = [], 0
    if args.predictions:
        source = {"prediction_source": "predictions", "predictions_file": args.predictions.name}
        try:
            lines = args.predictions.read_text().splitlines()
        except OSError as exc:
            raise BaselineInputError(f"predictions file {args.predictions.name}: {exc.strerror}") from None
        for line in filter(str.strip, lines):
            try:
                document = json.loads(line)
                if isinstance(document, dict) and "captureData" in document:
                    answers += capture.response_answers(document["captureData"].get("endpointOutput"))
                elif isinstance(document, dict) and isinstance(document.get("predictions"), list):
                    answers += document["predictions"]
                else:
                    answers.append(document)
            except (ValueError, features.UndecodableError):
                skipped += 1
    elif args.evaluation:
        source = {"prediction_source": "evaluation", "evaluation_file": args.evaluation.name}
        try:
            evaluation = contract.read_json(args.evaluation, "evaluation")
            threshold = float(evaluation.get("score_threshold") or 0.0)
            sizes = _sizes(args.dataset)
            answers = [features.evaluation_answer(image, threshold, sizes.get(str(image.get("file_name"))))
                       for image in evaluation["images"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BaselineInputError(f"evaluation file {args.evaluation.name}: {type(exc).__name__}: {exc}") from None
        source["score_threshold"] = threshold
    else:
        print("prediction features: no --predictions or --evaluation: the baseline has input features only")
        return {"prediction_source": None}
    used = 0
    for answer in answers:
        try:
            sample.add(features.answer_features(answer))
            used += 1
        except features.UndecodableError:
            skipped += 1
    print(f"prediction features: {used} answers from {source['prediction_source']} ({skipped} skipped)")
    if used == 0:
        raise BaselineInputError(f"no usable answer in the {source['prediction_source']} file")
    return {**source, "answers": used, "skipped_answers": skipped}


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Writes the documents; returns a one-line summary. Raises _ArgumentError / BaselineInputError."""
    args = parse_args(argv, dict(os.environ if env is None else env))
    sample = drift.Sample()
    sources = {"dataset_version": args.dataset.name, **input_sample(args, sample),
               **prediction_sample(args, sample)}
    statistics = drift.baseline_statistics(sample, args.bins, item_count=sources["frames"], sources=sources)
    constraints = drift.baseline_constraints(statistics, args.psi_threshold, args.min_sample_size,
                                             args.max_undecodable_fraction)
    contract.write_json(args.output / "statistics.json", statistics)
    contract.write_json(args.output / "constraints.json", constraints)
    for entry in statistics["features"]:
        hist = entry["histogram"]
        print(f"  {entry['group']:<10} {entry['name']:<21} {len(hist['counts'])} bins, "
              f"n={entry.get('numerical_statistics', entry.get('string_statistics'))['common']['num_present']}")
    return (f"baseline of dataset {args.dataset.name}: {sources['frames']} frames, "
            f"{sources.get('answers', 0)} answers, {len(statistics['features'])} features, {args.bins} bins, "
            f"PSI threshold {args.psi_threshold:g}")
