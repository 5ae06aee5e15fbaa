"""Lambda handler: a drift/quality CloudWatch alarm entering ALARM -> one run of the ``drift_retrain`` DAG.

EventBridge delivers the "CloudWatch Alarm State Change" event (rule in ``infra/monitoring.yaml``); this handler
turns it into ``POST /dags/drift_retrain/dagRuns`` with a conf that says which alarm fired, on which metrics and
endpoint, over which window:

- on AWS (``MWAA_ENV_NAME`` set) through MWAA's ``InvokeRestApi`` (boto3 ``mwaa.invoke_rest_api``), which signs the
  call with the Lambda's role (``airflow:InvokeRestApi`` on the environment's ``User`` role);
- locally (``AIRFLOW_API_URL`` set) through the local Airflow's REST API ``/api/v2``, with a JWT from
  ``POST /auth/token`` (``AIRFLOW_API_USERNAME`` / ``AIRFLOW_API_PASSWORD``).

Idempotent: the run id is derived from the alarm's name and its state-change time, so a redelivered event (EventBridge
delivers at least once, Lambda retries async invocations) finds its run already there (HTTP 409) and succeeds
without a second run. Self-contained (boto3 and the standard library): it ships alone in its deployment zip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

DAG_ID = "drift_retrain"
CONF_SCHEMA = "surgical-mlops/drift-trigger/v1"
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")  # Airflow's default allowed_run_id_pattern

logger = logging.getLogger("trigger_drift_retrain")
logger.setLevel(logging.INFO)


class TriggerError(RuntimeError):
    """Airflow refused the trigger for a reason a retry will not fix the same way (raised: Lambda retries)."""


def _parse_time(value: str) -> datetime:
    # CloudWatch writes "2026-11-25T10:15:00.123+0000"; fromisoformat wants "+00:00".
    value = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", value.replace("Z", "+00:00"))
    return datetime.fromisoformat(value).astimezone(UTC)


def dag_run_id(alarm_name: str, state_changed_at: str) -> str:
    """Deterministic: one alarm transition always names the same run (<= 250 characters, Airflow's charset)."""
    moment = _parse_time(state_changed_at).strftime("%Y%m%dT%H%M%S.%fZ")
    name = _RUN_ID_UNSAFE.sub("-", alarm_name)[:120]
    digest = hashlib.sha256(f"{alarm_name}\n{state_changed_at}".encode()).hexdigest()[:8]
    return f"drift_alarm__{name}__{moment}__{digest}"


def _metrics(configuration: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for query in configuration.get("metrics", []):
        stat = query.get("metricStat")
        if not stat:  # a math expression over the others
            out.append({"id": query.get("id"), "expression": query.get("expression")})
            continue
        metric = stat["metric"]
        out.append({"id": query.get("id"), "namespace": metric.get("namespace"), "name": metric.get("name"),
                    "dimensions": metric.get("dimensions", {}), "stat": stat.get("stat"),
                    "period_s": stat.get("period")})
    return out


def _window(detail: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The data the alarm evaluated: from the reason data when CloudWatch gives it, else the evaluation periods."""
    state = detail["state"]
    end = _parse_time(state["timestamp"])
    try:
        reason = json.loads(state.get("reasonData") or "{}")
    except json.JSONDecodeError:
        reason = {}
    period = reason.get("period") or next((m["period_s"] for m in metrics if m.get("period_s")), 300)
    points = reason.get("evaluatedDatapoints") or []
    if reason.get("startDate"):
        start = _parse_time(reason["startDate"])
    else:
        periods = int(detail.get("configuration", {}).get("evaluationPeriods") or max(len(points), 1))
        start = end - timedelta(seconds=int(period) * periods)
    return {"start": start.isoformat(), "end": end.isoformat(), "period_s": int(period),
            "evaluated_datapoints": [{"timestamp": p.get("timestamp"), "value": p.get("value")} for p in points]}


def build_conf(event: dict[str, Any]) -> dict[str, Any]:
    """The drift_retrain conf of one alarm state-change event."""
    detail = event["detail"]
    metrics = _metrics(detail.get("configuration", {}))
    # Model Monitor's metrics name the endpoint "Endpoint"; the pipeline's quality metric "EndpointName".
    endpoints = sorted({value for m in metrics for key, value in m.get("dimensions", {}).items()
                        if key in ("Endpoint", "EndpointName")})
    return {
        "schema": CONF_SCHEMA,
        "trigger": "cloudwatch-alarm",
        "alarm_name": detail["alarmName"],
        "alarm_arn": (event.get("resources") or [None])[0],
        "state": detail["state"]["value"],
        "previous_state": detail.get("previousState", {}).get("value"),
        "state_changed_at": detail["state"]["timestamp"],
        "state_reason": detail["state"].get("reason", "")[:1000],  # not "reason": that is the DAG's object param
        "metrics": metrics,
        "endpoint_name": endpoints[0] if len(endpoints) == 1 else None,
        "window": _window(detail, metrics),
    }


def _trigger_body(run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    # Airflow 3's TriggerDAGRunPostBody: logical_date is required (null: a run not tied to a data interval).
    return {"dag_run_id": run_id, "logical_date": None, "conf": conf,
            "note": f"Triggered by CloudWatch alarm {conf['alarm_name']} ({conf['state_changed_at']})"}


def _trigger_mwaa(environment: str, body: dict[str, Any], client: Any = None) -> dict[str, Any]:
    if client is None:
        import boto3

        client = boto3.client("mwaa")
    try:
        response = client.invoke_rest_api(Name=environment, Path=f"/dags/{DAG_ID}/dagRuns", Method="POST", Body=body)
    except client.exceptions.RestApiClientException as exc:
        status = exc.response.get("RestApiStatusCode")
        if status == 409:
            return {"status": "exists", "http_status": 409}
        raise TriggerError(f"MWAA REST API refused the trigger ({status}): {exc.response.get('RestApiResponse')}") \
            from exc
    return {"status": "created", "http_status": response.get("RestApiStatusCode"),
            "state": (response.get("RestApiResponse") or {}).get("state")}


def _http(method: str, url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> tuple[int, Any]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"AIRFLOW_API_URL must be an http(s) URL, got {url!r}")
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,  # noqa: S310 - checked above
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) checked above
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except json.JSONDecodeError:
            return exc.code, text


def _trigger_local(base_url: str, body: dict[str, Any], username: str, password: str,
                   timeout: float = 10.0) -> dict[str, Any]:
    base_url = base_url.rstrip("/")
    status, token = _http("POST", f"{base_url}/auth/token", {"username": username, "password": password}, {},
                          timeout)
    if status not in (200, 201) or not isinstance(token, dict) or "access_token" not in token:
        raise TriggerError(f"Airflow {base_url}/auth/token answered {status}: {token}")
    status, answer = _http("POST", f"{base_url}/api/v2/dags/{DAG_ID}/dagRuns", body,
                           {"Authorization": f"Bearer {token['access_token']}"}, timeout)
    if status == 409:
        return {"status": "exists", "http_status": 409}
    if status not in (200, 201):
        raise TriggerError(f"Airflow refused the trigger ({status}): {answer}")
    return {"status": "created", "http_status": status, "state": answer.get("state")}


def handler(event: dict[str, Any], context: Any, *, mwaa_client: Any = None) -> dict[str, Any]:
    detail = event.get("detail") or {}
    state = (detail.get("state") or {}).get("value")
    if event.get("detail-type") != "CloudWatch Alarm State Change" or state != "ALARM":
        logger.info("ignored: %s in state %s (only an alarm entering ALARM triggers a run)",
                    event.get("detail-type"), state)
        return {"status": "ignored"}
    conf = build_conf(event)
    run_id = dag_run_id(conf["alarm_name"], conf["state_changed_at"])
    body = _trigger_body(run_id, conf)
    environment, api_url = os.environ.get("MWAA_ENV_NAME"), os.environ.get("AIRFLOW_API_URL")
    if environment:
        result = _trigger_mwaa(environment, body, mwaa_client)
    elif api_url:
        result = _trigger_local(api_url, body, os.environ.get("AIRFLOW_API_USERNAME", "admin"),
                                os.environ.get("AIRFLOW_API_PASSWORD", ""))
    else:
        raise TriggerError("set MWAA_ENV_NAME (on AWS) or AIRFLOW_API_URL (local Airflow) to trigger the DAG")
    logger.info("alarm %s (%s): dag run %s of %s %s", conf["alarm_name"], conf["state_changed_at"], run_id, DAG_ID,
                result["status"])
    return {**result, "dag_id": DAG_ID, "dag_run_id": run_id}
