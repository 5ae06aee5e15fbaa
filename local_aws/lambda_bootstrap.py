"""The local Lambda runtime: runs one invocation of a Python handler in its own process, as Lambda's runtime does.

Started by ``local_aws.lambda_runner`` with ``python -P <this file> <module.function>``, the function's code
directory as the working directory and only that directory on ``PYTHONPATH`` (so a handler can import what its
deployment zip holds, and nothing else of this repository). The event comes on stdin; the result (or the error in
Lambda's ``errorMessage``/``errorType``/``stackTrace`` shape) is written as JSON to ``$_LOCAL_LAMBDA_RESULT``.
Log lines go to stderr in the Lambda Python runtime's format.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import traceback


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers use."""

    def __init__(self) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ["_LOCAL_LAMBDA_FUNCTION_ARN"]
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = os.environ["_LOCAL_LAMBDA_REQUEST_ID"]
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline = float(os.environ["_LOCAL_LAMBDA_DEADLINE"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


class _RequestIdFilter(logging.Filter):
    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


def _configure_logging(request_id: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s]\t%(asctime)s\t%(aws_request_id)s\t%(message)s"))
    handler.addFilter(_RequestIdFilter(request_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main() -> int:
    handler_spec = sys.argv[1]
    context = LambdaContext()
    _configure_logging(context.aws_request_id)
    result_path = os.environ["_LOCAL_LAMBDA_RESULT"]
    try:
        module_name, function_name = handler_spec.rsplit(".", 1)
        event = json.loads(sys.stdin.read() or "{}")
        handler = getattr(importlib.import_module(module_name), function_name)
        outcome = {"ok": True, "payload": handler(event, context)}
    except Exception as exc:  # the runtime reports every handler error, whatever its type
        traceback.print_exc()
        outcome = {
            "ok": False,
            "payload": {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            },
        }
    with open(result_path, "w") as fh:
        json.dump(outcome, fh, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
