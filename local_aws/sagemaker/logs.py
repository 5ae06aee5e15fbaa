"""Container output -> CloudWatch Logs under SageMaker's group and stream names (so the provider's log tailing works).

Groups: ``/aws/sagemaker/TrainingJobs``, ``/aws/sagemaker/ProcessingJobs``, ``/aws/sagemaker/Endpoints/<name>``.
Streams: ``<job>/algo-1-<epoch>`` for jobs, ``<variant>/<instance-id>`` for endpoints. Lines are batched
(at most every half second, a background thread
flushing what a quiet container left) so a chatty container does not make one request per line.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import boto3
from botocore.exceptions import ClientError

_open_streams: weakref.WeakSet[LogStream] = weakref.WeakSet()
_flusher_started = threading.Lock()


def _flush_forever() -> None:
    while True:
        time.sleep(1.0)
        for stream in list(_open_streams):
            try:
                stream.flush()
            except Exception:  # noqa: S112 - a failed flush is retried on the next tick
                continue


def _start_flusher() -> None:
    if _flusher_started.acquire(blocking=False):
        threading.Thread(target=_flush_forever, daemon=True, name="log-flusher").start()


class LogStream:
    def __init__(self, group: str, stream: str, client: Any | None = None, flush_every_s: float = 0.5) -> None:
        self.group, self.stream = group, stream
        self._client = client or boto3.client("logs")
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_every = flush_every_s
        self._last_flush = time.monotonic()
        self._ensure()
        _open_streams.add(self)
        _start_flusher()

    def _ensure(self) -> None:
        for call, kwargs in ((self._client.create_log_group, {"logGroupName": self.group}),
                             (self._client.create_log_stream, {"logGroupName": self.group,
                                                               "logStreamName": self.stream})):
            try:
                call(**kwargs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise

    def write(self, line: str) -> None:
        with self._lock:
            self._pending.append({"timestamp": int(time.time() * 1000), "message": line.rstrip("\n")})
            due = time.monotonic() - self._last_flush >= self._flush_every or len(self._pending) >= 500
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if events:
            self._client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=events)
