"""The training job: hyperparameters, channels, model, the loop with checkpoints, evaluation and the outputs.

Hyperparameters come from ``$SM_HPS`` (JSON, values decoded) or ``/opt/ml/input/config/hyperparameters.json``
(SageMaker writes every value as a string; each is decoded as JSON when it parses, else kept as a string); unknown
names fail the job. See :class:`Hyperparameters` for the names and defaults.

Each epoch prints one line for the MetricDefinitions, and the end one for the test split::

    epoch=3 train_loss=0.8123 val_map50=0.6412 val_map=0.4012 lr=0.010000 seconds=41.2
    test_map50=0.8312 test_map=0.5210
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import coco_eval
import engine
import export
import numpy as np
import report
import torch
import torchvision
from data import Category, DataError, DetectionDataset, TrainTransform, categories, collate, load_coco, load_split
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

OPT_ML = Path("/opt/ml")
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


class TrainingFailure(Exception):
    """The job fails; ``str(exc)`` is its failure reason."""


@dataclass
class Hyperparameters:
    model: str = "ssdlite320_mobilenet_v3_large"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.003  # AdamW; about 0.05-0.15 for SGD
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.0005
    momentum: float = 0.9  # SGD only
    warmup_steps: int = 20
    image_size: int = 320  # the longer side of the model's input, in pixels
    bn_momentum: float = 0.3  # BatchNorm running-statistics momentum (see set_bn_momentum)
    anchor_min_ratio: float = 0.2  # SSD models: the smallest default box, as a fraction of the image (see build_model)
    match_iou: float = 0.4  # SSD models: a default box at or above this IoU with a labeled box is trained as positive
    augment: str = "full"  # none | flip | full (flips, photometric jitter, zoom)
    seed: int = 0
    max_train_seconds: float = 0.0  # 0: no limit; else stop after the epoch that crosses it
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 0  # DataLoader worker processes (images are decoded once, before training)
    channels_last: int = 1  # 1: train in the channels-last (NHWC) memory format (faster convolutions); 0: NCHW
    score_threshold: float = -1.0  # for model_config.json and the per-frame counts; < 0: best F1 on val

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Hyperparameters:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise TrainingFailure(f"bad hyperparameters: unknown {', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            kind = type(getattr(cls(), name))
            try:
                if kind is int:
                    number = float(value)
                    if not number.is_integer():
                        raise ValueError(f"not an integer: {value!r}")
                    values[name] = int(number)
                elif kind is float:
                    values[name] = float(value)
                else:
                    values[name] = str(value)
            except (TypeError, ValueError) as exc:
                raise TrainingFailure(f"bad hyperparameters: {name}={value!r}: {exc}") from exc
        hp = cls(**values)
        hp.check()
        return hp

    def check(self) -> None:
        problems = []
        if self.model not in torchvision.models.list_models(module=torchvision.models.detection):
            problems.append(f"model {self.model!r} is not a torchvision detection model")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 32 or self.workers < 0:
            problems.append("epochs must be >= 1, batch_size >= 2 (BatchNorm), image_size >= 32, workers >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("adamw", "sgd"):
            problems.append(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.augment not in ("none", "flip", "full"):
            problems.append(f"augment must be none, flip or full, got {self.augment!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0.01 <= self.anchor_min_ratio < 0.95:
            problems.append(f"anchor_min_ratio must be in [0.01, 0.95), got {self.anchor_min_ratio}")
        if not 0.1 <= self.match_iou <= 0.9:
            problems.append(f"match_iou must be in [0.1, 0.9], got {self.match_iou}")
        if not 0 < self.bn_momentum <= 1:
            problems.append(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.channels_last not in (0, 1):
            problems.append(f"channels_last must be 0 or 1, got {self.channels_last}")
        if self.score_threshold >= 1:
            problems.append(f"score_threshold must be < 1, got {self.score_threshold}")
        if problems:
            raise TrainingFailure("bad hyperparameters: " + "; ".join(problems))


def decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def read_hyperparameters(environ: dict[str, str] | os._Environ) -> Hyperparameters:
    raw: dict[str, Any] = {}
    if environ.get("SM_HPS"):
        try:
            raw = json.loads(environ["SM_HPS"])
        except ValueError as exc:
            raise TrainingFailure(f"bad hyperparameters: SM_HPS is not JSON: {exc}") from exc
    else:
        config_dir = Path(environ.get("SM_INPUT_CONFIG_DIR") or OPT_ML / "input" / "config")
        path = config_dir / "hyperparameters.json"
        if path.is_file():
            try:
                raw = {k: decode(v) for k, v in json.loads(path.read_text()).items()}
            except ValueError as exc:
                raise TrainingFailure(f"bad hyperparameters: hyperparameters.json is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise TrainingFailure("bad hyperparameters: expected a JSON object")
    return Hyperparameters.parse(raw)


@dataclass
class Paths:
    dataset: Path
    frames: Path
    model: Path
    output: Path
    output_data: Path
    checkpoints: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ) -> Paths:
        data_dir = Path(environ.get("SM_INPUT_DATA_DIR") or OPT_ML / "input" / "data")
        channels = {}
        for name in ("dataset", "frames"):
            path = Path(environ.get(f"SM_CHANNEL_{name.upper()}") or data_dir / name)
            if not path.is_dir():
                raise TrainingFailure(f"missing channel: {name} (no folder {path}; give the training job an input "
                                      f"channel named '{name}')")
            channels[name] = path
        output = Path(environ.get("SM_OUTPUT_DIR") or OPT_ML / "output")
        return cls(channels["dataset"], channels["frames"], Path(environ.get("SM_MODEL_DIR") or OPT_ML / "model"),
                   output, Path(environ.get("SM_OUTPUT_DATA_DIR") or output / "data"),
                   Path(environ.get("SM_CHECKPOINT_DIR") or OPT_ML / "checkpoints"))


# -- model ---------------------------------------------------------------------------------------------------------
def model_kwargs(name: str, image_size: int) -> dict[str, Any]:
    """Keyword arguments for ``get_model``: the input size, and fewer region samples for the two-stage models
    (RoIAlign's backward pass is slow on CPU: 512 samples per image made training 6x slower than 64)."""
    if name.startswith("ssd"):
        return {}  # its builder passes extra keywords to the backbone too: build_model sets SSD's options
    kwargs: dict[str, Any] = {"min_size": image_size, "max_size": image_size}
    if name.startswith(("fasterrcnn", "maskrcnn", "keypointrcnn")):
        kwargs.update(box_batch_size_per_image=64, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=300)
    return kwargs


def build_model(name: str, num_classes: int, image_size: int, kwargs: dict[str, Any] | None = None,
                anchor_min_ratio: float = 0.2, match_iou: float = 0.5) -> torch.nn.Module:
    """A torchvision detector from scratch (no downloaded weights) for ``num_classes`` classes + background.

    SSD models: the input is the longer side ``image_size`` with the aspect kept (not a fixed 320x320 square), 100
    detections per image (what COCO evaluates), and default boxes from ``anchor_min_ratio`` (torchvision's 0.2) to
    0.95 of the image (same number per location: the head is unchanged). At 0.2 the smallest default box overlaps a
    thin scalpel (33x103 px in a 640x360 frame) with IoU < 0.5; 0.1 was tried and trained far worse (val mAP@0.5
    near 0 after 8 epochs on the benchmark data set), so the default stays 0.2.

    ``match_iou`` (training only): a default box at or above it with a labeled box is a positive (SSD's 0.5). Below
    0.5, a thin box (a scalpel seen edge-on, IoU < 0.5 with every default box) gets positives beyond its one best
    match (issue 6's figures: README).
    """
    kwargs = model_kwargs(name, image_size) if kwargs is None else kwargs
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                         **kwargs)
    if name.startswith("ssd"):
        model.transform.min_size = (image_size,)
        model.transform.max_size = image_size
        model.transform.fixed_size = None
        model.detections_per_img = 100
        ratios = model.anchor_generator.aspect_ratios
        model.anchor_generator = DefaultBoxGenerator(ratios, min_ratio=anchor_min_ratio, max_ratio=0.95)
        model.proposal_matcher = det_utils.SSDMatcher(match_iou)
    return model


def set_bn_momentum(model: torch.nn.Module, momentum: float) -> int:
    """BatchNorm layers follow their batch statistics faster. Trained from scratch for a few hundred steps, the
    weights change faster than SSDlite's running statistics (momentum 0.03) follow them, and evaluation (which uses
    the running statistics) saw a different network: val mAP@0.5 stayed near 0 for 9 epochs at 0.03 and reached 0.96
    by epoch 6 at 0.3, with the same training losses."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingFailure("bad hyperparameters: device=cuda but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_optimizer(hp: Hyperparameters, model: torch.nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
    return torch.optim.AdamW(groups, lr=hp.lr)


def lr_schedule(hp: Hyperparameters, steps_per_epoch: int):
    """Linear warm-up over ``warmup_steps``, then cosine decay to 1 % of ``lr`` at the end of ``epochs``."""
    total = max(1, hp.epochs * steps_per_epoch)
    warmup = min(hp.warmup_steps, total // 2)

    def lr_at(step: int) -> float:
        if step < warmup:
            return hp.lr * (0.001 + 0.999 * (step + 1) / warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return hp.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))

    return lr_at


# -- checkpoints ---------------------------------------------------------------------------------------------------
def _save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(folder: Path, identity: dict[str, Any], log) -> dict[str, Any] | None:
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated upload: start over rather than fail
        log(f"checkpoint {path.name} is unreadable ({type(exc).__name__}: {exc}): starting from scratch")
        return None
    if state.get("identity") != identity:
        log(f"checkpoint is for another run ({state.get('identity')}): starting from scratch")
        return None
    best_path = folder / BEST
    state["best_state"] = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.is_file() else None
    return state


# -- the job -------------------------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, flush=True)


def run(environ: dict[str, str] | os._Environ | None = None) -> dict[str, Any]:
    """Train, select on val, evaluate on test, write the outputs; raises TrainingFailure with the reason."""
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    hp = read_hyperparameters(environ)
    paths = Paths.from_env(environ)
    device = pick_device(hp.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_count())
    seed_everything(hp.seed)
    log(f"hyperparameters: {json.dumps(asdict(hp), sort_keys=True)}")
    log(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}")

    try:
        coco = {split: load_coco(paths.dataset, split) for split in ("train", "val", "test")}
        if not coco["train"]["images"]:
            raise TrainingFailure("empty dataset: coco_train.json has no images")
        if not coco["train"]["annotations"]:
            raise TrainingFailure(f"empty dataset: coco_train.json has no boxes ({len(coco['train']['images'])} "
                                  f"images)")
        if not coco["test"]["images"]:
            raise TrainingFailure("empty dataset: coco_test.json has no images (nothing to evaluate the model on)")
        cats = categories(coco["train"])
        if not cats:
            raise TrainingFailure("empty dataset: coco_train.json has no categories")
        card = _card(paths.dataset)
        loaded = time.monotonic()
        samples = {split: load_split(coco[split], paths.frames, hp.image_size, cats) for split in coco}
    except DataError as exc:
        raise TrainingFailure(str(exc)) from exc
    for split, items in samples.items():
        boxes = sum(len(s.labels) for s in items)
        log(f"{split}: {len(items)} images, {boxes} boxes, {len({s.video_id for s in items})} videos")
    if not any(len(s.labels) for s in samples["train"]):
        raise TrainingFailure("empty dataset: no usable box in coco_train.json")
    log(f"images decoded and resized to {hp.image_size} px in {time.monotonic() - loaded:.1f} s")

    kwargs = model_kwargs(hp.model, hp.image_size)
    # channels_last: MKL-DNN's (and cuDNN's) convolutions, the depthwise ones above all, run faster on NHWC weights;
    # a training step of the default SSDlite took 0.36 s instead of 0.55 s on 2 CPU cores (batch 16, 256 px).
    memory_format = torch.channels_last if hp.channels_last else torch.contiguous_format
    model = build_model(hp.model, len(cats), hp.image_size, kwargs, hp.anchor_min_ratio, hp.match_iou).to(
        device, memory_format=memory_format)
    set_bn_momentum(model, hp.bn_momentum)
    optimizer = make_optimizer(hp, model)
    train_set = DetectionDataset(samples["train"], TrainTransform(hp.augment), seed=hp.seed)
    generator = torch.Generator()
    if len(train_set) < 2:
        raise TrainingFailure("too few training images: coco_train.json has 1 usable image, need at least 2")
    # A last batch of one image would break the BatchNorm layers that see 1x1 feature maps: dropped then.
    loader = torch.utils.data.DataLoader(train_set, batch_size=hp.batch_size, shuffle=True,
                                         drop_last=len(train_set) % hp.batch_size == 1,
                                         num_workers=hp.workers, collate_fn=collate, generator=generator,
                                         persistent_workers=hp.workers > 0)
    lr_at = lr_schedule(hp, len(loader))
    identity = {"model": hp.model, "classes": [c.name for c in cats], "image_size": hp.image_size,
                "anchor_min_ratio": hp.anchor_min_ratio,
                "dataset_version": card.get("version"), "seed": hp.seed}
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(paths.checkpoints, identity, log)
    start_epoch, step, best, history = 1, 0, None, []
    best_state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, best, history = state["epoch"] + 1, state["step"], state["best"], state["history"]
        best_state = state["best_state"]
        log(f"resumed from epoch {state['epoch']} (best so far: epoch {best['epoch'] if best else '-'})")

    train_started = time.monotonic()
    trained_s = sum(h["seconds"] for h in history)
    stopped_early = False
    for epoch in range(start_epoch, hp.epochs + 1):
        epoch_started = time.monotonic()
        train_set.set_epoch(epoch)
        generator.manual_seed(hp.seed * 7919 + epoch)
        try:
            loss, step = engine.train_one_epoch(model, optimizer, loader, device, epoch, lr_at, step, hp.lr, log=log)
        except engine.NonFiniteLoss as exc:
            log(f"losses at the failing step: {exc.losses}")
            raise TrainingFailure(str(exc)) from exc
        val_metrics, _ = engine.evaluate(model, samples["val"], coco["val"], device, cats)
        seconds = time.monotonic() - epoch_started
        trained_s += seconds
        lr_now = optimizer.param_groups[0]["lr"]
        entry = {"epoch": epoch, "train_loss": loss, "val_map50": val_metrics["map50"], "val_map": val_metrics["map"],
                 "lr": lr_now, "seconds": round(seconds, 2)}
        history.append(entry)
        log(f"epoch={epoch} train_loss={loss:.4f} val_map50={val_metrics['map50']:.4f} "
            f"val_map={val_metrics['map']:.4f} lr={lr_now:.6f} seconds={seconds:.1f}")
        key = (val_metrics["map50"], val_metrics["map"])
        if best is None or key > (best["val_map50"], best["val_map"]) or not samples["val"]:
            best = dict(entry)
            best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
            _save(best_state, paths.checkpoints / BEST)
        _save({"identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
               "step": step, "best": best, "history": history}, paths.checkpoints / CHECKPOINT)
        if hp.max_train_seconds > 0 and trained_s >= hp.max_train_seconds and epoch < hp.epochs:
            log(f"max_train_seconds={hp.max_train_seconds:g} reached after epoch {epoch} ({trained_s:.1f} s): "
                f"stopping")
            stopped_early = True
            break
    log(f"training: {time.monotonic() - train_started:.1f} s in this job, {trained_s:.1f} s over {len(history)} "
        f"epoch(s) in all")
    if best_state is not None:
        model.load_state_dict(best_state)
    log(f"best epoch on val: {best['epoch']} (val_map50={best['val_map50']:.4f} val_map={best['val_map']:.4f})")

    # score threshold: best F1 on val, unless given
    threshold = hp.score_threshold
    if threshold < 0:
        val_metrics, _ = engine.evaluate(model, samples["val"], coco["val"], device, cats)
        threshold = coco_eval.best_f1_threshold(val_metrics["images"], default=0.5)
        log(f"score threshold {threshold:.4f} (best F1 at IoU 0.5 on val)")
    test_metrics, test_detections = engine.evaluate(model, samples["test"], coco["test"], device, cats,
                                                    score_threshold=threshold)
    log(f"test_map50={test_metrics['map50']:.4f} test_map={test_metrics['map']:.4f}")
    for name, entry in test_metrics["per_class"].items():
        if entry["ap"] is not None:
            log(f"test class {name}: ap={entry['ap']:.4f} ap50={entry['ap50']:.4f} boxes={entry['gt_boxes']}")

    outputs = write_outputs(paths, hp, cats, card, coco, samples, model, test_metrics, test_detections, threshold,
                            history, best, kwargs, stopped_early, trained_s)
    log(f"done in {time.monotonic() - started:.1f} s: {', '.join(outputs)}")
    return {"test": test_metrics, "best": best, "history": history}


def _card(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / "card.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def write_outputs(paths: Paths, hp: Hyperparameters, cats: list[Category], card: dict[str, Any],
                  coco: dict[str, dict[str, Any]], samples: dict[str, list], model: torch.nn.Module,
                  test_metrics: dict[str, Any], test_detections: list[dict[str, Any]], threshold: float,
                  history: list[dict[str, Any]], best: dict[str, Any], kwargs: dict[str, Any], stopped_early: bool,
                  train_seconds: float) -> list[str]:
    paths.model.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()  # the exports get plain NCHW weights
    torch.save(model.state_dict(), paths.model / "model.pt")
    first_test = samples["test"][0]
    example = export.read_image(_frame_of(paths, first_test.file_name))
    exporting = time.monotonic()
    described = export.export(model, paths.model, example)
    check = export.compare(model, export.load_export_file(paths.model / described["file"], described["format"]),
                           example)
    log(f"export {described['format']} ({described['file']}) in {time.monotonic() - exporting:.1f} s: {check}")
    classes = [{"name": c.name, "category_id": c.id, "label": c.label} for c in cats]
    config = {
        "schema": "surgical-mlops/model-config/v1", "model": hp.model, "model_kwargs": kwargs,
        "classes": classes, "num_classes": len(cats) + 1, "image_size": hp.image_size,
        "score_threshold": threshold, "export": {**described, "check": check},
        "dataset_version": card.get("version"), "hyperparameters": asdict(hp),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
    }
    (paths.model / "model_config.json").write_text(json.dumps(config, indent=2))
    confusion = coco_eval.confusion_matrix(coco["test"], test_detections, threshold)
    evaluation = {
        "schema": "surgical-mlops/evaluation/v1", "split": "test", "dataset_version": card.get("version"),
        "model": hp.model, "map": test_metrics["map"], "map50": test_metrics["map50"], "map75": test_metrics["map75"],
        "per_class": test_metrics["per_class"], "classes_evaluated": test_metrics["classes_evaluated"],
        "pr_curves": test_metrics["pr_curves"], "confusion_matrix": confusion, "score_threshold": threshold,
        "test_images": len(coco["test"]["images"]),
        "test_boxes": sum(1 for a in coco["test"]["annotations"] if not a.get("iscrowd", 0)),
        "test_videos": sorted({s.video_id for s in samples["test"]}),
        "best_epoch": best["epoch"], "val_map50": best["val_map50"], "val_map": best["val_map"],
        "epochs_run": len(history), "stopped_early": stopped_early, "train_seconds": round(train_seconds, 1),
        "history": history, "images": test_metrics["images"],
    }
    (paths.model / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
    paths.output_data.mkdir(parents=True, exist_ok=True)
    (paths.output_data / "evaluation.json").write_text(json.dumps(evaluation, indent=1))
    frames = {s.image_id: _frame_of(paths, s.file_name) for s in samples["test"]}
    reporting = time.monotonic()
    report.write_report(paths.model / "report", evaluation, coco["test"], test_detections, frames, config)
    log(f"report written in {time.monotonic() - reporting:.1f} s")
    return sorted(p.name for p in paths.model.iterdir())


def _frame_of(paths: Paths, file_name: str) -> Path:
    from data import frame_path

    return frame_path(paths.frames, file_name)


__all__ = ["Hyperparameters", "Paths", "TrainingFailure", "build_model", "run"]
