"""Toy container: ``process`` copies inputs to outputs, ``train`` fits a mean, ``serve`` answers /ping and /invocations.

Behaviour is steered by hyperparameters/environment so tests can make it fail, hang or crash on purpose.
"""

import http.server
import json
import os
import sys
import time
from pathlib import Path


def fail(message: str) -> None:
    output = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
    output.mkdir(parents=True, exist_ok=True)
    (output / "failure").write_text(message)
    print(f"failing: {message}", flush=True)
    sys.exit(1)


def process(args: list[str]) -> None:
    source, target = Path(args[args.index("--input") + 1]), Path(args[args.index("--output") + 1])
    if os.environ.get("TOY_MODE") == "fail":
        fail("toy processing failed on purpose")
    if os.environ.get("TOY_MODE") == "hang":
        time.sleep(600)
    for path in sorted(source.rglob("*")):
        if path.is_file():
            print(f"processing {path.name}", flush=True)
            (target / (path.name + ".out")).write_text(path.read_text().upper())
    print(f"greeting={os.environ.get('TOY_GREETING')}", flush=True)


def train() -> None:
    hps = json.loads(os.environ["SM_HPS"])
    if hps.get("mode") == "fail":
        fail("toy training diverged: loss is NaN")
    if hps.get("mode") == "hang":
        time.sleep(600)
    values = [float(x) for p in sorted(Path(os.environ["SM_CHANNEL_TRAIN"]).rglob("*.txt"))
              for x in p.read_text().split()]
    scale = float(hps.get("scale", 1.0))
    for epoch in range(int(hps.get("epochs", 2))):
        print(f"epoch={epoch} loss={1.0 / (epoch + 1) * scale:.4f}", flush=True)
    mean = sum(values) / len(values) * scale
    print(f"validation mean={mean:.4f}", flush=True)
    print(f"score={-abs(mean - 5.0):.4f}", flush=True)
    Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps({"mean": mean}))
    checkpoint = Path(os.environ.get("SM_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
    (checkpoint / "last.json").write_text(json.dumps({"epochs": hps.get("epochs")}))


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        print(fmt % args, flush=True)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200 if self.path == "/ping" else 404, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        payload = json.loads(self.rfile.read(length) or b"{}")
        if "x" not in payload:
            self._send(400, {"error": "payload needs x"})
            return
        self._send(200, {"y": payload["x"] * self.server.model["mean"], "model": os.environ.get("TOY_VERSION")})


def serve() -> None:
    if os.environ.get("TOY_MODE") == "broken":
        print("toy server refuses to start", flush=True)
        sys.exit(3)
    model = json.loads(Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"), "model.json").read_text())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("SAGEMAKER_BIND_TO_PORT", 8080))),
                                             Handler)
    server.model = model
    print(f"serving on {server.server_address}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    {"train": lambda: train(), "serve": lambda: serve()}.get(command, lambda: process(sys.argv[1:]))()
