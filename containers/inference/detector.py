"""The model behind the endpoint: loaded once per worker from the model folder, one frame in, detections out.

The model folder is the trainer's ``model.tar.gz`` unpacked (``/opt/ml/model``; ``$SM_MODEL_DIR`` where it is
elsewhere, as when the local SageMaker runs this container as a process): ``model_config.json`` (classes, score
threshold, export check), ``model.onnx``, ``model.ts`` and ``model.pt``. Runtimes, fastest first:

- ``onnx``: ``model.onnx`` in ONNX Runtime (3x faster than eager PyTorch on a CPU thread; the trainer writes the file
  only when it matched the PyTorch model at three frame shapes, see ``containers/trainer/export.py``);
- ``torchscript``: ``model.ts`` (what every trainer version writes);
- ``eager``: ``model.pt`` loaded into the torchvision model: the reference the others are checked against.

``$INFERENCE_RUNTIME`` picks one (default ``auto``: the first whose file is there).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL_DIR = "/opt/ml/model"
RUNTIMES = ("onnx", "torchscript", "eager")
FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "eager": "model.pt"}


class ModelLoadError(RuntimeError):
    pass


def model_dir(environ: dict[str, str] | os._Environ | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR)


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # float32 [N, 4] x1 y1 x2 y2, input pixels
    labels: np.ndarray  # int64 [N], model labels
    scores: np.ndarray  # float32 [N], highest first


class Detector:
    """A runtime of the exported model plus what ``model_config.json`` says about its labels."""

    runtime = ""

    def __init__(self, folder: Path, config: dict[str, Any], threads: int) -> None:
        self.folder, self.config, self.threads = folder, config, threads
        self.names = {c["label"]: c["name"] for c in config["classes"]}
        self.category_ids = {c["label"]: c.get("category_id") for c in config["classes"]}
        self.score_threshold = float(config.get("score_threshold", 0.5))

    def __call__(self, image: np.ndarray) -> Detections:
        """``image``: float32 [3, H, W], RGB in [0, 1]."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """One frame at load: the first request pays no lazy initialisation."""
        size = int(self.config.get("image_size", 256))
        self(np.full((3, size, size), 0.5, dtype=np.float32))


class OnnxDetector(Detector):
    runtime = "onnx"

    def __init__(self, folder: Path, config: dict[str, Any], threads: int) -> None:
        super().__init__(folder, config, threads)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One pool per worker; workers x threads = cores, so spinning threads would only steal from other workers.
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No memory arena: it keeps what the largest frame needed and grows with fragmentation (after two 40 MP frames
        # a process held 2.0 GB and had peaked at 2.4 GB); without it a worker peaks at 1.9 GB for a 40 MP frame,
        # decoding included, is back to ~95 MB after each request, and small frames are no slower
        # (bench/payload_limits.py).
        options.enable_cpu_mem_arena = False
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(folder / FILES["onnx"]), options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> Detections:
        boxes, labels, scores = self.session.run(None, {"image": image})
        return Detections(boxes, labels, scores)


class TorchDetector(Detector):
    """Shared by the TorchScript and eager runtimes: the module maps a [3, H, W] tensor to (boxes, labels, scores)."""

    def __init__(self, folder: Path, config: dict[str, Any], threads: int) -> None:
        super().__init__(folder, config, threads)
        import torch
        import torchvision  # noqa: F401 - registers torchvision::nms, which the TorchScript graph calls

        torch.set_num_threads(threads)
        self.torch = torch
        self.module = self.load()

    def load(self) -> Any:
        raise NotImplementedError

    def __call__(self, image: np.ndarray) -> Detections:
        with self.torch.inference_mode():
            boxes, labels, scores = self.module(self.torch.from_numpy(image))
        return Detections(boxes.numpy(), labels.numpy(), scores.numpy())


class TorchScriptDetector(TorchDetector):
    runtime = "torchscript"

    def load(self) -> Any:
        return self.torch.jit.load(str(self.folder / FILES["torchscript"]), map_location="cpu").eval()


class EagerDetector(TorchDetector):
    runtime = "eager"

    def load(self) -> Any:
        model = build_model(self.config)
        state = self.torch.load(self.folder / FILES["eager"], map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval()

        def forward(image: Any) -> tuple[Any, Any, Any]:
            d = model([image])[0]
            return d["boxes"], d["labels"], d["scores"]

        return forward


def build_model(config: dict[str, Any]) -> Any:
    """The trainer's ``build_model`` (containers/trainer/train.py) from ``model_config.json``: this image does not
    carry the trainer's code. The unit tests check both give the same detections."""
    import torchvision
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    name, size = config["model"], int(config["image_size"])
    kwargs = config.get("model_kwargs") or {}
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                         num_classes=int(config["num_classes"]), **kwargs)
    if name.startswith("ssd"):
        model.transform.min_size, model.transform.max_size, model.transform.fixed_size = (size,), size, None
        model.detections_per_img = 100
        ratio = float(config.get("hyperparameters", {}).get("anchor_min_ratio", 0.2))
        model.anchor_generator = DefaultBoxGenerator(model.anchor_generator.aspect_ratios, min_ratio=ratio,
                                                     max_ratio=0.95)
    return model


_CLASSES = {"onnx": OnnxDetector, "torchscript": TorchScriptDetector, "eager": EagerDetector}


def pick_runtime(folder: Path, choice: str = "auto") -> str:
    if choice != "auto":
        if choice not in RUNTIMES:
            raise ModelLoadError(f"INFERENCE_RUNTIME must be auto or one of {', '.join(RUNTIMES)}, got {choice!r}")
        return choice
    for runtime in RUNTIMES:
        if (folder / FILES[runtime]).is_file() and (runtime != "onnx" or _has_onnxruntime()):
            return runtime
    raise ModelLoadError(f"no model in {folder}: expected one of {', '.join(FILES.values())}")


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def load_detector(folder: Path, runtime: str = "auto", threads: int = 1) -> Detector:
    config_path = folder / "model_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config_path}: {exc}") from exc
    chosen = pick_runtime(folder, runtime)
    if not (folder / FILES[chosen]).is_file():
        raise ModelLoadError(f"runtime {chosen} needs {FILES[chosen]}, which is not in {folder}")
    detector = _CLASSES[chosen](folder, config, max(1, threads))
    detector.warm_up()
    return detector
