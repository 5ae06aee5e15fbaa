"""payload.py on its own: request parsing and the answer, with exact statuses and messages (the inference
container's request handling; the app around it: test_inference.py). It needs numpy and Pillow only."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from tests.inference_model import INFERENCE, png


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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
