"""A detector model folder for the inference tests, made the way the trainer writes one (no training: seconds).

``build_model`` is the trainer's; its BatchNorm statistics are set from a few synthetic frames and its heads drawn
at random, so the untrained network gives distinct scores (straight from ``build_model`` every anchor scores the
same, and the order among ties is arbitrary in any runtime). ``model.ts``/``model.onnx`` come from the trainer's
``export.export``, so the ONNX check and the files are exactly what a training job produces.

Where it is built: the trainer's code needs the trainer's packages (torch, torchvision, onnx, onnxruntime,
pycocotools, matplotlib). A process that has them all (the trainer's test environment) builds the folder itself; any
other (the Airflow environment ``.venv``, which has no torch: the integration and end-to-end tests, bench/serve.py;
the inference container's test environment, which has no onnx) makes the frames itself, since include.synthetic needs
OpenCV, which the trainer's environment lacks, saves them to an .npz and runs this file in the trainer's own
environment (``containers/trainer/.venv``, the one its training jobs run in) to build the folder from them: the same
code, packages and frames either way, so the same files.

    containers/trainer/.venv/bin/python tests/inference_model.py FOLDER --frames FRAMES.npz [--image-size N]
        [--trained DIR]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TRAINER = REPO / "containers" / "trainer"
INFERENCE = REPO / "containers" / "inference"
CLASSES = ("scalpel", "retractor", "tumor")
TRAINER_PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "pycocotools", "matplotlib")


def trainer_modules():
    if str(TRAINER) not in sys.path:
        sys.path.insert(0, str(TRAINER))
    import export
    import train

    return train, export


def synthetic_frames(count: int, width: int = 320, height: int = 320, seed: int = 5) -> list[np.ndarray]:
    """RGB uint8 frames of a generated surgical scene."""
    from include.synthetic import make_scene, render_frame

    scene = make_scene(width, height, 5.0, seed=seed)
    return [render_frame(scene, i * 4)[0] for i in range(count)]


def calibration_frames(seed: int = 0) -> list[np.ndarray]:
    """The frames the BatchNorm statistics are set from."""
    return synthetic_frames(4, 160, 96, seed)


def example_frame() -> np.ndarray:
    """The frame the export traces and checks the exports on."""
    return synthetic_frames(1, 160, 96)[0]


def calibrated_model(image_size: int = 128, seed: int = 0, frames: list[np.ndarray] | None = None):
    """The trainer's detector with BatchNorm statistics from synthetic frames and random heads."""
    import torch

    train, _ = trainer_modules()
    torch.manual_seed(seed)
    model = train.build_model("ssdlite320_mobilenet_v3_large", len(CLASSES), image_size)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0, 0.05)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # a plain average over the calibration batch
            module.reset_running_stats()
    frames = calibration_frames(seed) if frames is None else frames
    frames = [torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in frames]
    model.train()
    with torch.no_grad():
        images, _ = model.transform(frames)
        model.head(list(model.backbone(images.tensors).values()))
    return model.eval()


def write_model_dir(folder: Path, model=None, image_size: int = 128, example: np.ndarray | None = None) -> Path:
    """model.pt, model.ts, model.onnx and model_config.json as ``train.write_outputs`` writes them."""
    import torch

    _, export = trainer_modules()
    model = model if model is not None else calibrated_model(image_size)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    example = example_frame() if example is None else example
    described = export.export(model, folder, torch.from_numpy(example).permute(2, 0, 1).float().div(255))
    config = {"schema": "surgical-mlops/model-config/v1", "model": "ssdlite320_mobilenet_v3_large",
              "model_kwargs": {}, "num_classes": len(CLASSES) + 1, "image_size": image_size,
              "classes": [{"name": n, "category_id": i + 1, "label": i + 1} for i, n in enumerate(CLASSES)],
              "score_threshold": 0.3, "export": described,
              "hyperparameters": {"anchor_min_ratio": 0.2, "image_size": image_size}}
    (folder / "model_config.json").write_text(json.dumps(config, indent=1))
    return folder


def write_trained_model_dir(folder: Path, trained: Path, example: np.ndarray | None = None) -> Path:
    """A trained model folder (``model.pt`` + ``model_config.json``, as bench/train.py leaves one) exported again
    the same way: its weights, classes, image size and threshold."""
    import torch

    train, _ = trainer_modules()
    config = json.loads((trained / "model_config.json").read_text())
    model = train.build_model(config["model"], len(config["classes"]), config["image_size"],
                              config.get("model_kwargs"), config["hyperparameters"]["anchor_min_ratio"])
    model.load_state_dict(torch.load(trained / "model.pt", map_location="cpu", weights_only=True))
    write_model_dir(folder, model.eval(), config["image_size"], example)
    written = json.loads((folder / "model_config.json").read_text())  # keep the trained classes and threshold
    written.update({k: config[k] for k in ("classes", "score_threshold", "num_classes")})
    (folder / "model_config.json").write_text(json.dumps(written, indent=1))
    return folder


def has_trainer_packages() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in TRAINER_PACKAGES)


def build_model_dir(folder: Path, image_size: int = 128, trained: Path | None = None) -> Path:
    """``write_model_dir`` (or ``write_trained_model_dir`` for ``trained``) into ``folder``: here when this process
    has the trainer's packages, else in the trainer's own environment from frames made here (see the docstring)."""
    if has_trainer_packages():
        return write_trained_model_dir(folder, trained) if trained else write_model_dir(folder, None, image_size)
    from local_aws import container_envs

    python = container_envs.venv_python(TRAINER)
    if not container_envs.up_to_date(TRAINER):
        raise RuntimeError(f"{TRAINER.relative_to(REPO)}/.venv is missing or stale, and this process has no torch "
                           f"to build a model with: run 'make setup'")
    with tempfile.TemporaryDirectory(prefix="inference-model-frames-") as scratch:
        frames = Path(scratch) / "frames.npz"
        np.savez(frames, calibration=np.stack(calibration_frames()), example=example_frame())
        argv = [str(python), __file__, str(folder), "--frames", str(frames), "--image-size", str(image_size)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the trainer's env sees its own only
        proc = subprocess.run([*argv, *(["--trained", str(trained)] if trained else [])], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0 or not (folder / "model_config.json").is_file():
        raise RuntimeError(f"building the model in {python} failed (exit {proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr)[-4000:]}")
    return folder


@functools.cache
def shared_model_dir() -> Path:
    """One model folder per test process (unit and integration tests use the same one)."""
    return build_model_dir(Path(tempfile.mkdtemp(prefix="inference-model-")) / "model")


def model_archive(folder: Path) -> bytes:
    """``model.tar.gz`` as SageMaker Training uploads it: the folder's files at the archive's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """An RGB frame as JPEG, encoded with OpenCV: the Airflow environment and every test environment have it, where
    Pillow is the containers' own."""
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def png(frame: np.ndarray) -> bytes:
    """An RGB frame as PNG (lossless), with OpenCV, zlib level 6 as Pillow would write it."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    assert ok
    return data.tobytes()


def main(argv: list[str] | None = None) -> int:
    """``build_model_dir``'s other half, in the trainer's environment: the folder from the caller's frames."""
    parser = argparse.ArgumentParser(description="build a detector model folder with the trainer's code")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--frames", type=Path, required=True, help=".npz: calibration (N x H x W x 3), example")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--trained", type=Path, help="a trained model folder to export again instead")
    args = parser.parse_args(argv)
    with np.load(args.frames) as saved:
        calibration, example = list(saved["calibration"]), saved["example"]
    if args.trained:
        write_trained_model_dir(args.folder, args.trained, example)
    else:
        write_model_dir(args.folder, calibrated_model(args.image_size, frames=calibration), args.image_size, example)
    return 0


if __name__ == "__main__":
    sys.exit(main())
