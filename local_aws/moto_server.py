"""moto in server mode, with the gaps that matter to this pipeline closed.

Runs moto's own server (``moto.server``) in this process after three narrow patches, each because moto falls short
of AWS in a way the pipeline would notice (moto 5.2.5, pinned in constraints):

1. Lambda functions run for real: moto only runs them in Docker; here ``LambdaFunction.invoke`` runs the function's
   deployment zip through ``local_aws.lambda_runner`` (RequestResponse, Event and DryRun as the Invoke API has them).
2. S3 -> Lambda notifications are asynchronous, as on AWS: moto calls the function inside the PutObject request;
   here the event is handed to the runner's async queue (retries, on-failure destination) and PutObject returns.
3. S3 event records carry ``versionId`` and ``sequencer`` (and the identity fields) as AWS's do; moto leaves them
   out, and the ingest Lambda needs the version to tell one upload from a re-delivery of the same one.

Usage: ``python -m local_aws.moto_server --port 4566`` (``local_aws.stack`` starts it).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import threading
import time
from typing import Any

from local_aws.lambda_runner import LambdaRunner
from local_aws.settings import load_settings

log = logging.getLogger("local_aws.moto")
_sequence = itertools.count()
_sequence_lock = threading.Lock()


def _next_sequencer() -> str:
    # S3 sequencers are hex strings that order events of one key; time plus a counter keeps them increasing.
    with _sequence_lock:
        return f"{time.time_ns():016X}{next(_sequence) % 0xFFFF:04X}"


def install_patches(runner: LambdaRunner) -> None:
    from moto.awslambda.models import LambdaFunction
    from moto.awslambda.utils import get_backend
    from moto.s3 import notifications

    def invoke(self: Any, body: str, request_headers: Any, response_headers: dict[str, str]) -> bytes:
        invocation_type = request_headers.get("x-amz-invocation-type") or "RequestResponse"
        if invocation_type == "DryRun":
            return b""
        if invocation_type == "Event":
            runner.submit(self, body or "{}")
            return b""
        outcome = runner.invoke(self, body or "{}")
        if not outcome.ok:
            response_headers["x-amz-function-error"] = "Unhandled"
        tail = outcome.log_text.encode()[-4096:]
        response_headers["x-amz-log-result"] = base64.b64encode(tail).decode()
        response_headers["x-amz-executed-version"] = "$LATEST"
        return json.dumps(outcome.payload).encode()

    original_event = notifications._get_s3_event

    def s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = original_event(event_name, bucket, key, notification_id)
        for record in event["Records"]:
            obj = record["s3"]["object"]
            if key.version_id != "null":
                obj["versionId"] = key.version_id
            obj["sequencer"] = _next_sequencer()
            record["userIdentity"] = {"principalId": "AWS:LOCALUSER"}
            record["requestParameters"] = {"sourceIPAddress": "127.0.0.1"}
            record["responseElements"] = {"x-amz-request-id": _next_sequencer(), "x-amz-id-2": "local"}
            record["s3"]["bucket"]["ownerIdentity"] = {"principalId": "LOCALOWNER"}
        return event

    def invoke_from_s3(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        try:
            fn = get_backend(account_id, region_name).get_function(fn_arn)
        except Exception as exc:  # AWS drops the event too when the function is gone
            log.error("S3 notification to missing function %s dropped: %s", fn_arn, exc)
            return
        runner.submit(fn, json.dumps(event_body))

    LambdaFunction.invoke = invoke
    notifications._get_s3_event = s3_event
    notifications._invoke_awslambda = invoke_from_s3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    install_patches(LambdaRunner(load_settings()))

    from moto import server

    server.main(["--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
