"""The inference container's WSGI app and runtimes: content types, options, batches, errors, and the served ONNX
model against the PyTorch model (eager, as the trainer builds it) within the export's tolerance. Runs in the inference
container's test environment (tests/container_code/run.py); the model folder is built in the trainer's
(tests/inference_model.py). payload.py on its own: test_payload.py."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from tests.container_code.inference.test_payload import request_bodies
from tests.inference_model import CLASSES, INFERENCE, jpeg, png, shared_model_dir, synthetic_frames, trainer_modules
from tests.procs import children

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


# -- no request can knock a worker over: budgets checked from the headers, one frame decoded at a time ---------------
@pytest.fixture(scope="module")
def finding_body():
    """The finding's request: a JSON batch (4.5 MB) of 32 PNGs of 6000 x 6000, each under the per-frame limit (40 MP);
    decoded together they were ~14 GB and ~96 s of CPU."""
    frame = png(np.zeros((6000, 6000, 3), np.uint8))
    return json.dumps({"instances": [{"image": _b64(frame)}] * 32}).encode()


def _decoding_spy(monkeypatch):
    """payload.decode_image (as the server imports it) wrapped: the pixels each call decoded, and the most decoded
    frames alive at once (each frame's array is tracked until it is freed)."""
    import weakref

    module = sys.modules["payload"]
    original, calls, alive, most = module.decode_image, [], set(), [0]

    def spy(data, max_pixels):
        image = original(data, max_pixels)
        calls.append(image.shape[1] * image.shape[2])
        alive.add(len(calls))
        weakref.finalize(image, alive.discard, len(calls))
        most[0] = max(most[0], len(alive))
        return image

    monkeypatch.setattr(module, "decode_image", spy)
    return calls, most


def test_the_findings_batch_is_refused_from_the_headers_in_milliseconds(onnx_detector, finding_body, monkeypatch):
    calls, _ = _decoding_spy(monkeypatch)
    client = Client(server.InferenceApp(onnx_detector))  # the container's own limits
    assert 4_000_000 < len(finding_body) < server.DEFAULT_MAX_PAYLOAD
    started = time.perf_counter()
    status, answer = _invoke(client, finding_body, "application/json")
    assert (status, answer) == (413, {"error": "32 images of 1152000000 pixels in all are over the request's limit "
                                               "of 67108864 pixels"})
    assert calls == [] and time.perf_counter() - started < 5  # ~0.1 s here: base64 and 32 headers
    assert client.get("/ping").status_code == 200


def test_a_batch_is_decoded_one_frame_at_a_time(client, frames, monkeypatch):
    calls, most = _decoding_spy(monkeypatch)
    body = json.dumps({"instances": [{"image": _b64(jpeg(f))} for f in frames] * 2})
    status, answer = _invoke(client, body, "application/json")
    assert status == 200 and len(answer["predictions"]) == 6
    assert calls == [320 * 320] * 6 and most[0] == 1


def test_the_request_pixel_budget_comes_from_the_environment(onnx_detector, frames):
    app = server.InferenceApp.from_env(onnx_detector, {"INFERENCE_MAX_REQUEST_PIXELS": str(2 * 320 * 320)})
    assert (app.max_payload, app.max_pixels, app.max_request_pixels) == (6 * 1024 * 1024, 40_000_000, 204_800)
    assert server.InferenceApp.from_env(onnx_detector, {}).max_request_pixels == 1 << 26
    client = Client(app)
    images = [{"image": _b64(jpeg(f))} for f in frames]
    assert _invoke(client, json.dumps(images[:2]), "application/json")[0] == 200
    assert _invoke(client, json.dumps(images), "application/json") == (
        413, {"error": "3 images of 307200 pixels in all are over the request's limit of 204800 pixels"})


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    (b"[" * 6_000_000, "application/json", 400, "JSON nested deeper than 8 levels"),  # was a RecursionError: 500
    (b'{"image": ' * 50_000, "application/json", 400, "JSON nested deeper than 8 levels"),
    (b"[" + b"[]," * 60_000 + b"[]]", "application/json", 413, "outside its strings"),
    (None, "image/png", 400, "more elongated than 10:1"),  # a 1 x 300 frame: ONNX Runtime's Resize failed, a 500
])
def test_adversarial_bodies_get_a_4xx(onnx_detector, body, content_type, status, message):
    client = Client(server.InferenceApp(onnx_detector))
    got, answer = _invoke(client, png(np.zeros((1, 300, 3), np.uint8)) if body is None else body, content_type)
    assert got == status and message in answer["error"]


# -- the same, as SageMaker runs it: gunicorn, one worker, real HTTP ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _workers(master: int) -> list[int]:
    """gunicorn's worker processes: the master's children."""
    return children(master)


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def _post(port: int, body: bytes, headers: dict[str, str], path: str = "/invocations") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    """``entrypoint.py serve`` as SageMaker starts it, one worker, on a loopback port; yields (port, master pid)."""
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "SM_MODEL_DIR": str(model_dir),
           "SAGEMAKER_BIND_TO_PORT": str(port), "INFERENCE_BIND_HOST": "127.0.0.1",
           "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "INFERENCE_THREADS": "1", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30",
           "INFERENCE_LOG_LEVEL": "ERROR"}
    log = tmp_path_factory.mktemp("served") / "stderr.log"  # a file, not a pipe nobody reads while it serves
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, str(INFERENCE / "entrypoint.py"), "serve"], cwd=INFERENCE, env=env,
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not answer /ping"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield port, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=1100)


@st.composite
def _http_requests(draw):
    body, content_type = draw(request_bodies())
    headers = {"Content-Type": content_type}
    if draw(st.booleans()):
        headers["X-Amzn-SageMaker-Custom-Attributes"] = draw(_TEXT | st.sampled_from(
            ["score_threshold=0", "max_detections=100", "score_threshold=true", "max_detections=1e9"]))
    if draw(st.booleans()):
        headers["Accept"] = draw(st.sampled_from(["application/json", "*/*", "text/csv", "image/png"]))
    query = quote(draw(_TEXT), safe="=&") if draw(st.booleans()) else ""
    return body, headers, f"/invocations?{query}" if query else "/invocations"


def test_random_and_adversarial_requests_never_get_a_5xx_nor_kill_the_worker(served, finding_body):
    """The property over HTTP: whatever the body, headers and query string, the answer is a JSON 200 or 4xx, the one
    worker that answers it is the same process throughout (gunicorn restarts a worker that died or ran past its
    timeout), and its memory stays bounded."""
    port, master = served
    (worker,) = _workers(master)
    statuses = []

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(request=_http_requests())
    @example(request=(finding_body, {"Content-Type": "application/json"}, "/invocations"))
    @example(request=(b"[" * 6_000_000, {"Content-Type": "application/json"}, "/invocations"))
    @example(request=(png(np.zeros((1, 300, 3), np.uint8)), {"Content-Type": "image/png"}, "/invocations"))
    @example(request=(b"x" * 7_000_000, {"Content-Type": "image/png"}, "/invocations"))
    @example(request=(b"x", {"Content-Type": "text/plain"}, "/invocations"))
    def check(request):
        body, headers, path = request
        status, data = _post(port, body, headers, path)
        statuses.append(status)
        assert status == 200 or 400 <= status < 500, (status, data[:300])
        answer = json.loads(data)
        assert status == 200 or set(answer) == {"error"}
        assert _workers(master) == [worker]

    check()
    assert _workers(master) == [worker] and _post(port, b"", {}, "/ping")[0] == 405
    peak = _peak_rss_mb(worker)
    assert peak < 1024, f"the worker's peak RSS was {peak:.0f} MB"  # the finding's request alone was ~14 GB
    assert {200, 400, 406, 413, 415} <= set(statuses), sorted(set(statuses))
    print(f"{len(statuses)} requests: " + ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses)))
          + f"; the worker's peak RSS {peak:.0f} MB")
