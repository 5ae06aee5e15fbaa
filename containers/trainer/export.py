"""Export for the inference container: TorchScript (``model.ts``) always, and ONNX (``model.onnx``) when it checks out.

``model.ts`` is ``torch.jit.script`` of a small wrapper around the detector (scripting keeps the data-dependent parts:
resize, anchors, NMS, postprocessing). ``model.onnx`` is the same graph traced by the TorchScript-based ONNX exporter
(``dynamo=False``: torch 2.14's dynamo exporter needs onnxscript and does not export torchvision's SSD postprocessing)
with one change: SSD's default-box generator is swapped for :class:`TraceableDefaultBoxGenerator`, because tracing
torchvision's freezes the default boxes of the example's aspect ratio (frames of another shape got boxes off by
100 px). ONNX Runtime runs it 3x faster than eager PyTorch on one CPU thread. It is written only when ``onnx`` and
``onnxruntime`` are installed and it matches the PyTorch model on the example at three shapes (:data:`TOLERANCE`);
otherwise the reason is in ``model_config.json`` and the container serves ``model.ts``. Both files' contract:

    boxes, labels, scores = module(image)
    image:  float32 [3, H, W], RGB in [0, 1], the original frame (the module resizes it to the training size)
    boxes:  float32 [N, 4], x1 y1 x2 y2 in the input frame's pixels
    labels: int64 [N], model labels 1..K (``model_config.json`` "classes" maps them to names and COCO ids)
    scores: float32 [N], highest first; keep those >= the config's score_threshold

``python export.py check --model-dir DIR --image FRAME.jpg`` loads ``model.pt`` into a fresh model, runs it and the
export on the frame and prints the largest difference (JSON; ``"onnx"``: the same for ``model.onnx``); the trainer
runs the same check after exporting.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

ONNX_FILE = "model.onnx"
# ONNX vs PyTorch on the detections scoring >= min_score (below it near-ties may swap places): same count and labels,
# boxes within box_px pixels of the input frame, scores within score.
TOLERANCE = {"box_px": 0.05, "score": 1e-4, "min_score": 0.05}


class ExportedDetector(torch.nn.Module):
    """One image in, (boxes, labels, scores) out: the detector without its list/dict interface (for scripting)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Scripted torchvision detectors return (losses, detections); see torchvision's GeneralizedRCNN/SSD.forward.
        _losses, detections = self.model([image])
        d = detections[0]
        return d["boxes"], d["labels"], d["scores"]


class TracedDetector(torch.nn.Module):
    """The same for tracing, where the detector in eval mode returns the detections alone."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.model([image])[0]
        return d["boxes"], d["labels"], d["scores"]


class TraceableDefaultBoxGenerator(DefaultBoxGenerator):
    """torchvision's SSD default boxes computed from the feature maps' shapes as tensors, so a traced graph keeps
    them dynamic (the original builds them from Python ints and ``torch.tensor``, which tracing records as constants).
    Same boxes, same order: per location, the ``_wh_pairs`` of its level."""

    def forward(self, image_list: Any, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        images = image_list.tensors
        shape = torch._shape_as_tensor(images)
        x_y_size = torch.stack([shape[-1], shape[-2]]).to(images.dtype)
        levels = []
        for k, feature_map in enumerate(feature_maps):
            size = torch._shape_as_tensor(feature_map)
            h, w = size[-2], size[-1]
            xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w.to(torch.float32)
            ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h.to(torch.float32)
            cx, cy = xs[None, :] + ys[:, None] * 0, ys[:, None] + xs[None, :] * 0  # broadcast to [h, w]
            centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)
            wh = self._wh_pairs[k].clamp(min=0, max=1) if self.clip else self._wh_pairs[k]
            centres, sizes = centres[:, None, :] + wh[None] * 0, wh[None] + centres[:, None, :] * 0
            levels.append(torch.cat([centres, sizes], dim=-1).reshape(-1, 4))
        boxes = torch.cat(levels, dim=0).to(images.dtype)
        centre, half = boxes[:, :2], 0.5 * boxes[:, 2:]
        xyxy = torch.cat([(centre - half) * x_y_size, (centre + half) * x_y_size], -1)
        return [xyxy for _ in image_list.image_sizes]


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def export_format() -> str:
    """The format the inference container will serve (when the ONNX export checks out)."""
    return "onnx" if onnx_available() else "torchscript"


def export(model: torch.nn.Module, model_dir: Path, example: torch.Tensor) -> dict[str, Any]:
    """Write ``model.ts`` and, when it checks out, ``model.onnx`` for ``model`` (moved to the CPU, eval mode).

    Returns the TorchScript file's description (what ``compare`` checks) with an ``"onnx"`` entry: the file and its
    check, or the error that kept it out."""
    model = model.to("cpu").eval()
    path = model_dir / "model.ts"
    torch.jit.script(ExportedDetector(model)).save(str(path))
    described: dict[str, Any] = {
        "format": "torchscript", "file": path.name,
        "input": "float32 [3, H, W] RGB in [0, 1], the original frame (resized inside the model)",
        "outputs": ["boxes float32 [N, 4] x1 y1 x2 y2 in input pixels", "labels int64 [N] (model labels)",
                    "scores float32 [N]"]}
    if onnx_available():
        described["onnx"] = export_onnx(model, model_dir / ONNX_FILE, example)
    else:
        described["onnx"] = {"error": "onnx or onnxruntime is not installed"}
    return described


def export_onnx(model: torch.nn.Module, path: Path, example: torch.Tensor) -> dict[str, Any]:
    """Trace ``model`` to ``path`` and check it at the example's shape, a square and a portrait; removes the file
    and returns ``{"error": ...}`` when the export fails or differs from the PyTorch model beyond :data:`TOLERANCE`."""
    traced = copy.deepcopy(model)
    generator = getattr(traced, "anchor_generator", None)
    if isinstance(generator, DefaultBoxGenerator):
        traced.anchor_generator = TraceableDefaultBoxGenerator(generator.aspect_ratios, clip=generator.clip,
                                                               scales=generator.scales, steps=generator.steps)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values: checked below instead
            torch.onnx.export(TracedDetector(traced).eval(), (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["image"], output_names=["boxes", "labels", "scores"],
                              dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"},
                                            "labels": {0: "n"}, "scores": {0: "n"}})
        exported = load_export_file(path, "onnx")
        h, w = example.shape[-2:]
        shapes = [(h, w), (max(h, w), max(h, w)), (w, h)]
        checks = [compare_detections(model, exported, _resized(example, size)) for size in shapes]
    except Exception as exc:  # any exporter or runtime failure: the TorchScript file serves instead
        path.unlink(missing_ok=True)
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    failed = [c for c in checks if not c["within_tolerance"]]
    if failed:
        path.unlink(missing_ok=True)
        return {"error": f"differs from the PyTorch model: {failed[0]}", "checks": checks}
    return {"file": path.name, "runtime": "onnxruntime", "opset": 17, "tolerance": TOLERANCE, "checks": checks}


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


class OnnxExport:
    """``model.onnx`` in ONNX Runtime, called like the TorchScript module (torch tensors in and out)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, labels, scores = self.session.run(None, {"image": image.detach().cpu().numpy()})
        return torch.from_numpy(boxes), torch.from_numpy(labels), torch.from_numpy(scores)


def load_export_file(path: Path, fmt: str) -> Any:
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    if fmt == "onnx":
        return OnnxExport(path)
    raise ValueError(f"unknown export format {fmt!r}")


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


def compare_detections(model: torch.nn.Module, exported: Any, image: torch.Tensor,
                       tolerance: dict[str, float] = TOLERANCE) -> dict[str, Any]:
    """:func:`compare` on the detections scoring >= ``tolerance["min_score"]``, with the verdict."""
    model = model.to("cpu").eval()
    with torch.inference_mode():
        eager = model([image])[0]
        boxes, labels, scores = exported(image)
    keep, keep_export = eager["scores"] >= tolerance["min_score"], scores >= tolerance["min_score"]
    result: dict[str, Any] = {"shape": list(image.shape[-2:]), "detections": int(keep.sum()),
                              "export_detections": int(keep_export.sum()), "labels_equal": False,
                              "max_box_diff": None, "max_score_diff": None, "within_tolerance": False}
    if result["detections"] == result["export_detections"]:
        result["labels_equal"] = bool(torch.equal(labels[keep_export], eager["labels"][keep]))
        n = result["detections"]
        result["max_box_diff"] = float((boxes[keep_export] - eager["boxes"][keep]).abs().max()) if n else 0.0
        result["max_score_diff"] = float((scores[keep_export] - eager["scores"][keep]).abs().max()) if n else 0.0
        result["within_tolerance"] = (result["labels_equal"] and result["max_box_diff"] <= tolerance["box_px"]
                                      and result["max_score_diff"] <= tolerance["score"])
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
    image = read_image(args.image)
    result = compare(model, load_export(args.model_dir), image)
    if (args.model_dir / ONNX_FILE).is_file() and onnx_available():
        result["onnx"] = compare_detections(model, load_export_file(args.model_dir / ONNX_FILE, "onnx"), image)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
