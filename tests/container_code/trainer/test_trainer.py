"""The trainer container: a 1-epoch run on a tiny generated dataset through ``entrypoint.py train``, as the local
SageMaker runs it (the Dockerfile's ENTRYPOINT with its COPY paths mapped back to the folder, the runner's training
environment and config files): outputs, metric lines, evaluation.json, resume, NaN and empty-dataset failures, a
missing channel, and the TorchScript export against the PyTorch model. Runs in the trainer's test environment
(tests/container_code/run.py): the jobs in the trainer's own (jobs.py), the checks of its modules in this process."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from include.synthetic import CLASSES
from tests.container_code.trainer.jobs import FOLDER, failure, run_job, run_processing
from tests.datasets import make_dataset

METRICS = {"train_loss": r"train_loss=([0-9.]+)", "val_map50": r"val_map50=([0-9.]+)",
           "test_map50": r"test_map50=([0-9.]+)"}
FAST = {"image_size": 96, "batch_size": 4, "epochs": 1, "warmup_steps": 2}
EVALUATION_KEYS = {"map", "map50", "map75", "per_class", "pr_curves", "confusion_matrix", "test_images", "test_boxes",
                   "dataset_version", "images", "score_threshold", "best_epoch", "history"}


def _coco_eval():
    spec = importlib.util.spec_from_file_location("trainer_coco_eval", FOLDER / "coco_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_dataset(tmp_path_factory.mktemp("trainer-data"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data: tuple[Path, Path]):
    dataset, frames = data
    root = tmp_path_factory.mktemp("trainer-job")
    proc, job_root = run_job(root, {"dataset": dataset, "frames": frames}, FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, job_root


def test_a_run_writes_the_model_folder_and_metric_lines(trained):
    proc, job_root = trained
    model = job_root / "model"
    for name in ("model.pt", "model.ts", "model_config.json", "evaluation.json", "report/index.html"):
        assert (model / name).is_file(), name
    for png in ("pr_curves.png", "ap_per_class.png", "confusion_matrix.png", "frame_1.png"):
        assert (model / "report" / png).stat().st_size > 1000, png
        assert f'src="{png}"' in (model / "report" / "index.html").read_text()
    # evaluation.json: in the model folder and in the output data folder
    evaluation = json.loads((model / "evaluation.json").read_text())
    assert json.loads((job_root / "output" / "data" / "evaluation.json").read_text()) == evaluation
    # the metric lines are the figures of evaluation.json (4 decimals); val_map50's regex also reads the best epoch's
    (epoch,) = evaluation["history"]
    assert evaluation["best_epoch"] == 1 and evaluation["epochs_run"] == 1
    expected = {"train_loss": [epoch["train_loss"]], "val_map50": [epoch["val_map50"], evaluation["val_map50"]],
                "test_map50": [evaluation["map50"]]}
    for metric, regex in METRICS.items():
        assert re.findall(regex, proc.stdout) == [f"{v:.4f}" for v in expected[metric]], metric
    assert epoch["epoch"] == 1 and epoch["train_loss"] > 0
    lines = re.findall(r"^epoch=(\d+) train_loss=(\S+) val_map50=(\S+) val_map=(\S+) lr=(\S+) seconds=([0-9.]+)$",
                       proc.stdout, re.MULTILINE)
    assert [line[:5] for line in lines] == [("1", f"{epoch['train_loss']:.4f}", f"{epoch['val_map50']:.4f}",
                                             f"{epoch['val_map']:.4f}", f"{epoch['lr']:.6f}")]
    assert abs(float(lines[0][5]) - epoch["seconds"]) <= 0.051  # the line has 1 decimal, the history 2
    assert re.findall(r"^test_map50=(\S+) test_map=(\S+)$", proc.stdout, re.MULTILINE) == [
        (f"{evaluation['map50']:.4f}", f"{evaluation['map']:.4f}")]
    config = json.loads((model / "model_config.json").read_text())
    assert [c["name"] for c in config["classes"]] == list(CLASSES)
    assert [c["category_id"] for c in config["classes"]] == [1, 2, 3]
    assert config["export"]["format"] == "torchscript" and config["export"]["file"] == "model.ts"
    # the score threshold: the best F1 on val (4 decimals, logged), in model_config.json, evaluation.json and the
    # confusion matrix alike, and the one the per-frame counts apply
    threshold = config["score_threshold"]
    assert config["image_size"] == 96 and 0 < threshold < 1 and round(threshold, 4) == threshold
    assert evaluation["score_threshold"] == threshold == evaluation["confusion_matrix"]["score_threshold"]
    assert f"score threshold {threshold:.4f} (best F1 at IoU 0.5 on val)" in proc.stdout
    assert EVALUATION_KEYS <= set(evaluation)
    test = json.loads((next((job_root / "input" / "data" / "dataset").glob("coco_test.json"))).read_text())
    assert evaluation["test_images"] == len(test["images"]) and evaluation["test_boxes"] == len(test["annotations"])
    card = json.loads((job_root / "input" / "data" / "dataset" / "card.json").read_text())
    assert evaluation["dataset_version"] == card["version"]
    gt_boxes = {name: sum(a["category_id"] == i for a in test["annotations"]) for i, name in enumerate(CLASSES, 1)}
    assert evaluation["classes_evaluated"] == [name for name in CLASSES if gt_boxes[name]]
    for name in CLASSES:
        entry = evaluation["per_class"][name]
        assert {"ap", "ap50", "ap75", "gt_boxes"} <= set(entry) and entry["gt_boxes"] == gt_boxes[name]
        curve = evaluation["pr_curves"][name]
        assert len(curve["recall"]) == 101 and curve["recall"][1] == 0.01
        if gt_boxes[name]:
            assert len(curve["precision"]) == 101 and entry["ap50"] is not None
        else:  # no true box in the split: no AP, no curve
            assert curve["precision"] is None and entry["ap"] is entry["ap50"] is entry["ap75"] is None
    assert len(evaluation["images"]) == len(test["images"])
    for image in evaluation["images"]:
        assert image["video_id"] and set(image["counts"]) == set(CLASSES)
        for d in image["detections"]:
            assert {"category", "bbox", "score", "tp50"} <= set(d)
        for name in CLASSES:  # the counts at the score threshold
            above = [d for d in image["detections"] if d["category"] == name and d["score"] >= threshold]
            tp = sum(d["tp50"] for d in above)
            assert image["counts"][name] == {"tp": tp, "fp": len(above) - tp, "fn": image["gt"].get(name, 0) - tp}
    matrix = evaluation["confusion_matrix"]
    assert matrix["labels"] == [*CLASSES, "background"] and len(matrix["matrix"]) == 4
    # every true box is in its class's row once (found as some class, or missed: the background column), every
    # detection at the threshold in its class's column once (on some true box, or on none: the background row)
    assert [sum(row) for row in matrix["matrix"][:3]] == [gt_boxes[name] for name in CLASSES]
    assert [sum(row[k] for row in matrix["matrix"]) for k in range(3)] == [
        sum(d["category"] == name and d["score"] >= threshold for i in evaluation["images"] for d in i["detections"])
        for name in CLASSES]


def test_ap50_recomputed_from_the_per_frame_records_equals_pycocotools(trained):
    """End to end on the 1-epoch model (barely trained: its figures are near 0, the test split has no tumor; the
    constructed detections below are the real check of the arithmetic)."""
    _, job_root = trained
    evaluation = json.loads((job_root / "model" / "evaluation.json").read_text())
    recomputed = _coco_eval().ap50_from_images(evaluation["images"], list(CLASSES))
    assert recomputed["map50"] == pytest.approx(evaluation["map50"], abs=1e-6)  # evaluation.json has 6 decimals
    for name in CLASSES:
        expected = evaluation["per_class"][name]["ap50"]
        assert recomputed["per_class"][name] == (None if expected is None else pytest.approx(expected, abs=1e-6))
    assert sum(len(i["detections"]) for i in evaluation["images"]) > 0


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def constructed_split(seed: int = 7, images: int = 12) -> tuple[dict, list[dict], list[bool | None]]:
    """A COCO split of 640x360 frames with boxes of every class, and detections built from its true boxes with a
    known outcome at IoU 0.5: (gt, detections, outcomes), outcome True (matches its true box), False (a false
    positive) or None (inside a crowd region: COCO ignores it). Per true box: found (IoU 0.52 to 0.97, sometimes
    found twice), found badly (IoU < 0.45), taken for another class, or missed; false positives on the background.
    Scores have 2 decimals, so true and false positives tie, within and across frames."""
    rng = random.Random(seed)
    gt: dict = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES, 1)]}
    detections: list[dict] = []
    outcomes: list[bool | None] = []

    def truth(image_id: int, category: int, bbox: list[float], crowd: int = 0) -> None:
        gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": category,
                                  "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": crowd})

    def detect(image_id: int, category: int, score: float, bbox: list[float], outcome: bool | None) -> None:
        detections.append({"image_id": image_id, "category_id": category, "bbox": bbox, "score": score})
        outcomes.append(outcome)

    def near(box: list[float], low: float, high: float) -> list[float]:  # IoU with box in [low, high]
        x, y, w, h = box
        a = min(0.4, 0.8 * (1 - low))
        while True:
            found = [round(x + rng.uniform(-a, a) * w, 1), round(y + rng.uniform(-a, a) * h, 1),
                     round(w * rng.uniform(1 - a, 1 + a), 1), round(h * rng.uniform(1 - a, 1 + a), 1)]
            if low <= _iou(found, box) <= high:
                return found

    def score(low: float, high: float) -> float:
        return round(rng.uniform(low, high), 2)

    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "file_name": f"frames/v{image_id % 3}/{image_id:06d}.jpg",
                             "width": 640, "height": 360, "video_id": f"v{image_id % 3}"})
        for cell in range(8):  # a 4 x 2 grid of 160 x 180 px cells, one true box at most in each
            cx, cy = 160 * (cell % 4), 180 * (cell // 4)
            if rng.random() < 0.2:  # no true box; maybe a false positive of any class
                if rng.random() < 0.6:
                    detect(image_id, rng.randint(1, 3), score(0.05, 0.9),
                           [cx + 30.0, cy + 40.0, float(rng.randint(20, 90)), float(rng.randint(20, 90))], False)
                continue
            w, h = float(rng.randint(30, 110)), float(rng.randint(30, 130))
            box = [cx + float(rng.randint(20, 140 - int(w))), cy + float(rng.randint(20, 160 - int(h))), w, h]
            category = rng.randint(1, 3)
            truth(image_id, category, box)
            outcome = rng.random()
            if outcome < 0.6:  # found; IoUs spread so that AP@0.75 and the stricter IoUs see hits and misses
                top = score(0.3, 1.0)
                detect(image_id, category, top, near(box, *rng.choice([(0.52, 0.7), (0.7, 0.85), (0.85, 0.97)])), True)
                if rng.random() < 0.3:  # found twice: the lower score is a false positive
                    detect(image_id, category, round(top * 0.7, 2), near(box, 0.52, 0.97), False)
            elif outcome < 0.8:  # found badly: a false positive, and a miss
                detect(image_id, category, score(0.05, 0.95), near(box, 0.1, 0.45), False)
            if rng.random() < 0.15:  # taken for another class: a false positive of that class
                detect(image_id, rng.choice([c for c in (1, 2, 3) if c != category]), score(0.05, 0.9),
                       near(box, 0.6, 0.97), False)
    # a frame with a crowd region (iscrowd=1, no true box to find): the detection inside it is ignored
    image_id = images + 1
    gt["images"].append({"id": image_id, "file_name": f"frames/v0/{image_id:06d}.jpg", "width": 640, "height": 360,
                         "video_id": "v0"})
    truth(image_id, 1, [300.0, 100.0, 200.0, 200.0], crowd=1)
    truth(image_id, 1, [20.0, 20.0, 60.0, 90.0])
    detect(image_id, 1, 0.55, [350.0, 150.0, 50.0, 60.0], None)
    detect(image_id, 1, 0.45, [22.0, 18.0, 60.0, 88.0], True)
    # a bad box may reach into the next cell: keep the false positives that overlap no other true box of their class
    keep = [i for i, d in enumerate(detections) if outcomes[i] is not False or all(
        _iou(d["bbox"], a["bbox"]) < 0.5 for a in gt["annotations"]
        if a["image_id"] == d["image_id"] and a["category_id"] == d["category_id"] and not a["iscrowd"])]
    return gt, [detections[i] for i in keep], [outcomes[i] for i in keep]


def pycocotools_eval(gt: dict, detections: list[dict], image_ids: list[int] | None = None):
    """pycocotools itself (bbox, its default parameters): the reference."""
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(detections)), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def test_the_trainer_ap_equals_pycocotools_on_detections_of_every_kind():
    """coco_eval (the trainer's evaluation: evaluate_coco's figures and per-frame records, and ap50_from_images
    recomputing AP@0.5 from those records, as for a bootstrap) against pycocotools, on constructed detections: every
    class with true positives at several IoUs, duplicates, bad boxes, wrong classes, misses, background false
    positives, tied scores and a crowd region."""
    coco_eval = _coco_eval()
    gt, detections, outcomes = constructed_split()
    # the construction is not degenerate: per class, hits, false positives and misses; ties of a hit and a miss
    true_boxes = {c: sum(a["category_id"] == c and not a["iscrowd"] for a in gt["annotations"]) for c in (1, 2, 3)}
    hits = {c: sum(d["category_id"] == c and o is True for d, o in zip(detections, outcomes)) for c in (1, 2, 3)}
    false = {c: sum(d["category_id"] == c and o is False for d, o in zip(detections, outcomes)) for c in (1, 2, 3)}
    assert all(5 <= hits[c] <= true_boxes[c] - 5 and false[c] >= 5 for c in (1, 2, 3)), (true_boxes, hits, false)
    tied = {d["score"] for d, o in zip(detections, outcomes) if o} & {
        d["score"] for d, o in zip(detections, outcomes) if o is False}
    assert len(tied) >= 3
    # COCO's recall points as pycocotools has them (linspace): for these box counts k / n never equals one of them
    # (the case of test_ap50_from_images_samples_coco_recall_points below)
    assert true_boxes == {1: 27, 2: 24, 3: 23}

    result = coco_eval.evaluate_coco(gt, detections, score_threshold=0.5)
    reference = pycocotools_eval(gt, detections)
    precision = reference.eval["precision"]  # [IoU, recall, class, area, max detections]: area "all", 100
    # the per-frame records: every detection but the ignored one, with the outcome it was built with
    records = {(i["image_id"], d["category_id"], tuple(d["bbox"]), d["score"]): d["tp50"]
               for i in result["images"] for d in i["detections"]}
    assert records == {(d["image_id"], d["category_id"], tuple(d["bbox"]), d["score"]): o
                       for d, o in zip(detections, outcomes) if o is not None}
    for image in result["images"]:
        for k, name in enumerate(CLASSES, 1):
            built = [o for d, o in zip(detections, outcomes)
                     if d["image_id"] == image["image_id"] and d["category_id"] == k and d["score"] >= 0.5 and
                     o is not None]
            boxes = sum(a["image_id"] == image["image_id"] and a["category_id"] == k and not a["iscrowd"]
                        for a in gt["annotations"])
            assert image["counts"][name] == {"tp": sum(built), "fp": len(built) - sum(built),
                                             "fn": boxes - sum(built)}
    # evaluate_coco's figures (6 decimals) and curves (4 decimals) are pycocotools'
    assert [result["map"], result["map50"], result["map75"]] == pytest.approx(list(reference.stats[:3]), abs=1e-6)
    for k, name in enumerate(CLASSES):
        entry = result["per_class"][name]
        assert entry["gt_boxes"] == true_boxes[k + 1]
        assert entry["ap"] == pytest.approx(precision[:, :, k, 0, 2].mean(), abs=1e-6)
        assert entry["ap50"] == pytest.approx(precision[0, :, k, 0, 2].mean(), abs=1e-6)
        assert entry["ap75"] == pytest.approx(precision[5, :, k, 0, 2].mean(), abs=1e-6)
        assert 0.2 < entry["ap50"] < 0.8 and 0 < entry["ap75"] < entry["ap50"] and 0 < entry["ap"] < entry["ap50"]
        assert result["pr_curves"][name]["precision"] == pytest.approx(list(precision[0, :, k, 0, 2]), abs=5e-5)
    # ap50_from_images from the records: pycocotools' AP@0.5 to the last bits
    recomputed = coco_eval.ap50_from_images(result["images"], list(CLASSES))
    for k, name in enumerate(CLASSES):
        assert recomputed["per_class"][name] == pytest.approx(precision[0, :, k, 0, 2].mean(), abs=1e-9), name
    assert recomputed["map50"] == pytest.approx(reference.stats[1], abs=1e-9)
    # ... on a subset of the frames (pycocotools on those image ids)
    subset = [i for i in result["images"] if i["image_id"] % 2]
    partial = pycocotools_eval(gt, detections, [i["image_id"] for i in subset])
    recomputed = coco_eval.ap50_from_images(subset, list(CLASSES))
    assert recomputed["map50"] == pytest.approx(partial.stats[1], abs=1e-9)
    assert [recomputed["per_class"][n] for n in CLASSES] == pytest.approx(
        [partial.eval["precision"][0, :, k, 0, 2].mean() for k in range(3)], abs=1e-9)
    # ... and on a resample with repeats (pycocotools on the split with the repeated frames copied under new ids)
    draw = random.Random(3)
    resample = [draw.choice(result["images"]) for _ in result["images"]]
    assert len({i["image_id"] for i in resample}) < len(resample)
    copied: dict = {"images": [], "annotations": [], "categories": gt["categories"]}
    copied_detections = []
    for new_id, image in enumerate(resample, 1):
        copied["images"].append({"id": new_id, "file_name": f"copy{new_id}.jpg", "width": 640, "height": 360})
        copied["annotations"] += [{**a, "id": len(copied["annotations"]) + n + 1, "image_id": new_id}
                                  for n, a in enumerate(a for a in gt["annotations"]
                                                        if a["image_id"] == image["image_id"])]
        copied_detections += [{**d, "image_id": new_id} for d in detections if d["image_id"] == image["image_id"]]
    resampled = pycocotools_eval(copied, copied_detections)
    recomputed = coco_eval.ap50_from_images(resample, list(CLASSES))
    assert recomputed["map50"] == pytest.approx(resampled.stats[1], abs=1e-9)
    assert [recomputed["per_class"][n] for n in CLASSES] == pytest.approx(
        [resampled.eval["precision"][0, :, k, 0, 2].mean() for k in range(3)], abs=1e-9)


def test_ap50_from_images_samples_coco_recall_points():
    """10 boxes: 7 found (precision 1 at recall 0.7), 3 false positives, an 8th found (precision 8/11 at 0.8).
    pycocotools samples its recall point 0.7000000000000001 at the 8th hit: AP@0.5 = 78 / 101."""
    coco_eval = _coco_eval()
    gt = {"images": [{"id": 1, "file_name": "frames/v0/000001.jpg", "width": 640, "height": 360}],
          "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES, 1)],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [60.0 * k, 10.0, 50.0, 50.0],
                           "area": 2500.0, "iscrowd": 0} for k in range(10)]}
    detections = [{"image_id": 1, "category_id": 1, "bbox": [60.0 * k, 10.0, 50.0, 50.0], "score": 0.9 - 0.01 * k}
                  for k in range(7)]
    detections += [{"image_id": 1, "category_id": 1, "bbox": [60.0 * k, 200.0, 50.0, 50.0], "score": 0.8 - 0.01 * k}
                   for k in range(3)]
    detections.append({"image_id": 1, "category_id": 1, "bbox": [420.0, 10.0, 50.0, 50.0], "score": 0.7})
    reference = pycocotools_eval(gt, detections)
    assert reference.stats[1] == pytest.approx(78 / 101, abs=1e-12)  # 70 points at 1, 11 at 8 / 11, 20 at 0
    result = coco_eval.evaluate_coco(gt, detections)
    assert result["map50"] == pytest.approx(reference.stats[1], abs=1e-6)
    assert coco_eval.ap50_from_images(result["images"], list(CLASSES))["map50"] == pytest.approx(
        reference.stats[1], abs=1e-9)


def test_the_export_predicts_what_the_pytorch_model_predicts(trained, data):
    _, job_root = trained
    image = next(data[1].glob("*/000000.jpg"))
    proc = subprocess.run([sys.executable, str(FOLDER / "export.py"), "check", "--model-dir", str(job_root / "model"),
                           "--image", str(image)], capture_output=True, text=True, timeout=120, cwd=FOLDER)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["detections"] == result["export_detections"]
    assert result["labels_equal"]
    assert result["max_box_diff"] <= 1e-3 and result["max_score_diff"] <= 1e-4


CHECKPOINT_KEYS = {"identity", "model", "optimizer", "epoch", "step", "best", "history"}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _steps_per_epoch(dataset: Path, batch_size: int) -> int:
    """The trainer's batches an epoch: a last batch of 1 image is dropped (BatchNorm)."""
    images = len(json.loads((dataset / "coco_train.json").read_text())["images"])
    return images // batch_size + (images % batch_size > 1)


def _batches_seen(model_state: dict) -> set[int]:
    """What every BatchNorm layer counted: the training batches this model's weights went through."""
    return {int(v) for k, v in model_state.items() if k.endswith("num_batches_tracked")}


def _adam_steps(optimizer_state: dict) -> set[float]:
    return {float(s["step"]) for s in optimizer_state["state"].values()}


def _same_tensors(a: dict, b: dict) -> bool:
    import torch

    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_job_resumes_from_the_checkpoint(tmp_path, trained, data):
    """The first job found no checkpoint and started at epoch 1; it left checkpoint.pt (identity, model and optimizer
    state, epoch, global step, best entry, history) and best.pt (the best epoch's weights). A second job given them
    (more epochs) resumes after epoch 1: no epoch redone, the model, optimizer, step and history carried on."""
    import torch

    first_proc, first_root = trained
    dataset, frames = data
    first = json.loads((first_root / "model" / "evaluation.json").read_text())
    steps = _steps_per_epoch(dataset, FAST["batch_size"])
    card = json.loads((dataset / "card.json").read_text())
    # the first job: nothing to resume, epoch 1 its first (and only) epoch
    assert "resumed from" not in first_proc.stdout and "starting from scratch" not in first_proc.stdout
    assert re.findall(r"^epoch=(\d+) ", first_proc.stdout, re.MULTILINE) == ["1"]
    assert re.search(r"^training: [0-9.]+ s in this job, [0-9.]+ s over 1 epoch\(s\) in all$", first_proc.stdout,
                     re.MULTILINE)
    # ... and its checkpoints, as train.py writes them
    assert sorted(p.name for p in (first_root / "checkpoints").iterdir()) == ["best.pt", "checkpoint.pt"]
    saved = torch.load(first_root / "checkpoints" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert set(saved) == CHECKPOINT_KEYS
    assert saved["identity"] == {"model": "ssdlite320_mobilenet_v3_large", "classes": list(CLASSES),
                                 "image_size": FAST["image_size"], "anchor_min_ratio": 0.2,
                                 "dataset_version": card["version"], "seed": 0}
    assert saved["epoch"] == 1 and saved["step"] == steps >= 1
    assert saved["history"] == first["history"] and saved["best"] == first["history"][0]
    best = torch.load(first_root / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model_pt = torch.load(first_root / "model" / "model.pt", map_location="cpu", weights_only=True)
    assert _same_tensors(saved["model"], best) and _same_tensors(best, model_pt)  # epoch 1: the last and the best
    assert _batches_seen(saved["model"]) == {steps}
    parameters = [k for k in saved["model"] if not k.endswith(BN_BUFFERS)]
    assert len(saved["optimizer"]["state"]) == len(parameters) and _adam_steps(saved["optimizer"]) == {steps}
    assert saved["optimizer"]["param_groups"][0]["lr"] == first["history"][-1]["lr"]

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for path in (first_root / "checkpoints").iterdir():  # what CheckpointConfig restores from S3
        (checkpoints / path.name).write_bytes(path.read_bytes())
    proc, job_root = run_job(tmp_path, {"dataset": dataset, "frames": frames}, {**FAST, "epochs": 2},
                             checkpoints=checkpoints)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.findall(r"^resumed from epoch (\d+) \(best so far: epoch (\S+)\)$", proc.stdout, re.MULTILINE) == [
        ("1", "1")]
    assert re.findall(r"^epoch=(\d+) ", proc.stdout, re.MULTILINE) == ["2"]  # epoch 1 not redone
    assert re.search(r"^training: [0-9.]+ s in this job, [0-9.]+ s over 2 epoch\(s\) in all$", proc.stdout,
                     re.MULTILINE)
    evaluation = json.loads((job_root / "model" / "evaluation.json").read_text())
    history = evaluation["history"]
    assert evaluation["epochs_run"] == 2 and [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first["history"][0]  # the first job's epoch as it measured it (its loss, figures, seconds)
    assert evaluation["train_seconds"] == pytest.approx(history[0]["seconds"] + history[1]["seconds"], abs=0.06)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "checkpoint.pt"]
    resumed = torch.load(checkpoints / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert set(resumed) == CHECKPOINT_KEYS and resumed["identity"] == saved["identity"]
    assert resumed["epoch"] == 2 and resumed["step"] == 2 * steps and resumed["history"] == history
    # the weights and the optimizer went on from the checkpoint's: fresh ones would have seen 1 epoch's batches
    assert _batches_seen(resumed["model"]) == {2 * steps} and _adam_steps(resumed["optimizer"]) == {2 * steps}
    # the best epoch over both jobs (the first of the highest (val_map50, val_map)): best.pt, model.pt
    keys = [(h["val_map50"], h["val_map"]) for h in history]
    best_epoch = keys.index(max(keys)) + 1
    assert evaluation["best_epoch"] == best_epoch and resumed["best"] == history[best_epoch - 1]
    resumed_best = torch.load(checkpoints / "best.pt", map_location="cpu", weights_only=True)
    assert _same_tensors(resumed_best, torch.load(job_root / "model" / "model.pt", map_location="cpu",
                                                  weights_only=True))
    assert _same_tensors(resumed_best, best if best_epoch == 1 else resumed["model"])


def test_a_checkpoint_of_another_run_or_unreadable_is_not_resumed(tmp_path, trained):
    """``load_checkpoint``: the first job's checkpoint with its best weights for the same identity; nothing (the
    job starts from scratch, saying why) for another run's identity, a truncated file or no file."""
    import torch

    from tests.inference_model import trainer_modules

    train, _ = trainer_modules()
    folder = trained[1] / "checkpoints"
    identity = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)["identity"]
    logged: list[str] = []
    state = train.load_checkpoint(folder, identity, logged.append)
    assert state["epoch"] == 1 and logged == []
    assert _same_tensors(state["best_state"], torch.load(folder / "best.pt", map_location="cpu", weights_only=True))
    assert train.load_checkpoint(folder, {**identity, "dataset_version": "another"}, logged.append) is None
    assert logged == [f"checkpoint is for another run ({identity}): starting from scratch"]
    logged.clear()
    (tmp_path / "checkpoint.pt").write_bytes((folder / "checkpoint.pt").read_bytes()[:4096])
    assert train.load_checkpoint(tmp_path, identity, logged.append) is None
    assert len(logged) == 1 and re.fullmatch(r"checkpoint checkpoint\.pt is unreadable \(\w+: .*\): starting from "
                                             r"scratch", logged[0], re.DOTALL), logged
    logged.clear()
    (tmp_path / "checkpoint.pt").unlink()
    assert train.load_checkpoint(tmp_path, identity, logged.append) is None and logged == []


def test_a_nan_loss_stops_the_job_with_the_reason(tmp_path, data):
    dataset, frames = data
    proc, job_root = run_job(tmp_path, {"dataset": dataset, "frames": frames},
                             {**FAST, "lr": 1e9, "batch_size": 2, "epochs": 3})
    assert proc.returncode == 1
    reason = failure(job_root)
    assert re.fullmatch(r"NaN loss at epoch \d+ step \d+: lower the learning rate \(lr=1e\+09\)", reason), reason
    assert not (job_root / "model" / "model.pt").exists()


def test_training_runs_channels_last_and_writes_plain_nchw_weights(trained, tmp_path, data):
    """The default (channels_last=1) trains in NHWC; model.pt and the exports get the usual contiguous weights."""
    import torch

    proc, job_root = trained
    assert '"channels_last": 1' in proc.stdout
    state = torch.load(job_root / "model" / "model.pt", map_location="cpu", weights_only=True)
    convs = [v for v in state.values() if v.ndim == 4]
    assert convs and all(v.is_contiguous() for v in convs)
    proc, job_root = run_job(tmp_path, {"dataset": data[0], "frames": data[1]}, {**FAST, "channels_last": 2})
    assert proc.returncode == 1
    assert failure(job_root) == "bad hyperparameters: channels_last must be 0 or 1, got 2"


def test_match_iou_sets_the_ssd_matcher_and_is_range_checked():
    """``match_iou`` reaches SSD's matcher (training only); out of range it fails the job with the reason."""
    from tests.inference_model import trainer_modules

    train, _ = trainer_modules()
    hp = train.Hyperparameters.parse({"match_iou": "0.45"})
    model = train.build_model(hp.model, 3, 96, anchor_min_ratio=hp.anchor_min_ratio, match_iou=hp.match_iou)
    assert model.proposal_matcher.high_threshold == model.proposal_matcher.low_threshold == 0.45
    assert train.build_model(hp.model, 3, 96).proposal_matcher.high_threshold == 0.5  # SSD's own default
    reason = r"^bad hyperparameters: match_iou must be in \[0.1, 0.9\], got 0.05$"
    with pytest.raises(train.TrainingFailure, match=reason):
        train.Hyperparameters.parse({"match_iou": 0.05})


def test_an_empty_dataset_fails(tmp_path):
    dataset, frames = make_dataset(tmp_path / "data", videos=3, frames=1, boxes=False)
    proc, job_root = run_job(tmp_path, {"dataset": dataset, "frames": frames}, FAST)
    assert proc.returncode == 1
    assert failure(job_root).startswith("empty dataset: coco_train.json has no boxes")


def test_a_missing_channel_is_named(tmp_path, data):
    proc, job_root = run_job(tmp_path, {"dataset": data[0]}, FAST)
    assert proc.returncode == 1
    assert failure(job_root).startswith("missing channel: frames")


def test_the_evaluate_command_rescores_a_packed_model_as_the_training_job_did(tmp_path, trained, data):
    """The champion's re-evaluation: model.tar.gz in, the same figures and per-frame records out."""
    import tarfile

    dataset, frames = data
    _, job_root = trained
    model_input = tmp_path / "input" / "model"
    model_input.mkdir(parents=True)
    with tarfile.open(model_input / "model.tar.gz", "w:gz") as tar:
        for path in (job_root / "model").iterdir():
            tar.add(path, arcname=path.name)
    proc, _ = run_processing(tmp_path, "evaluate", ["--model", str(model_input), "--dataset", str(dataset),
                                                     "--frames", str(frames), "--output", str(tmp_path / "evaluation")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    scored = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    original = json.loads((job_root / "model" / "evaluation.json").read_text())
    assert scored["dataset_version"] == original["dataset_version"]
    assert scored["map50"] == pytest.approx(original["map50"], abs=1e-6)
    assert [i["file_name"] for i in scored["images"]] == [i["file_name"] for i in original["images"]]
    assert all("ground_truth" in i for i in scored["images"])
    assert re.search(r"test_map50=[0-9.]+", proc.stdout)


def test_the_evaluate_command_without_a_model_fails_with_the_reason(tmp_path, data):
    dataset, frames = data
    (tmp_path / "nothing").mkdir()
    proc, _ = run_processing(tmp_path, "evaluate", ["--model", str(tmp_path / "nothing"), "--dataset", str(dataset),
                                                     "--frames", str(frames), "--output", str(tmp_path / "evaluation")])
    assert proc.returncode == 1
    assert "neither model_config.json nor model.tar.gz" in failure(tmp_path)


def test_the_predict_command_pre_annotates_every_frame(tmp_path, trained, data):
    """Batch predictions for the labeling tool: one JSON line per frame (nested folders, path order), pixel boxes
    clipped to the frame, the box cap applied, progress lines, a summary."""
    import tarfile

    from PIL import Image

    _, job_root = trained
    model_input = tmp_path / "input" / "model"
    model_input.mkdir(parents=True)
    with tarfile.open(model_input / "model.tar.gz", "w:gz") as tar:
        tar.add(job_root / "model", arcname=".")
    frames = tmp_path / "input" / "frames"
    sources = sorted(data[1].glob("*/*.jpg"))
    for copy in range(5):  # 60 frames: a progress line at 50 and one at the end
        for source in sources:
            target = frames / f"batch{copy}" / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    output = tmp_path / "output"
    proc, _ = run_processing(tmp_path, "predict", ["--model", str(model_input), "--frames", str(frames), "--output",
                                                    str(output), "--min-score", "0", "--max-boxes", "3"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    expected = sorted(p.relative_to(frames).as_posix() for p in frames.rglob("*.jpg"))
    assert [line["frame"] for line in lines] == expected and len(expected) == 60
    for line in lines:
        with Image.open(frames / line["frame"]) as image:
            assert (line["width"], line["height"]) == image.size
        assert len(line["boxes"]) <= 3
        assert [b["score"] for b in line["boxes"]] == sorted((b["score"] for b in line["boxes"]), reverse=True)
        for box in line["boxes"]:
            assert set(box) == {"label", "score", "left", "top", "width", "height"} and box["label"] in CLASSES
            assert all(isinstance(box[k], int) for k in ("left", "top", "width", "height"))
            assert 0 <= box["left"] < box["left"] + box["width"] <= line["width"]
            assert 0 <= box["top"] < box["top"] + box["height"] <= line["height"]
    assert re.search(r"^predicted 56/60 frames: \d+ boxes, [0-9.]+ s$", proc.stdout, re.MULTILINE)
    assert re.search(r"^predicted 60/60 frames: ", proc.stdout, re.MULTILINE)
    summary = json.loads((output / "predictions_summary.json").read_text())
    config = json.loads((job_root / "model" / "model_config.json").read_text())
    assert summary["model"] == {"trained_on": config["dataset_version"], "model": config["model"]}
    assert summary["frames"] == 60 and summary["boxes"] == sum(len(line["boxes"]) for line in lines) > 0
    assert summary["seconds"] > 0 and summary["classes"] == list(CLASSES)


def test_predicted_boxes_are_clipped_floored_capped_and_best_first():
    import torch

    spec = importlib.util.spec_from_file_location("trainer_predict", FOLDER / "predict.py")
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    output = {"boxes": torch.tensor([[-5.2, 10.4, 30.6, 40.5], [150.0, 80.0, 170.0, 99.0], [10.0, 10.0, 20.0, 20.0],
                                     [1.0, 2.0, 3.0, 4.0], [50.0, 50.0, 50.2, 60.0], [0.0, 0.0, 8.0, 8.0]]),
              "labels": torch.tensor([1, 2, 3, 9, 1, 2]), "scores": torch.tensor([0.6, 0.9, 0.2, 0.99, 0.8, 0.5])}
    boxes = predict.pixel_boxes(output, {1: "scalpel", 2: "retractor", 3: "tumor"}, 160, 96, 0.3, 2)
    # label 9 is no class, 0.2 is under the floor, the 0.2 px wide box is empty once rounded, the cap keeps 2
    assert boxes == [{"label": "retractor", "score": 0.9, "left": 150, "top": 80, "width": 10, "height": 16},
                     {"label": "scalpel", "score": 0.6, "left": 0, "top": 10, "width": 31, "height": 30}]


def test_the_predict_command_without_frames_or_model_or_with_a_bad_frame_fails_with_the_reason(tmp_path, trained):
    _, job_root = trained
    (tmp_path / "empty").mkdir()
    proc, _ = run_processing(tmp_path, "predict", ["--model", str(job_root / "model"), "--frames",
                                                    str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    assert proc.returncode == 1
    assert failure(tmp_path) == f"no frames: {tmp_path / 'empty'} holds no *.jpg file (nothing to predict)"
    (tmp_path / "empty" / "000000.jpg").write_bytes(b"")
    proc, _ = run_processing(tmp_path, "predict", ["--model", str(tmp_path / "empty"), "--frames",
                                                    str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    assert proc.returncode == 1
    assert "neither model_config.json nor model.tar.gz" in failure(tmp_path)
    proc, _ = run_processing(tmp_path, "predict", ["--model", str(job_root / "model"), "--frames",
                                                    str(tmp_path / "empty"), "--output", str(tmp_path / "out")])
    assert proc.returncode == 1
    assert failure(tmp_path).startswith("unreadable frame: 000000.jpg: cannot identify image file")
