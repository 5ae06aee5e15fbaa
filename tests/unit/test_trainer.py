"""The trainer container: a 1-epoch run on a tiny generated dataset through ``entrypoint.py train``, as the local
SageMaker runs it (the Dockerfile's ENTRYPOINT with its COPY paths mapped back to the folder, the runner's training
environment and config files): outputs, metric lines, evaluation.json, resume, NaN and empty-dataset failures, a
missing channel, and the TorchScript export against the PyTorch model."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from include.synthetic import CLASSES
from local_aws.sagemaker.containers import parse_dockerfile
from local_aws.sagemaker.runners import base_environment, training_environment
from tests.datasets import make_dataset

FOLDER = Path(__file__).resolve().parents[2] / "containers" / "trainer"
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


def run_job(root: Path, channels: dict[str, Path], hyperparameters: dict, name: str = "train-test",
            checkpoints: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """The trainer as the local SageMaker's runner starts it; returns (process, job root)."""
    job_root = root / name
    for sub in ("model", "output/data", "input/config", "input/data"):
        (job_root / sub).mkdir(parents=True, exist_ok=True)
    for channel, source in channels.items():
        (job_root / "input" / "data" / channel).symlink_to(source, target_is_directory=True)
    checkpoint_dir = checkpoints or job_root / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    strings = {k: str(v) for k, v in hyperparameters.items()}
    (job_root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(strings))
    job = {"TrainingJobArn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
           "HyperParameters": strings}
    image = parse_dockerfile("surgical-mlops/trainer", FOLDER)
    env = base_environment(job_root, image, {})
    env.update(training_environment(job_root, name, job, list(channels), checkpoint_dir))
    proc = subprocess.run(image.command(None, ["train"]), cwd=image.workdir, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, job_root


def failure(job_root: Path) -> str:
    path = job_root / "output" / "failure"
    return path.read_text().strip() if path.exists() else ""


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
    for metric, regex in METRICS.items():
        values = [float(m.group(1)) for m in re.finditer(regex, proc.stdout)]
        assert values, metric
        assert all(0 <= v < 1e6 for v in values)
    assert re.search(r"^epoch=1 train_loss=[0-9.]+ val_map50=[0-9.]+ val_map=[0-9.]+ lr=[0-9.]+ seconds=[0-9.]+$",
                     proc.stdout, re.MULTILINE)
    assert re.search(r"^test_map50=[0-9.]+ test_map=[0-9.]+$", proc.stdout, re.MULTILINE)
    config = json.loads((model / "model_config.json").read_text())
    assert [c["name"] for c in config["classes"]] == list(CLASSES)
    assert [c["category_id"] for c in config["classes"]] == [1, 2, 3]
    assert config["export"]["format"] == "torchscript" and config["export"]["file"] == "model.ts"
    assert config["image_size"] == 96 and 0 <= config["score_threshold"] < 1
    # evaluation.json: in the model folder and in the output data folder
    evaluation = json.loads((model / "evaluation.json").read_text())
    assert json.loads((job_root / "output" / "data" / "evaluation.json").read_text()) == evaluation
    assert EVALUATION_KEYS <= set(evaluation)
    test = json.loads((next((job_root / "input" / "data" / "dataset").glob("coco_test.json"))).read_text())
    assert evaluation["test_images"] == len(test["images"]) and evaluation["test_boxes"] == len(test["annotations"])
    card = json.loads((job_root / "input" / "data" / "dataset" / "card.json").read_text())
    assert evaluation["dataset_version"] == card["version"]
    for name in CLASSES:
        entry = evaluation["per_class"][name]
        assert {"ap", "ap50", "ap75", "gt_boxes"} <= set(entry)
        curve = evaluation["pr_curves"][name]
        assert len(curve["recall"]) == 101 and curve["recall"][1] == 0.01
        assert curve["precision"] is None or len(curve["precision"]) == 101
    assert len(evaluation["images"]) == len(test["images"])
    for image in evaluation["images"]:
        assert image["video_id"] and set(image["counts"]) == set(CLASSES)
        for d in image["detections"]:
            assert {"category", "bbox", "score", "tp50"} <= set(d)
    matrix = evaluation["confusion_matrix"]
    assert matrix["labels"] == [*CLASSES, "background"] and len(matrix["matrix"]) == 4


def test_ap50_recomputed_from_the_per_frame_records_equals_pycocotools(trained):
    _, job_root = trained
    evaluation = json.loads((job_root / "model" / "evaluation.json").read_text())
    recomputed = _coco_eval().ap50_from_images(evaluation["images"], list(CLASSES))
    assert recomputed["map50"] == pytest.approx(evaluation["map50"], abs=1e-5)


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


def test_a_second_job_resumes_from_the_checkpoint(tmp_path, trained, data):
    _, first_root = trained
    dataset, frames = data
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for path in (first_root / "checkpoints").iterdir():  # what CheckpointConfig restores from S3
        (checkpoints / path.name).write_bytes(path.read_bytes())
    proc, job_root = run_job(tmp_path, {"dataset": dataset, "frames": frames}, {**FAST, "epochs": 2},
                             checkpoints=checkpoints)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from epoch 1" in proc.stdout
    assert not re.search(r"^epoch=1 ", proc.stdout, re.MULTILINE)
    assert re.search(r"^epoch=2 ", proc.stdout, re.MULTILINE)
    assert json.loads((job_root / "model" / "evaluation.json").read_text())["epochs_run"] == 2


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


def run_processing(root: Path, command: str, args: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    """``entrypoint.py evaluate|predict`` as the local SageMaker runs a Processing job of the trainer image."""
    image = parse_dockerfile("surgical-mlops/trainer", FOLDER)
    env = base_environment(root, image, {})
    proc = subprocess.run(image.command(None, [command, *args]), cwd=image.workdir, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, root


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
