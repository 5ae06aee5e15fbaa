"""moto in server mode, with the gaps that matter to this pipeline closed.

Runs moto's own server (``moto.server``) in this process after three narrow patches, each because moto falls short
of AWS in a way the pipeline would notice (moto 5.2.5, pinned in constraints):

1. Lambda functions run for real: moto only runs them in Docker; here ``LambdaFunction.invoke`` runs the function's
   deployment zip through ``local_aws.lambda_runner`` (RequestResponse, Event and DryRun as the Invoke API has them).
2. S3 -> Lambda notifications are asynchronous, as on AWS: moto calls the function inside the PutObject request;
   here the event is handed to the runner's async queue (retries, on-failure destination) and PutObject returns.
3. S3 event records carry ``versionId`` and ``sequencer`` (and the identity fields) as AWS's do; moto leaves them
   out, and the ingest Lambda needs the version to tell one upload from a re-delivery of the same one.
4. EventBridge rules deliver to Lambda targets (moto raises NotImplementedError for them): the matching event,
   as AWS sends it (``Input``/``InputPath``/``InputTransformer`` applied), goes to the runner's async queue.
5. CloudWatch alarms are evaluated (``local_aws.alarms``, a thread here, next to the backends it reads and the
   event bus it writes); ``POST /local/alarms/evaluate`` (body optional: ``{"AlarmNames": [...]}``) runs one
   pass now and answers the state changes - a local-only call, for tests and the demo.
6. IAM (``local_aws.iam``): the harness's admin principal (fixed key), moto's policy engine made usable, and, with
   ``LOCAL_AWS_IAM=enforce``, every request checked against the caller's policies; ``POST /local/iam/authorize``
   and ``POST /local/iam/assume-role-as-service`` let the local SageMaker reuse this engine.

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

from local_aws import iam
from local_aws.alarms import AlarmEvaluator
from local_aws.lambda_runner import LambdaRunner
from local_aws.settings import iam_mode, load_settings

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
    _deliver_rules_to_lambda(runner)


def _deliver_rules_to_lambda(runner: LambdaRunner) -> None:
    import copy

    from moto.awslambda.utils import get_backend
    from moto.events.models import Rule
    from moto.events.utils import EventTemplateParser

    original = Rule.send_to_targets

    def send_to_targets(self: Any, original_event: dict[str, Any], transform_input: bool = True) -> None:
        is_lambda = [":lambda:" in t["Arn"] for t in self.targets]
        enabled = getattr(self, "state", "ENABLED") == "ENABLED"
        if any(is_lambda) and enabled and self.event_pattern.matches_event(original_event):
            event = {k: v for k, v in original_event.items() if k != "ingestion-time"}
            if isinstance(event.get("time"), (int, float)):
                event["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["time"]))
            for target, wanted in zip(self.targets, is_lambda, strict=True):
                if wanted:
                    _invoke_target(target, event)
        others = [t for t, wanted in zip(self.targets, is_lambda, strict=True) if not wanted]
        if others:
            rule = copy.copy(self)
            rule.targets = others
            original(rule, original_event, transform_input)

    def _invoke_target(target: dict[str, Any], event: dict[str, Any]) -> None:
        if "Input" in target:
            payload = target["Input"]
        elif "InputPath" in target:
            node: Any = event
            for part in target["InputPath"].lstrip("$").strip(".").split("."):
                node = node.get(part) if part and isinstance(node, dict) else node
            payload = json.dumps(node)
        elif "InputTransformer" in target:
            transformer = target["InputTransformer"]
            payload = EventTemplateParser.parse(input_template=transformer.get("InputTemplate"),
                                                input_paths_map=transformer.get("InputPathsMap", {}), event=event)
            payload = payload if isinstance(payload, str) else json.dumps(payload)
        else:
            payload = json.dumps(event)
        _, _, _, region, account, _ = target["Arn"].split(":", 5)
        try:
            fn = get_backend(account, region).get_function(target["Arn"])
        except Exception as exc:  # EventBridge drops (or dead-letters) an event whose target is gone
            log.error("event to missing function %s dropped: %s", target["Arn"], exc)
            return
        runner.submit(fn, payload)

    Rule.send_to_targets = send_to_targets


class LocalRoutes:
    """Local-only HTTP calls on moto's port, in front of moto's own application."""

    def __init__(self, app: Any, evaluator: AlarmEvaluator) -> None:
        self.app, self.evaluator = app, evaluator

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or ""
        if path.startswith("/local/iam/") and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                status_code, payload = iam.handle(path, json.loads(environ["wsgi.input"].read(length) or b"{}"))
            except Exception as exc:
                log.exception("%s failed", path)
                status_code, payload = 500, {"error": "InternalFailure", "message": str(exc)}
            data = json.dumps(payload).encode()
            reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(status_code, "Error")
            start_response(f"{status_code} {reason}", [("Content-Type", "application/json"),
                                                       ("Content-Length", str(len(data)))])
            return [data]
        if path == "/local/alarms/evaluate" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
                changes = self.evaluator.evaluate_all(body.get("AlarmNames"))
                status, payload = "200 OK", {"StateChanges": changes}
            except Exception as exc:
                log.exception("evaluate-now failed")
                status, payload = "500 Internal Server Error", {"message": str(exc)}
            data = json.dumps(payload).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        return self.app(environ, start_response)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    mode = iam_mode()
    iam.install(enforce=mode == "enforce", decisions=load_settings().iam_decisions)
    if mode == "enforce":
        log.info("IAM enforced (LOCAL_AWS_IAM=enforce, the default): every request is checked against its signer's "
                 "policies; decisions in %s", load_settings().iam_decisions)
    else:
        log.warning("IAM NOT ENFORCED (LOCAL_AWS_IAM=off): moto accepts any request, also what AWS would refuse")
    install_patches(LambdaRunner(load_settings()))
    evaluator = AlarmEvaluator()
    evaluator.start()

    # moto.server.main, with the local-only routes in front of moto's application.
    import os
    import signal

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler, signal_handler
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGINT, signal_handler)
    signal.signal(signal.SIGTERM, signal_handler)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, LocalRoutes(app, evaluator), threaded=True, use_reloader=False,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
