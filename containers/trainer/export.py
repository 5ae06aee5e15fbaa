"""Export for the inference container: TorchScript (``model.ts``), or ONNX (``model.onnx``) where ``onnx`` is installed.

The image pinned for the trainer has no ``onnx`` package, so the export is TorchScript: ``torch.jit.script`` of a
small wrapper around the detector (scripting keeps the data-dependent parts: resize, anchors, NMS, postprocessing).
The exported module's contract, also written to ``model_config.json``:

    boxes, labels, scores = module(image)
    image:  float32 [3, H, W], RGB in [0, 1], the original frame (the module resizes it to the training size)
    boxes:  float32 [N, 4], x1 y1 x2 y2 in the input frame's pixels
    labels: int64 [N], model labels 1..K (``model_config.json`` "classes" maps them to names and COCO ids)
    scores: float32 [N], highest first; keep those >= the config's score_threshold

``python export.py check --model-dir DIR --image FRAME.jpg`` loads ``model.pt`` into a fresh model, runs it and the
export on the frame and prints the largest difference (JSON); the trainer runs the same check after exporting.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch


class ExportedDetector(torch.nn.Module):
    """One image in, (boxes, labels, scores) out: the detector without its list/dict interface."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Scripted torchvision detectors return (losses, detections); see torchvision's GeneralizedRCNN/SSD.forward.
        _losses, detections = self.model([image])
        d = detections[0]
        return d["boxes"], d["labels"], d["scores"]


def onnx_available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def export_format() -> str:
    return "onnx" if onnx_available() else "torchscript"


def export(model: torch.nn.Module, model_dir: Path, example: torch.Tensor) -> dict[str, Any]:
    """Write ``model.ts`` (or ``model.onnx``) for ``model`` (moved to the CPU, eval mode); returns its description."""
    model = model.to("cpu").eval()
    fmt = export_format()
    if fmt == "onnx":  # pragma: no cover - onnx is not in the trainer image
        path = model_dir / "model.onnx"
        torch.onnx.export(ExportedDetector(model), (example,), str(path), input_names=["image"],
                          output_names=["boxes", "labels", "scores"],
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "labels": {0: "n"},
                                        "scores": {0: "n"}}, opset_version=17)
    else:
        path = model_dir / "model.ts"
        scripted = torch.jit.script(ExportedDetector(model))
        scripted.save(str(path))
    return {"format": fmt, "file": path.name,
            "input": "float32 [3, H, W] RGB in [0, 1], the original frame (resized inside the model)",
            "outputs": ["boxes float32 [N, 4] x1 y1 x2 y2 in input pixels", "labels int64 [N] (model labels)",
                        "scores float32 [N]"]}


def load_export_file(path: Path, fmt: str) -> Any:
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    raise NotImplementedError("checking an ONNX export needs onnxruntime")  # pragma: no cover


def load_export(model_dir: Path) -> Any:
    config = json.loads((model_dir / "model_config.json").read_text())
    return load_export_file(model_dir / config["export"]["file"], config["export"]["format"])


def compare(model: torch.nn.Module, exported: Any, image: torch.Tensor) -> dict[str, Any]:
    """Run the PyTorch model and the export on one image; the largest box/score difference and equal labels."""
    model = model.to("cpu").eval()
    with torch.inference_mode():
        eager = model([image])[0]
        boxes, labels, scores = exported(image)
    same_count = len(boxes) == len(eager["boxes"])
    result = {"detections": len(eager["boxes"]), "export_detections": len(boxes), "labels_equal": False,
              "max_box_diff": None, "max_score_diff": None}
    if same_count:
        result["labels_equal"] = bool(torch.equal(labels, eager["labels"]))
        result["max_box_diff"] = float((boxes - eager["boxes"]).abs().max()) if len(boxes) else 0.0
        result["max_score_diff"] = float((scores - eager["scores"]).abs().max()) if len(boxes) else 0.0
    return result


def read_image(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export.py", description="Check an export against its PyTorch model.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check")
    check.add_argument("--model-dir", required=True, type=Path)
    check.add_argument("--image", required=True, type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train import build_model  # the trainer's model builder: same architecture and kwargs

    config = json.loads((args.model_dir / "model_config.json").read_text())
    torch.set_num_threads(1)
    model = build_model(config["model"], len(config["classes"]), config["image_size"], config.get("model_kwargs"),
                        config["hyperparameters"]["anchor_min_ratio"])
    model.load_state_dict(torch.load(args.model_dir / "model.pt", map_location="cpu", weights_only=True))
    print(json.dumps(compare(model, load_export(args.model_dir), read_image(args.image))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
