"""Payload budgets of the inference container: what the largest accepted request costs a worker, what refused ones get.

    .venv/bin/python bench/payload_limits.py

The container as SageMaker starts it (``entrypoint.py serve`` in its own environment, as bench/serve.py starts it),
with one gunicorn worker and one thread, so every figure is one worker's: its peak RSS during each request (the
kernel's high-water mark, ``VmHWM``, reset before each request through ``/proc/<pid>/clear_refs``) and the request's
wall time. Requests, all PNGs of one flat colour (the cheapest bytes per decoded pixel: the worst case per request):

- the largest accepted request: a JSON batch of 32 frames of 2048 x 1024, exactly the per-request budget (2**26
  pixels), and the same batch with one frame a column wider (one column over the budget);
- the largest accepted frame: 8000 x 5000, exactly the per-frame limit (40 MP), alone, twice (is its memory returned?);
- the costliest accepted request: that frame and one of 6000 x 4518 in one JSON batch (67.1 MP, within the budget);
- the finding: a JSON batch (4.5 MB) of 32 frames of 6000 x 6000 (each under the per-frame limit);
- 6 MB of ``[`` and 6 MB of ``[],``: nesting and structure past their budgets.

Baseline, measured in the same run: what the finding's request cost before the per-request budget, when only each
frame was checked and all were decoded before inference. It is not sent as such (~14 GB): one 6000 x 6000 frame is
sent alone (the same decoding and model) and the batch's cost is 32 times that one's time, and its memory the 32
decoded float32 frames the old code held at once plus one frame's peak. The worker's process id is read before and
after: a worker killed (out of memory, or past gunicorn's timeout) would be a new one.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from serve import Server, model_folder  # noqa: E402 - bench/serve.py: the container as SageMaker starts it

from tests.procs import children  # noqa: E402

BUDGET = 1 << 26  # containers/inference/payload.py MAX_REQUEST_PIXELS
FRAME_LIMIT = 40_000_000  # payload.MAX_PIXELS
GUNICORN_TIMEOUT_S = 60  # gunicorn_conf.py's default, SageMaker's invocation timeout too


def flat_png(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def batch(frames: list[bytes]) -> bytes:
    return json.dumps({"instances": [{"image": base64.b64encode(f).decode()} for f in frames]}).encode()


def workers(master: int) -> list[int]:
    """gunicorn's worker processes: the master's children."""
    return children(master)


def rss_mb(pid: int, field: str) -> float:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith(f"{field}:")).split()[1]) / 1024


def post(port: int, body: bytes, content_type: str) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    try:
        conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, data, time.perf_counter() - started


def measure(port: int, worker: int, name: str, body: bytes, content_type: str, pixels: int) -> dict:
    Path(f"/proc/{worker}/clear_refs").write_text("5")  # the high-water mark starts again from the current RSS
    before = rss_mb(worker, "VmRSS")
    status, data, seconds = post(port, body, content_type)
    row = {"name": name, "bytes": len(body), "pixels": pixels, "status": status, "s": seconds, "before_mb": before,
           "peak_mb": rss_mb(worker, "VmHWM"), "after_mb": rss_mb(worker, "VmRSS"),
           "error": json.loads(data).get("error", "") if status >= 400 else ""}
    print(f"{name:<42} {len(body) / 1e6:>6.2f} {pixels / 1e6:>7.1f} {status:>6} {seconds:>7.2f} {before:>7.0f} "
          f"{row['peak_mb']:>7.0f} {row['after_mb']:>7.0f}  {row['error'][:60]}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    os.environ.update({"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "INFERENCE_THREADS": "1"})  # one worker's figures
    folder, origin = model_folder(Path(tempfile.mkdtemp(prefix="bench-payload-")))
    frame_2k, frame_2k_wide = flat_png(2048, 1024), flat_png(2049, 1024)
    frame_36, frame_40, frame_27 = flat_png(6000, 6000), flat_png(8000, 5000), flat_png(6000, 4518)
    finding = batch([frame_36] * 32)
    server = Server(folder, "onnx")
    try:
        (worker,) = workers(server.process.pid)
        idle = rss_mb(worker, "VmRSS")
        print(f"model: {origin}; 1 gunicorn worker x 1 thread (pid {worker}), idle RSS {idle:.0f} MB\n")
        print("worker RSS (MB) before, at its peak during, and after each request")
        print(f"{'request':<42} {'MB':>6} {'MP':>7} {'status':>6} {'s':>7} {'before':>7} {'peak':>7} {'after':>7}  "
              f"error")
        rows = {  # the refused ones first, on a worker that has decoded nothing yet
            "finding": measure(server.port, worker, "32 x 6000x6000 PNG (JSON): the finding", finding,
                               "application/json", 32 * 36_000_000),
            "deep": measure(server.port, worker, "6 MB of '[' (JSON)", b"[" * 6_000_000, "application/json", 0),
            "wide": measure(server.port, worker, "6 MB of '[],' (JSON)", b"[" + b"[]," * 1_999_999 + b"[]]",
                            "application/json", 0),
            "over": measure(server.port, worker, "31 x 2048x1024 + 1 x 2049x1024: +1024 px",
                            batch([frame_2k] * 31 + [frame_2k_wide]), "application/json",
                            31 * 2048 * 1024 + 2049 * 1024),
            "budget": measure(server.port, worker, "32 x 2048x1024 PNG (JSON): the budget", batch([frame_2k] * 32),
                              "application/json", 32 * 2048 * 1024),
            "frame": measure(server.port, worker, "8000x5000 PNG alone: the frame limit", frame_40, "image/png",
                             FRAME_LIMIT),
            "one36": measure(server.port, worker, "6000x6000 PNG alone (baseline's unit)", frame_36, "image/png",
                             36_000_000),
            "again": measure(server.port, worker, "8000x5000 PNG alone, again", frame_40, "image/png", FRAME_LIMIT),
            "worst": measure(server.port, worker, "8000x5000 + 6000x4518 PNG (JSON)", batch([frame_40, frame_27]),
                             "application/json", FRAME_LIMIT + 6000 * 4518),
        }
        after = workers(server.process.pid)
        ping = post(server.port, b"", "application/json")[0]  # an empty body: 400 from a live worker
    finally:
        server.stop()
    restarts = 0 if after == [worker] else len(set(after) - {worker}) or 1
    one = rows["one36"]
    baseline_s = 32 * one["s"]
    baseline_gb = (32 * 36_000_000 * 12 / 2**20 + one["peak_mb"] - one["before_mb"]) / 1024  # + one frame's peak
    print(f"\nbaseline (per-frame check only, all frames decoded before inference), the finding's request: accepted; "
          f"~{baseline_s:.0f} s of one core (32 x {one['s']:.2f} s; gunicorn's timeout is {GUNICORN_TIMEOUT_S} s) "
          f"and ~{baseline_gb:.1f} GB (32 decoded float32 frames + one frame's peak)")
    finding_row, budget_row = rows["finding"], rows["budget"]
    print(f"now: refused with {finding_row['status']} in {finding_row['s'] * 1e3:.0f} ms, the worker's peak RSS "
          f"{finding_row['peak_mb']:.0f} MB (+{finding_row['peak_mb'] - finding_row['before_mb']:.0f} MB: the body and "
          f"its base64-decoded frames); worker restarts: {restarts}; an empty body afterwards: {ping}")
    checks = [
        ("the largest accepted request (the budget) answered 200", budget_row["status"] == 200),
        ("the costliest accepted request answered 200", rows["worst"]["status"] == 200),
        (f"each within a quarter of gunicorn's timeout ({budget_row['s']:.1f} s, {rows['worst']['s']:.1f} s <= "
         f"{GUNICORN_TIMEOUT_S / 4:g} s)", max(budget_row["s"], rows["worst"]["s"]) <= GUNICORN_TIMEOUT_S / 4),
        ("one column over the budget: 413", rows["over"]["status"] == 413),
        ("the largest frame answered 200", rows["frame"]["status"] == 200),
        ("its memory is returned: a second one peaks no higher, the RSS after it within 50 MB of idle",
         rows["again"]["peak_mb"] <= rows["frame"]["peak_mb"] + 50 and rows["again"]["after_mb"] <= idle + 50),
        ("the finding: 413 from the headers in under 1 s", finding_row["status"] == 413 and finding_row["s"] < 1),
        ("nesting 400, structure 413", (rows["deep"]["status"], rows["wide"]["status"]) == (400, 413)),
        ("no worker restarted", restarts == 0 and ping == 400),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"RESULT largest_accepted_pixels={budget_row['pixels']} largest_accepted_bytes={budget_row['bytes']} "
          f"largest_accepted_s={budget_row['s']:.2f} largest_accepted_peak_rss_mb={budget_row['peak_mb']:.0f} "
          f"largest_frame_pixels={FRAME_LIMIT} largest_frame_s={rows['frame']['s']:.2f} "
          f"largest_frame_peak_rss_mb={rows['frame']['peak_mb']:.0f} worst_accepted_s={rows['worst']['s']:.2f} "
          f"worst_accepted_peak_rss_mb={rows['worst']['peak_mb']:.0f} idle_rss_mb={idle:.0f} "
          f"refused_pixels={finding_row['pixels']} refused_bytes={finding_row['bytes']} "
          f"refused_status={finding_row['status']} refused_ms={finding_row['s'] * 1e3:.0f} "
          f"refused_peak_rss_mb={finding_row['peak_mb']:.0f} baseline_s={baseline_s:.0f} "
          f"baseline_gb={baseline_gb:.1f} worker_restarts={restarts}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
