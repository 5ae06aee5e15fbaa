"""The inference container's WSGI app and runtimes: content types, options, batches, errors, and the served ONNX
model against the PyTorch model (eager, as the trainer builds it) within the export's tolerance."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import torch
from PIL import Image
from werkzeug.test import Client

from tests.inference_model import CLASSES, INFERENCE, jpeg, png, shared_model_dir, synthetic_frames, trainer_modules

sys.path.insert(0, str(INFERENCE))
import detector as detectors
import server

# Served boxes vs the PyTorch model: the export's tolerance (0.05 px) plus the answer's rounding to 0.01 px.
BOX_TOLERANCE_PX = 0.05 + 0.005
SCORE_TOLERANCE = 1e-4 + 5e-6


@pytest.fixture(scope="module")
def model_dir():
    return shared_model_dir()


@pytest.fixture(scope="module")
def onnx_detector(model_dir):
    return detectors.load_detector(model_dir, "auto")


@pytest.fixture(scope="module")
def client(onnx_detector):
    return Client(server.InferenceApp(onnx_detector, max_payload=200_000, max_pixels=2_000_000))


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(3)


def _invoke(client, body, content_type="image/jpeg", headers=None, query=""):
    response = client.post(f"/invocations{query}", data=body, headers={"Content-Type": content_type,
                                                                         **(headers or {})})
    return response.status_code, json.loads(response.get_data())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_ping_answers_once_the_model_is_loaded(client, model_dir):
    response = client.get("/ping")
    assert response.status_code == 200 and response.json["runtime"] == "onnx"
    assert (model_dir / "model.onnx").is_file()


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/x-image", "image/jpeg; charset=binary"])
def test_a_jpeg_gets_detections_in_the_frame_s_pixels(client, frames, content_type):
    status, body = _invoke(client, jpeg(frames[0]), content_type, headers={"X-Amzn-SageMaker-Custom-Attributes":
                                                                          "score_threshold=0"})
    assert status == 200, body
    assert (body["width"], body["height"]) == (320, 320)
    assert len(body["detections"]) == 100
    scores = [d["score"] for d in body["detections"]]
    assert scores == sorted(scores, reverse=True)
    for d in body["detections"]:
        assert d["label"] in CLASSES and d["category_id"] == CLASSES.index(d["label"]) + 1
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 320 and 0 <= y1 <= y2 <= 320


def test_png_and_jpeg_of_the_same_frame_both_work(client, frames):
    assert _invoke(client, png(frames[1]), "image/png")[0] == 200


def test_json_single_image_and_batches(client, frames):
    images = [_b64(jpeg(f)) for f in frames]
    status, single = _invoke(client, json.dumps({"image": images[0]}), "application/json")
    assert status == 200 and "detections" in single
    status, batch = _invoke(client, json.dumps({"instances": [{"image": i} for i in images]}), "application/json")
    assert status == 200 and len(batch["predictions"]) == 3
    assert batch["predictions"][0] == single
    status, listed = _invoke(client, json.dumps([{"image": i} for i in images[:2]]), "application/json")
    assert status == 200 and listed["predictions"] == batch["predictions"][:2]
    status, data_url = _invoke(client, json.dumps({"image": "data:image/jpeg;base64," + images[0]}),
                               "application/json")
    assert status == 200 and data_url == single


def test_score_threshold_and_max_detections_per_request(client, frames):
    image = jpeg(frames[0])
    _, everything = _invoke(client, image, headers={"X-Amzn-SageMaker-Custom-Attributes": "score_threshold=0"})
    cut = everything["detections"][9]["score"]
    _, by_header = _invoke(client, image, headers={"X-Amzn-SageMaker-Custom-Attributes":
                                                   f"score_threshold={cut},max_detections=5"})
    assert by_header["detections"] == everything["detections"][:5]
    _, by_query = _invoke(client, image, query=f"?score_threshold={cut}")
    assert by_query["detections"] == [d for d in everything["detections"] if d["score"] >= cut]
    # JSON fields win over the header
    _, by_json = _invoke(client, json.dumps({"image": _b64(image), "max_detections": 2, "score_threshold": 0}),
                         "application/json", headers={"X-Amzn-SageMaker-Custom-Attributes": "max_detections=7"})
    assert by_json["detections"] == everything["detections"][:2]
    # the default: the model's threshold from model_config.json (0.3 in the test model)
    _, default = _invoke(client, image)
    assert default["detections"] == [d for d in everything["detections"] if d["score"] >= 0.3]


@pytest.mark.parametrize(("body", "content_type", "headers", "status", "message"), [
    (b"hello", "text/plain", {}, 415, "unsupported content type"),
    (b"", "image/jpeg", {}, 400, "empty body"),
    (b"\xff\xd8\xff\xe0 truncated", "image/jpeg", {}, 400, "cannot decode"),
    (b"not json", "application/json", {}, 400, "not valid JSON"),
    (b'{"image": "***"}', "application/json", {}, 400, "not valid base64"),
    (b'{"image": ""}', "application/json", {}, 400, "non-empty base64"),
    (b'{"picture": "abc"}', "application/json", {}, 400, "expected"),
    (b'{"instances": []}', "application/json", {}, 400, "non-empty list"),
    (b'{"instances": [1]}', "application/json", {}, 400, "each instance"),
    (b"JPEG", "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "score_threshold=2"}, 400, "score_threshold"),
    (b"JPEG", "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "max_detections=x"}, 400, "max_detections"),
    (b"JPEG", "image/jpeg", {"Accept": "text/csv"}, 406, "cannot answer"),
    (b"x" * 200_001, "image/jpeg", {}, 413, "over the limit"),
])
def test_bad_requests_get_their_status_and_a_json_error(client, frames, body, content_type, headers, status,
                                                         message):
    if body == b"JPEG":
        body = jpeg(frames[0])
    got, answer = _invoke(client, body, content_type, headers)
    assert got == status and message in answer["error"]
    assert client.get("/ping").status_code == 200


def test_frames_over_the_pixel_limit_are_refused_before_decoding(client):
    big = png(np.zeros((1500, 1500, 3), np.uint8))  # 2.25 MP, compresses to a few KB
    status, answer = _invoke(client, big, "image/png")
    assert status == 413 and "pixels" in answer["error"]


def test_unknown_routes_and_methods(client):
    assert client.get("/invocations").status_code == 405
    assert client.post("/predict").status_code == 404
    assert client.post("/ping").status_code == 405


def test_a_failing_model_answers_500_and_the_app_keeps_serving(onnx_detector, frames):
    class Broken:
        runtime, score_threshold, names, category_ids = "broken", 0.5, {}, {}

        def __call__(self, image):
            raise RuntimeError("boom")

    client = Client(server.InferenceApp(Broken()))
    status, answer = _invoke(client, jpeg(frames[0]))
    assert status == 500 and answer == {"error": "internal error while running the model"}
    assert client.get("/ping").status_code == 200


@pytest.fixture(scope="module")
def eager_model(model_dir):
    """The trainer's model from model.pt: the reference every runtime is held to."""
    train, _ = trainer_modules()
    config = json.loads((model_dir / "model_config.json").read_text())
    model = train.build_model(config["model"], len(config["classes"]), config["image_size"], config["model_kwargs"])
    model.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


@pytest.mark.parametrize("size", [(320, 320), (360, 640), (640, 360)])
def test_served_onnx_boxes_match_the_pytorch_model(client, eager_model, size):
    """Through the whole app (decode, ONNX Runtime, JSON) against the trainer's eager model on the same pixels."""
    frame = synthetic_frames(1, width=size[1], height=size[0], seed=9)[0]
    data = png(frame)  # lossless: both sides see the same pixels
    status, served = _invoke(client, data, "image/png", {"X-Amzn-SageMaker-Custom-Attributes": "score_threshold=0.05"})
    assert status == 200
    with torch.inference_mode():
        eager = eager_model([torch.from_numpy(frame).permute(2, 0, 1).float().div(255)])[0]
    keep = eager["scores"] >= 0.05
    assert len(served["detections"]) == int(keep.sum()) > 10
    reference = [{"label": CLASSES[int(label) - 1], "score": float(score), "box": box.tolist()}
                 for box, label, score in zip(eager["boxes"][keep], eager["labels"][keep], eager["scores"][keep],
                                              strict=True)]
    box_diff, score_diff = _largest_differences(served["detections"], reference)
    assert box_diff <= BOX_TOLERANCE_PX and score_diff <= SCORE_TOLERANCE


def _largest_differences(served: list[dict], reference: list[dict]) -> tuple[float, float]:
    """Pair each reference detection with the unused served one of its label nearest in box (near-equal scores may
    come out in either order); the largest box and score differences over the pairs."""
    unused, box_diff, score_diff = list(range(len(served))), 0.0, 0.0
    for ref in reference:
        candidates = [j for j in unused if served[j]["label"] == ref["label"]]
        assert candidates, ref
        j = min(candidates, key=lambda j: np.abs(np.subtract(served[j]["box"], ref["box"])).max())
        unused.remove(j)
        box_diff = max(box_diff, float(np.abs(np.subtract(served[j]["box"], ref["box"])).max()))
        score_diff = max(score_diff, abs(served[j]["score"] - ref["score"]))
    return box_diff, score_diff


@pytest.mark.parametrize("runtime", ["torchscript", "eager"])
def test_the_torch_runtimes_give_the_same_detections(model_dir, onnx_detector, runtime):
    """The container's own eager builder (it does not carry the trainer's code) and model.ts agree with ONNX."""
    other = detectors.load_detector(model_dir, runtime)
    image = synthetic_frames(1, seed=3)[0].transpose(2, 0, 1).astype(np.float32) / 255
    a, b = _as_dicts(onnx_detector(image)), _as_dicts(other(image))
    assert len(a) == len(b) > 0
    box_diff, score_diff = _largest_differences(a, b)
    assert box_diff <= 0.05 and score_diff <= 1e-4


def _as_dicts(detections, min_score: float = 0.05) -> list[dict]:
    return [{"label": int(label), "score": float(score), "box": box.tolist()} for box, label, score
            in zip(detections.boxes, detections.labels, detections.scores, strict=True) if score >= min_score]


def test_the_trainer_export_records_the_onnx_check(model_dir):
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["export"]["format"] == "torchscript" and config["export"]["file"] == "model.ts"
    onnx = config["export"]["onnx"]
    assert onnx["file"] == "model.onnx" and len(onnx["checks"]) == 3
    assert all(c["within_tolerance"] for c in onnx["checks"])


def test_a_missing_model_is_a_clear_load_error(tmp_path):
    with pytest.raises(detectors.ModelLoadError, match="cannot read"):
        detectors.load_detector(tmp_path)
    (tmp_path / "model_config.json").write_text("{}")
    with pytest.raises(detectors.ModelLoadError, match="no model in"):
        detectors.load_detector(tmp_path)


def test_the_model_folder_comes_from_sm_model_dir():
    assert str(detectors.model_dir({"SM_MODEL_DIR": "/tmp/x"})) == "/tmp/x"
    assert str(detectors.model_dir({})) == "/opt/ml/model"


def test_entrypoint_wants_serve():
    proc = subprocess.run([sys.executable, str(INFERENCE / "entrypoint.py"), "train"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "expected 'serve'" in proc.stderr


# -- payload.py on its own: request parsing and the answer, with exact statuses and messages -------------------------
def _load_payload():
    """payload.py by its file, registered under its repository name (what mutation testing's trampolines check);
    the server imports the same file as ``payload`` from the container's folder."""
    spec = importlib.util.spec_from_file_location("containers.inference.payload", INFERENCE / "payload.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


payload = _load_payload()
IMAGE_TYPES_TEXT = "image/jpeg, image/png, application/x-image, application/json"


def _pixels(width: int = 4, height: int = 5) -> np.ndarray:
    return (np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3) * 7) % 251


def _refused(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(payload.RequestError) as info:
        call(*args, **kwargs)
    assert str(info.value) == info.value.message
    return info.value.status, info.value.message


def test_payload_media_type():
    assert payload.media_type("Image/JPEG; charset=binary") == "image/jpeg"
    assert payload.media_type("image/png ;a=1;b=2") == "image/png"
    assert payload.media_type("image/png") == "image/png"
    assert payload.media_type(None) == "" and payload.media_type("") == ""


def test_payload_decodes_a_frame_to_the_models_input():
    pixels = _pixels()
    image = payload.decode_image(png(pixels), max_pixels=20)  # exactly at the limit: accepted
    assert image.dtype == np.float32 and image.shape == (3, 5, 4)
    np.testing.assert_array_equal(image, pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    assert payload.decode_image(png(_pixels(1, 1)), max_pixels=1).shape == (3, 1, 1)
    # grey and RGBA frames come out as RGB
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0], mode="L").save(buffer, format="PNG")
    grey = payload.decode_image(buffer.getvalue(), max_pixels=100)
    np.testing.assert_array_equal(grey, np.repeat(pixels[None, :, :, 0], 3, 0).astype(np.float32) / np.float32(255))


def test_payload_refuses_what_is_not_a_frame_or_too_large(monkeypatch):
    assert _refused(payload.decode_image, b"", 100) == (400, "empty image")
    assert _refused(payload.decode_image, png(_pixels()), 19) == (413, "image of 4x5 pixels is over the limit of 19")
    assert _refused(payload.decode_image, b"GIF89a not really", 100) == (
        400, "cannot decode the image: UnidentifiedImageError")
    bomb = "Image size (20 pixels) exceeds limit of 10 pixels, could be decompression bomb DOS attack."
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # PIL's warning (over the limit) is an error here
    assert _refused(payload.decode_image, png(_pixels()), 1000) == (413, f"image is over the pixel limit: {bomb}")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5)  # PIL's error (over twice the limit)
    assert _refused(payload.decode_image, png(_pixels()), 1000) == (
        413, "image is over the pixel limit: Image size (20 pixels) exceeds limit of 10 pixels, could be "
             "decompression bomb DOS attack.")


def test_payload_decoding_warns_about_nothing_else(monkeypatch):
    """Only PIL's decompression-bomb warning is an error: any other warning while decoding leaves the frame alone."""
    original = Image.Image.convert

    def noisy(self, *args, **kwargs):
        import warnings

        warnings.warn("a harmless note", UserWarning, stacklevel=2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", noisy)
    with pytest.warns(UserWarning, match="harmless"):
        assert payload.decode_image(png(_pixels()), 100).shape == (3, 5, 4)


def test_payload_a_frame_without_pixels_is_refused(monkeypatch):
    class Empty:  # a decoder that reports a frame of no columns (no PIL format writes one)
        size = (0, 4)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def convert(self, mode):
            return Image.new(mode, (0, 4))

    monkeypatch.setattr(Image, "open", lambda data: Empty())
    assert _refused(payload.decode_image, b"frame", 100) == (400, "cannot decode the image: no pixels")


def test_payload_attributes_header():
    assert payload.parse_attributes("score_threshold=0.3,max_detections=10") == {"score_threshold": "0.3",
                                                                                 "max_detections": "10"}
    assert payload.parse_attributes(" a = 1 ; b=2;; c ,=4, d=x=y") == {"a": "1", "b": "2", "d": "x=y"}
    assert payload.parse_attributes(None) == {} and payload.parse_attributes("") == {}


def test_payload_options_first_source_wins_and_defaults():
    assert payload.parse_options([], 0.4) == payload.Options(0.4, 100)
    assert payload.parse_options([{"score_threshold": "", "max_detections": None},
                                  {"score_threshold": "0.25", "max_detections": "7"},
                                  {"score_threshold": "0.9", "max_detections": "9"}], 0.4) == payload.Options(0.25, 7)
    assert payload.parse_options([{"score_threshold": 0, "max_detections": 1}], 0.4) == payload.Options(0.0, 1)
    assert payload.parse_options([{"score_threshold": "1", "max_detections": 100}], 0.4) == payload.Options(1.0, 100)


@pytest.mark.parametrize("source", [{"score_threshold": "x"}, {"score_threshold": [1]}, {"score_threshold": 1.01},
                                    {"score_threshold": 1.5}, {"score_threshold": -0.01}])
def test_payload_bad_score_threshold(source):
    assert _refused(payload.parse_options, [source], 0.3) == (400, "score_threshold must be a number in [0, 1]")


@pytest.mark.parametrize("source", [{"max_detections": "x"}, {"max_detections": "2.5"}, {"max_detections": 3.0},
                                    {"max_detections": 0}, {"max_detections": 101}, {"max_detections": "-1"}])
def test_payload_bad_max_detections(source):
    assert _refused(payload.parse_options, [source], 0.3) == (400, "max_detections must be an integer in [1, 100]")


def _request(body, content_type="application/json", attributes=None, query=None, max_pixels=1000):
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    return payload.parse_request(body, content_type, attributes, query, 0.3, max_pixels)


def test_payload_request_of_a_raw_frame_with_header_and_query_options():
    pixels = _pixels()
    request = _request(png(pixels), "image/png", "max_detections=4", "max_detections=9&score_threshold=0.5")
    assert request.batch is False and request.options == payload.Options(0.5, 4)
    assert len(request.images) == 1
    np.testing.assert_array_equal(request.images[0], payload.decode_image(png(pixels), 1000))
    assert _refused(_request, png(pixels), "image/png", max_pixels=19)[0] == 413
    assert _request(png(pixels), "application/x-image").options == payload.Options(0.3, 100)


def test_payload_request_json_forms():
    image = _b64(png(_pixels()))
    single = _request({"image": image, "max_detections": 2}, attributes="max_detections=5,score_threshold=0.1")
    assert single.batch is False and len(single.images) == 1 and single.options == payload.Options(0.1, 2)
    batch = _request({"instances": [{"image": image}, {"image": "data:image/png;base64," + image}],
                      "score_threshold": 0.2}, "Application/JSON; charset=utf-8", query="score_threshold=0.9")
    assert batch.batch is True and len(batch.images) == 2 and batch.options == payload.Options(0.2, 100)
    np.testing.assert_array_equal(batch.images[0], batch.images[1])
    listed = _request([{"image": image, "score_threshold": 0.8}] * 32, attributes="score_threshold=0.6")
    assert listed.batch is True and len(listed.images) == 32 and listed.options == payload.Options(0.6, 100)


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"x", "text/plain", 415, f"unsupported content type text/plain; use one of {IMAGE_TYPES_TEXT}"),
    (b"x", None, 415, f"unsupported content type (none); use one of {IMAGE_TYPES_TEXT}"),
    (b"", "application/json", 400, "empty body"),
    (b"", "image/png", 400, "empty body"),
    (b"{no", "application/json", 400, "body is not valid JSON: JSONDecodeError"),
    (b'"\xff"', "application/json", 400, "body is not valid JSON: UnicodeDecodeError"),
    (b"5", "application/json", 400, 'expected {"image": <base64>}, {"instances": [{"image": ...}, ...]} or a list'),
    (b'"instances image"', "application/json", 400,
     'expected {"image": <base64>}, {"instances": [{"image": ...}, ...]} or a list'),
    ({"picture": "x"}, "application/json", 400,
     'expected {"image": <base64>}, {"instances": [{"image": ...}, ...]} or a list'),
    ([], "application/json", 400, "'instances' must be a non-empty list"),
    ({"instances": []}, "application/json", 400, "'instances' must be a non-empty list"),
    ({"instances": "abc"}, "application/json", 400, "'instances' must be a non-empty list"),
    ([{"image": "x"}] * 33, "application/json", 413, "33 images in one request; at most 32"),
    ([{"image": "x"}, 1], "application/json", 400, 'each instance must be an object {"image": <base64>}'),
    ([{"picture": "x"}], "application/json", 400, "'image' must be a non-empty base64 string"),
    ({"image": ""}, "application/json", 400, "'image' must be a non-empty base64 string"),
    ({"image": 5}, "application/json", 400, "'image' must be a non-empty base64 string"),
    ({"image": "***"}, "application/json", 400, "'image' is not valid base64"),
    ({"image": "data:image/png;base64"}, "application/json", 400, "'image' is not valid base64"),
    ({"image": "data:image/png,x," + base64.b64encode(b"abc").decode()}, "application/json", 400,
     "'image' is not valid base64"),
    ({"image": base64.b64encode(b"abc").decode()}, "application/json", 400,
     "cannot decode the image: UnidentifiedImageError"),
])
def test_payload_bad_requests(body, content_type, status, message):
    assert _refused(_request, body, content_type) == (status, message)


def test_payload_detections_json_sorts_cuts_and_names():
    scores = np.array([0.5] * 20 + [0.123456789, 0.9] + [0.5] * 20, np.float32)
    labels = np.arange(len(scores)) % 3 + 1
    boxes = np.array([[i + 0.123456, i + 0.5, i + 10.987654, i + 20.004999] for i in range(len(scores))])
    detections = types.SimpleNamespace(scores=scores, labels=labels, boxes=boxes)
    image = np.zeros((3, 48, 64), np.float32)
    answer = payload.detections_json(detections, {1: "scalpel", 2: "retractor"}, {1: 11, 3: 33}, image,
                                     payload.Options(0.5, 5))
    assert (answer["width"], answer["height"]) == (64, 48)
    assert [d["score"] for d in answer["detections"]] == [round(float(np.float32(0.9)), 5)] + [0.5] * 4
    # ties keep the model's order (a stable sort), the threshold keeps scores equal to it
    assert answer["detections"][1:] == [
        {"label": name, "category_id": category, "score": 0.5,
         "box": [round(i + 0.123456, 2), round(i + 0.5, 2), round(i + 10.987654, 2), round(i + 20.004999, 2)]}
        for i, name, category in ((0, "scalpel", 11), (1, "retractor", None), (2, "3", 33), (3, "scalpel", 11))]
    assert answer["detections"][0] == {"label": "scalpel", "category_id": 11, "score": 0.9,
                                       "box": [21.12, 21.5, 31.99, 41.0]}
    everything = payload.detections_json(detections, {}, {}, image, payload.Options(0.0, 100))
    assert len(everything["detections"]) == len(scores)
    assert everything["detections"][-1]["score"] == 0.12346
    assert payload.detections_json(detections, {}, {}, image, payload.Options(0.95, 100))["detections"] == []
