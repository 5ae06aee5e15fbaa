"""payload.py on its own: request parsing and the answer, with exact statuses and messages (the inference
container's request handling; the app around it: test_inference.py). It needs numpy and Pillow only."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import struct
import sys
import types
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


@pytest.mark.parametrize("size", [(0, 4), (4, 0)])
def test_payload_a_frame_without_pixels_is_refused(monkeypatch, size):
    class Empty:  # a decoder that reports a frame of no columns or rows (no PIL format writes one)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def convert(self, mode):
            return Image.new(mode, size)

    asked = []
    monkeypatch.setattr(Image, "open", lambda data, formats=None: asked.append(formats) or Empty())
    Empty.size = size
    assert _refused(payload.decode_image, b"frame", 100) == (400, "cannot decode the image: no pixels")
    assert _refused(payload.read_frame, b"frame", 100) == (400, "cannot decode the image: no pixels")
    assert asked == [("JPEG", "PNG")] * 2  # Pillow tries no other decoder


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


# -- budgets: what a request may cost, checked from the headers before anything is decoded --------------------------
def png_header(width: int, height: int) -> bytes:
    """A PNG whose header (IHDR) says ``width`` x ``height`` and whose pixel data is cut short: opened, never
    decodable. The header-only checks read nothing else."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _no_decoding(monkeypatch) -> None:
    """Any pixel decoding fails the test: the checks must answer from the header."""
    def refuse(*args, **kwargs):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(Image.Image, "convert", refuse)
    monkeypatch.setattr(payload, "decode_image", refuse)


def test_payload_the_budgets_and_their_relations():
    assert (payload.MAX_BATCH, payload.MAX_PIXELS, payload.MAX_REQUEST_PIXELS) == (32, 40_000_000, 67_108_864)
    assert (payload.MAX_ASPECT_RATIO, payload.MAX_JSON_DEPTH, payload.MAX_JSON_STRUCTURE) == (10, 8, 16384)
    assert (payload.MAX_ATTRIBUTES_CHARS, payload.MAX_QUERY_CHARS) == (1024, 1024)
    assert payload.FORMATS == ("JPEG", "PNG")
    assert 32 * 1920 * 1080 <= payload.MAX_REQUEST_PIXELS  # a full batch of full-HD frames
    assert 7680 * 4320 <= payload.MAX_PIXELS <= payload.MAX_REQUEST_PIXELS  # one 8K frame, alone in a request


def test_payload_read_frame_reads_the_header_only(monkeypatch):
    data, jpeg_data = png_header(6000, 4000), jpeg_bytes(_pixels(7, 3))
    _no_decoding(monkeypatch)
    frame = payload.read_frame(data, 24_000_000)  # exactly at the limit: accepted
    assert frame == payload.Frame(data, 6000, 4000) and frame.pixels == 24_000_000
    assert _refused(payload.read_frame, data, 23_999_999) == (
        413, "image of 6000x4000 pixels is over the limit of 23999999")
    assert payload.read_frame(jpeg_data, 21) == payload.Frame(jpeg_data, 7, 3)
    assert _refused(payload.read_frame, jpeg_data, 20)[0] == 413
    assert _refused(payload.read_frame, b"", 100) == (400, "empty image")
    assert _refused(payload.read_frame, b"GIF89a not really", 100) == (400, "cannot decode the image: "
                                                                            "UnidentifiedImageError")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP", "ICO"])
def test_payload_only_jpeg_and_png_are_opened(fmt):
    buffer = io.BytesIO()
    Image.fromarray(_pixels(8, 8)).save(buffer, format=fmt)
    for call in (payload.read_frame, payload.decode_image):
        assert _refused(call, buffer.getvalue(), 1000) == (400, "cannot decode the image: UnidentifiedImageError")


@pytest.mark.parametrize(("width", "height", "accepted"), [
    (1, 10, True), (10, 1, True), (2, 20, True), (20, 2, True), (100, 1000, True), (1, 1, True),
    (1, 11, False), (11, 1, False), (2, 21, False), (21, 2, False), (1, 300, False), (64000, 60, False)])
def test_payload_frames_more_elongated_than_10_to_1_are_refused(monkeypatch, width, height, accepted):
    """The model scales the longest side down to its input size: past 10:1 the shortest could become 0 pixels, and
    ONNX Runtime fails (a 1 x 300 frame was a 500)."""
    data = png_header(width, height)
    _no_decoding(monkeypatch)
    if accepted:
        assert payload.read_frame(data, 10**7) == payload.Frame(data, width, height)
    else:
        assert _refused(payload.read_frame, data, 10**7) == (
            400, f"image of {width}x{height} pixels is more elongated than 10:1")


def test_payload_a_frame_over_the_pixel_limit_is_refused_before_its_shape():
    assert _refused(payload.read_frame, png_header(1, 300), 299) == (
        413, "image of 1x300 pixels is over the limit of 299")


def test_payload_frames_are_decoded_one_at_a_time_when_asked(monkeypatch):
    images = [_pixels(4, 5), _pixels(6, 2), _pixels(3, 3)]
    body = json.dumps([{"image": _b64(png(p))} for p in images]).encode()
    decoded = []
    original = payload.decode_image
    monkeypatch.setattr(payload, "decode_image", lambda data, max_pixels: decoded.append(max_pixels) or
                        original(data, max_pixels))
    request = payload.parse_request(body, "application/json", None, None, 0.3, 77)
    assert decoded == [] and len(request.images) == 3 and request.images.pixels == 20 + 12 + 9
    assert [(f.width, f.height) for f in request.images.frames] == [(4, 5), (6, 2), (3, 3)]
    frames = iter(request.images)
    first = next(frames)
    assert decoded == [77]  # the next frame waits for the model to be done with this one
    np.testing.assert_array_equal(first, images[0].transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    assert [f.shape for f in frames] == [(3, 2, 6), (3, 3, 3)] and decoded == [77] * 3
    np.testing.assert_array_equal(request.images[2], images[2].transpose(2, 0, 1) / np.float32(255))
    assert decoded == [77] * 4  # never cached: asked again, decoded again
    with pytest.raises(IndexError):
        request.images[3]


def test_payload_all_frames_together_have_a_pixel_budget(monkeypatch):
    """The finding: 32 PNGs of 6000 x 6000 (each under the per-frame limit) in one JSON body (4.5 MB) were all decoded
    before inference, ~14 GB and ~96 s. Now the headers say 1.15 G pixels and nothing is decoded."""
    big = _b64(png_header(6000, 6000))
    body = json.dumps({"instances": [{"image": big}] * 32}).encode()
    _no_decoding(monkeypatch)
    assert _refused(payload.parse_request, body, "application/json", None, None, 0.3, payload.MAX_PIXELS) == (
        413, f"32 images of {32 * 36_000_000} pixels in all are over the request's limit of 67108864 pixels")
    # at the budget: accepted (not decoded yet); one pixel over: refused, the raw frame as the JSON batch
    frames = json.dumps([{"image": _b64(png_header(4, 5))}, {"image": _b64(png_header(6, 2))}]).encode()
    assert payload.parse_request(frames, "application/json", None, None, 0.3, 20, 32).images.pixels == 32
    assert _refused(payload.parse_request, frames, "application/json", None, None, 0.3, 20, 31) == (
        413, "2 images of 32 pixels in all are over the request's limit of 31 pixels")
    raw = png_header(4, 5)
    assert len(payload.parse_request(raw, "image/png", None, None, 0.3, 20, 20).images) == 1
    assert _refused(payload.parse_request, raw, "image/png", None, None, 0.3, 20, 19) == (
        413, "1 images of 20 pixels in all are over the request's limit of 19 pixels")
    # the default budget is the module's
    assert _refused(payload.parse_request, json.dumps([{"image": _b64(png_header(8000, 5000))}] * 2).encode(),
                    "application/json", None, None, 0.3, 40_000_000)[1].endswith("limit of 67108864 pixels")


# -- JSON: nesting and size before the decoder runs ----------------------------------------------------------------
def test_payload_json_structure_is_the_text_outside_its_strings():
    assert payload.json_structure('{"image": "abc[[[", "score_threshold": 0.3}') == '{"": "", "": 0.3}'
    assert payload.json_structure(r'["a\"[[", "b\\", "\\\"]"]') == '["", "", ""]'  # escapes: \" \\ \\\"
    assert payload.json_structure('"unclosed [[') == ""
    assert payload.json_structure("[1, 2]") == "[1, 2]"
    limit = payload.MAX_JSON_STRUCTURE
    many = '["' + '","'.join(["x"] * limit) + '"]'  # 2 * limit quotes: split as far as the budget, then left whole
    structure = payload.json_structure(many)
    assert structure[:limit] == '["",' + '"",' * ((limit - 4) // 3) + structure[limit - (limit - 4) % 3:limit]
    assert len(structure) > limit and structure.endswith('x"]')


@pytest.mark.parametrize(("structure", "depth"), [
    ("", 0), ("0", 0), ("[]", 1), ("{}", 1), ('{"": [{"": ""}]}', 3), ("[[[]]][[]]", 3), ("[[[", 3), ("]]][[", 0),
    ("]]" + "[" * 9, 7), ("[{[{]}]}", 4), ("[" * 100, 100)])
def test_payload_json_depth(structure, depth):
    assert payload.json_depth(structure) == depth


def _nested(depth: int) -> bytes:
    return ("[" * (depth - 1) + '{"image": "x"}' + "]" * (depth - 1)).encode()


def test_payload_json_nested_past_the_budget_is_a_400():
    # 8 levels: read (and refused for what it is); 9: refused before the decoder runs
    assert _refused(_request, _nested(8))[1] == "each instance must be an object {\"image\": <base64>}"
    assert _refused(_request, _nested(9)) == (400, "JSON nested deeper than 8 levels")
    assert _refused(_request, b"[" * (6 * 1024 * 1024)) == (400, "JSON nested deeper than 8 levels")
    assert _refused(_request, b'{"a": ' * 100_000) == (400, "JSON nested deeper than 8 levels")
    # brackets in strings are not nesting
    assert _refused(_request, {"image": "[" * 100}) == (400, "'image' is not valid base64")
    assert _refused(_request, {"image": '\\"[' * 100}) == (400, "'image' is not valid base64")


def test_payload_json_over_its_structure_budget_is_a_413():
    limit = payload.MAX_JSON_STRUCTURE
    at_limit = b'{"":[' + b"0," * ((limit - 10) // 2) + b"100]}"  # "" is a string as the budget counts one
    assert len(at_limit) == limit == len(payload.json_structure(at_limit.decode()))
    assert _refused(_request, at_limit) == (
        400, 'expected {"image": <base64>}, {"instances": [{"image": ...}, ...]} or a list')
    over = at_limit[:-2] + b"0]}"
    assert _refused(_request, over) == (
        413, "JSON of more than 16384 characters outside its strings; a request needs a few hundred")
    assert _refused(_request, b"[" + b"[]," * 2_000_000 + b"[]]")[0] == 413  # 2 M empty lists, never built
    assert _refused(_request, b"[" + b'"",' * 2_000_000 + b'""]')[0] == 413  # 2 M strings
    # long strings cost nothing here: a 6 MB image is one string
    assert payload.parse_json(json.dumps({"image": "A" * (6 << 20)}).encode()) == {"image": "A" * (6 << 20)}


def test_payload_json_encodings_and_a_recursion_error(monkeypatch):
    document = {"image": "x", "max_detections": 1}
    for encoding in ("utf-8-sig", "utf-16", "utf-32"):
        assert payload.parse_json(json.dumps(document).encode(encoding)) == document

    def deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(payload.json, "loads", deep)
    assert _refused(payload.parse_json, b"[]") == (400, "body is not valid JSON: RecursionError")


# -- every other parameter --------------------------------------------------------------------------------------
def test_payload_attributes_and_query_have_a_length_limit():
    attributes = "max_detections=5," + "x" * (1024 - 17)
    assert len(attributes) == 1024 and payload.parse_attributes(attributes) == {"max_detections": "5"}
    assert _refused(payload.parse_attributes, attributes + "x") == (
        400, "X-Amzn-SageMaker-Custom-Attributes is over 1024 characters")
    query = "max_detections=5&y=" + "x" * (1024 - 19)
    assert len(query) == 1024 and payload.parse_query(query) == {"max_detections": "5", "y": "x" * 1005}
    assert _refused(payload.parse_query, query + "x") == (400, "the query string is over 1024 characters")
    assert payload.parse_query(None) == {} and payload.parse_query("") == {}
    image = png(_pixels())
    assert _refused(_request, image, "image/png", attributes=attributes + ",")[0] == 400
    assert _refused(_request, image, "image/png", query=query + "&")[0] == 400


@pytest.mark.parametrize(("source", "message"), [
    ({"score_threshold": True}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": False}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": float("nan")}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": "nan"}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": float("inf")}, "score_threshold must be a number in [0, 1]"),
    ({"score_threshold": {"a": 1}}, "score_threshold must be a number in [0, 1]"),
    ({"max_detections": True}, "max_detections must be an integer in [1, 100]"),
    ({"max_detections": [5]}, "max_detections must be an integer in [1, 100]"),
    ({"max_detections": "9" * 5000}, "max_detections must be an integer in [1, 100]"),
    ({"max_detections": 10**30}, "max_detections must be an integer in [1, 100]"),
    ({"max_detections": float("inf")}, "max_detections must be an integer in [1, 100]"),
])
def test_payload_options_are_numbers_in_range_never_booleans(source, message):
    assert _refused(payload.parse_options, [source], 0.3) == (400, message)


# -- the property: whatever the bytes, a request or a 4xx, within every budget -------------------------------------
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4), max_leaves=12)
_OPTION = _JSON | st.sampled_from(["0.5", "1", "0", "-1", "101", "nan", "inf", "1e400", "", "9" * 5000])


@st.composite
def image_files(draw) -> bytes:
    kind = draw(st.sampled_from(["png", "jpeg", "header", "bytes", "cut"]))
    if kind == "header":  # any size a PNG can claim
        return png_header(draw(st.integers(0, 70_000)), draw(st.integers(0, 70_000)))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    width, height = draw(st.integers(1, 40) | st.integers(1, 400)), draw(st.integers(1, 40) | st.integers(1, 400))
    pixels = np.full((height, width, 3), draw(st.integers(0, 255)), np.uint8)
    data = png(pixels) if kind == "png" else jpeg_bytes(pixels)
    return data[: draw(st.integers(0, len(data) - 1))] if kind == "cut" else data


@st.composite
def request_bodies(draw) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["raw", "valid", "single", "batch", "list", "json", "nested", "wide", "bytes"]))
    if kind == "valid":  # a batch that should be served: real frames, options in range
        frames = [png(np.full((draw(st.integers(1, 64)), draw(st.integers(1, 64)), 3), draw(st.integers(0, 255)),
                              np.uint8)) for _ in range(draw(st.integers(1, 32)))]
        options = draw(st.fixed_dictionaries({}, optional={"score_threshold": st.floats(0, 1),
                                                            "max_detections": st.integers(1, 100)}))
        return json.dumps({"instances": [{"image": _b64(f)} for f in frames], **options}).encode(), "application/json"
    if kind == "raw":
        return draw(image_files()), draw(st.sampled_from(payload.IMAGE_TYPES))
    if kind in ("single", "batch", "list"):
        instances = [{"image": _b64(draw(image_files())), **draw(st.dictionaries(
            st.sampled_from(["score_threshold", "max_detections", "x"]), _OPTION, max_size=2))}
            for _ in range(draw(st.integers(0 if kind != "single" else 1, 34)))]
        document = instances[0] if kind == "single" else instances if kind == "list" else {"instances": instances}
        return json.dumps(document).encode(), "application/json"
    if kind == "json":
        return json.dumps(draw(_JSON)).encode(), "application/json"
    if kind == "nested":
        depth = draw(st.integers(1, 50_000))
        return (draw(st.sampled_from(["[", '{"a":'])) * depth).encode(), "application/json"
    if kind == "wide":
        return b"[" + draw(st.sampled_from([b"[],", b"{},", b'"",', b"0,"])) * draw(st.integers(1, 200_000)) + b"1]", \
            "application/json"
    return draw(st.binary(max_size=256)), draw(st.sampled_from([*payload.IMAGE_TYPES, "application/json", "text/x"]))


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=request_bodies(), attributes=st.none() | st.text(max_size=1100), query=st.none() | st.text(max_size=1100),
       max_pixels=st.sampled_from([1, 100, 1600, payload.MAX_PIXELS]),
       max_request_pixels=st.sampled_from([1, 1000, payload.MAX_REQUEST_PIXELS]))
def test_payload_any_request_is_parsed_within_its_budgets_or_refused_with_a_4xx(body, attributes, query, max_pixels,
                                                                              max_request_pixels):
    data, content_type = body
    try:
        request = payload.parse_request(data, content_type, attributes, query, 0.3, max_pixels, max_request_pixels)
    except payload.RequestError as exc:
        assert exc.status in (400, 413, 415) and exc.message
        return
    frames = request.images.frames
    assert 1 <= len(frames) <= payload.MAX_BATCH and request.images.pixels <= max_request_pixels
    for frame in frames:
        assert 1 <= frame.width * frame.height <= max_pixels
        assert max(frame.width, frame.height) <= 10 * min(frame.width, frame.height)
    assert 0 <= request.options.score_threshold <= 1 and 1 <= request.options.max_detections <= 100
    for index, frame in enumerate(frames):  # decoding: the header's size, or a 400 for what the header hid
        try:
            image = request.images[index]
        except payload.RequestError as exc:
            assert exc.status == 400 and exc.message.startswith("cannot decode the image: ")
        else:
            assert image.shape == (3, frame.height, frame.width) and image.dtype == np.float32
