"""A detector model folder for the inference tests, made the way the trainer writes one (no training: seconds).

``build_model`` is the trainer's; its BatchNorm statistics are set from a few synthetic frames and its heads drawn
at random, so the untrained network gives distinct scores (straight from ``build_model`` every anchor scores the
same, and the order among ties is arbitrary in any runtime). ``model.ts``/``model.onnx`` come from the trainer's
``export.export``, so the ONNX check and the files are exactly what a training job produces.
"""

from __future__ import annotations

import functools
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TRAINER = REPO / "containers" / "trainer"
INFERENCE = REPO / "containers" / "inference"
CLASSES = ("scalpel", "retractor", "tumor")


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


def calibrated_model(image_size: int = 128, seed: int = 0):
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
    frames = [torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in synthetic_frames(4, 160, 96, seed)]
    model.train()
    with torch.no_grad():
        images, _ = model.transform(frames)
        model.head(list(model.backbone(images.tensors).values()))
    return model.eval()


def write_model_dir(folder: Path, model=None, image_size: int = 128) -> Path:
    """model.pt, model.ts, model.onnx and model_config.json as ``train.write_outputs`` writes them."""
    import torch

    _, export = trainer_modules()
    model = model if model is not None else calibrated_model(image_size)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    example = torch.from_numpy(synthetic_frames(1, 160, 96)[0]).permute(2, 0, 1).float().div(255)
    described = export.export(model, folder, example)
    config = {"schema": "surgical-mlops/model-config/v1", "model": "ssdlite320_mobilenet_v3_large",
              "model_kwargs": {}, "num_classes": len(CLASSES) + 1, "image_size": image_size,
              "classes": [{"name": n, "category_id": i + 1, "label": i + 1} for i, n in enumerate(CLASSES)],
              "score_threshold": 0.3, "export": described,
              "hyperparameters": {"anchor_min_ratio": 0.2, "image_size": image_size}}
    (folder / "model_config.json").write_text(json.dumps(config, indent=1))
    return folder


@functools.cache
def shared_model_dir() -> Path:
    """One model folder per test process (unit and integration tests use the same one)."""
    return write_model_dir(Path(tempfile.mkdtemp(prefix="inference-model-")) / "model")


def model_archive(folder: Path) -> bytes:
    """``model.tar.gz`` as SageMaker Training uploads it: the folder's files at the archive's root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


def jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()
