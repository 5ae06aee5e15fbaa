"""gunicorn's application (``wsgi:app``): imported by each worker after the fork, so each loads the model once."""

from __future__ import annotations

import logging
import os
import time

from detector import load_detector, model_dir
from server import InferenceApp

logging.basicConfig(level=os.environ.get("INFERENCE_LOG_LEVEL", "INFO"),
                    format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
_started = time.perf_counter()
detector = load_detector(model_dir(), os.environ.get("INFERENCE_RUNTIME", "auto"),
                         int(os.environ.get("INFERENCE_THREADS") or 1))
logging.getLogger("inference").info("worker ready: runtime=%s threads=%d model=%s in %.1f s", detector.runtime,
                                    detector.threads, detector.config.get("model"),
                                    time.perf_counter() - _started)
app = InferenceApp.from_env(detector)
