"""gunicorn settings from SageMaker's variables: port, workers, timeout; threads per worker so workers x threads
fits the CPUs (more would make the workers' thread pools fight over cores and lengthen the tail)."""

from __future__ import annotations

import os


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


bind = f"{os.environ.get('INFERENCE_BIND_HOST', '0.0.0.0')}:{os.environ.get('SAGEMAKER_BIND_TO_PORT', '8080')}"  # noqa: S104 - the contract: 0.0.0.0:8080
workers = int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS") or _cpus())
os.environ.setdefault("INFERENCE_THREADS", str(max(1, _cpus() // workers)))  # read by each worker (wsgi.py)
worker_class = "sync"  # one request per worker at a time: the model is CPU-bound, a queue in front is fairer
timeout = int(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT") or 60)
graceful_timeout = 5  # the host stops a variant with SIGTERM and waits 10 s
backlog = 256
accesslog = None  # the app logs sizes and latencies; an access log would add client addresses and nothing more
errorlog = "-"
loglevel = os.environ.get("INFERENCE_LOG_LEVEL", "info").lower()
# No runtime control socket: one fixed path per user would be shared by every server on a host running several
# endpoints' containers as processes (the local SageMaker), and SageMaker never uses it.
control_socket_disable = True
