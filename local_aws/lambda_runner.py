"""The local Lambda runner: executes the deployed code of a function (its zip, its handler, its environment).

moto stores Lambda functions but only runs them in Docker; this runner runs them as processes instead, so the
handlers in ``include/lambdas/`` run for real wherever moto would invoke a function (the Invoke API, S3 bucket
notifications). Written by hand because no library runs a Lambda zip without a container.

Semantics kept from Lambda:
- each invocation runs the handler from the function's own deployment zip, with the function's environment variables,
  timeout, ``AWS_LAMBDA_*`` variables and a context object (``local_aws.lambda_bootstrap``);
- logs go to CloudWatch Logs ``/aws/lambda/<name>`` with START/END/REPORT lines;
- asynchronous invocations (S3 notifications, ``InvocationType=Event``) are retried ``MaximumRetryAttempts`` times
  (default 2) and then sent to the ``OnFailure`` destination of the function's event invoke config.
Retry delays are seconds here instead of Lambda's minutes (``LOCAL_LAMBDA_RETRY_DELAYS``).
With ``LOCAL_AWS_IAM=enforce`` the function's process gets its execution role's temporary credentials (assumed as
``lambda.amazonaws.com``, which the role's trust policy must allow) instead of the stack's admin ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_aws import iam
from local_aws.settings import StackSettings, iam_enforced

log = logging.getLogger("local_aws.lambda")
BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
_PASS_THROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


@dataclass
class Invocation:
    request_id: str
    ok: bool
    payload: Any
    log_text: str
    duration_ms: float


class LambdaRunner:
    def __init__(self, settings: StackSettings, max_workers: int = 4) -> None:
        self.settings = settings
        self.retry_delays = [float(x) for x in os.environ.get("LOCAL_LAMBDA_RETRY_DELAYS", "1,2").split(",")]
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lambda-async")

    # -- public API -------------------------------------------------------------------------------------------------
    def invoke(self, fn: Any, event: str) -> Invocation:
        """RequestResponse: run once and return the outcome."""
        return self._execute(fn, event)

    def submit(self, fn: Any, event: str) -> str:
        """Event (asynchronous): queue the invocation, retry on error, then the on-failure destination."""
        request_id = str(uuid.uuid4())
        self._pool.submit(self._run_async, fn, event, request_id)
        return request_id

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    # -- execution --------------------------------------------------------------------------------------------------
    def _run_async(self, fn: Any, event: str, request_id: str) -> None:
        config = fn.event_invoke_config[-1].config if fn.event_invoke_config else {}
        attempts = 1 + int(config.get("MaximumRetryAttempts", 2))
        outcome = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)])
            outcome = self._execute(fn, event, request_id=request_id if attempt == 0 else None)
            if outcome.ok:
                return
            log.warning("%s async attempt %d/%d failed: %s", fn.function_name, attempt + 1, attempts, outcome.payload)
        destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if destination and outcome is not None:
            self._send_on_failure(fn, destination, event, outcome, attempts)

    def _execute(self, fn: Any, event: str, request_id: str | None = None) -> Invocation:
        request_id = request_id or str(uuid.uuid4())
        code_dir = self._code_dir(fn)
        started = time.time()
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="lambda-") as tmp:
            result_path = Path(tmp) / "result.json"
            env = self._environment(fn, code_dir, request_id, stream, result_path, started)
            try:
                env.update(self._role_credentials(fn))
            except iam.IamCallError as exc:
                return self._refused(fn, stream, request_id, started, exc)
            try:
                proc = subprocess.run(
                    [sys.executable, "-P", str(BOOTSTRAP), fn.handler],
                    input=event.encode(),
                    cwd=code_dir,
                    env=env,
                    capture_output=True,
                    timeout=fn.timeout,
                )
                output = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
                if result_path.exists():
                    result = json.loads(result_path.read_text())
                else:
                    result = {"ok": False, "payload": {
                        "errorMessage": f"Runtime exited with error: exit status {proc.returncode}",
                        "errorType": "Runtime.ExitError"}}
            except subprocess.TimeoutExpired as exc:
                output = (exc.stderr or b"").decode(errors="replace")
                result = {"ok": False, "payload": {
                    "errorMessage": f"Task timed out after {fn.timeout:.2f} seconds", "errorType": "Sandbox.Timedout"}}
        duration_ms = (time.time() - started) * 1000
        log_text = self._write_logs(fn, stream, request_id, output, duration_ms)
        return Invocation(request_id, bool(result["ok"]), result["payload"], log_text, duration_ms)

    @staticmethod
    def _role_credentials(fn: Any) -> dict[str, str]:
        """Enforce mode: the execution role's credentials, as Lambda assumes the role for the function; else {}."""
        if not iam_enforced():
            return {}
        credentials = iam.assume_role_as_service(fn.role, "lambda.amazonaws.com", fn.function_name, reuse=True)
        return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                "AWS_SESSION_TOKEN": credentials["SessionToken"]}

    def _refused(self, fn: Any, stream: str, request_id: str, started: float, exc: iam.IamCallError) -> Invocation:
        message = f"The role defined for the function cannot be assumed by Lambda: {exc.message}"
        duration_ms = (time.time() - started) * 1000
        log_text = self._write_logs(fn, stream, request_id, message, duration_ms)
        return Invocation(request_id, False, {"errorMessage": message, "errorType": "AccessDeniedException"},
                          log_text, duration_ms)

    def _code_dir(self, fn: Any) -> Path:
        """The function's deployment zip, unpacked once per code version."""
        digest = hashlib.sha256(fn.code_bytes).hexdigest()[:16]
        target = self.settings.lambda_dir / fn.function_name / digest
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
            zipfile.ZipFile(io.BytesIO(fn.code_bytes)).extractall(staging)
            try:
                staging.rename(target)
            except OSError:  # another invocation unpacked it first
                pass
        return target

    def _environment(self, fn: Any, code_dir: Path, request_id: str, stream: str, result: Path,
                     started: float) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASS_THROUGH_ENV if k in os.environ}
        env.update(self.settings.aws_environment())
        env.update({
            "AWS_REGION": fn.region,
            "AWS_DEFAULT_REGION": fn.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": fn.logs_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "LAMBDA_TASK_ROOT": str(code_dir),
            "PYTHONPATH": str(code_dir),
            "_HANDLER": fn.handler,
            "_LOCAL_LAMBDA_FUNCTION_ARN": fn.function_arn,
            "_LOCAL_LAMBDA_REQUEST_ID": request_id,
            "_LOCAL_LAMBDA_RESULT": str(result),
            "_LOCAL_LAMBDA_DEADLINE": str(started + fn.timeout),
        })
        env.update({k: str(v) for k, v in fn.environment_vars.items()})
        return env

    def _write_logs(self, fn: Any, stream: str, request_id: str, output: str, duration_ms: float) -> str:
        lines = [f"START RequestId: {request_id} Version: $LATEST", *output.splitlines(),
                 f"END RequestId: {request_id}",
                 f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
                 f"Billed Duration: {int(duration_ms) + 1} ms\tMemory Size: {fn.memory_size} MB"]
        backend = fn.logs_backend
        if fn.logs_group_name not in backend.groups:
            backend.create_log_group(fn.logs_group_name, tags={})
        backend.create_log_stream(fn.logs_group_name, stream)
        now = int(time.time() * 1000)
        backend.put_log_events(fn.logs_group_name, stream, [{"timestamp": now, "message": line} for line in lines])
        return "\n".join(lines)

    def _send_on_failure(self, fn: Any, destination: str, event: str, outcome: Invocation, attempts: int) -> None:
        """The on-failure record in Lambda's destination format, delivered to an SQS destination."""
        from moto.sqs.models import sqs_backends

        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "requestContext": {
                "requestId": outcome.request_id,
                "functionArn": f"{fn.function_arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": json.loads(event),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": outcome.payload,
        }
        _, _, _, region, account, name = destination.split(":", 5)
        sqs_backends[account][region].send_message(queue_name=name, message_body=json.dumps(record))
        log.error("%s: retries exhausted, event sent to %s", fn.function_name, destination)
