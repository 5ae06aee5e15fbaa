"""trigger_drift_retrain Lambda: alarm -> one drift_retrain run, through MWAA's InvokeRestApi or a local Airflow."""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import boto3
import pytest
from botocore.stub import ANY, Stubber

from include.lambdas import trigger_drift_retrain as lam

ALARM_EVENT = {
    "version": "0",
    "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
    "detail-type": "CloudWatch Alarm State Change",
    "source": "aws.cloudwatch",
    "account": "123456789012",
    "time": "2026-11-25T10:15:02Z",
    "region": "us-east-1",
    "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:surgical-input-drift-prod"],
    "detail": {
        "alarmName": "surgical-input-drift-prod",
        "state": {
            "value": "ALARM",
            "reason": "Threshold Crossed: 1 out of the last 1 datapoints [0.31] was greater than the threshold (0.2).",
            "reasonData": json.dumps({"version": "1.0", "queryDate": "2026-11-25T10:15:00.000+0000",
                                      "startDate": "2026-11-25T09:15:00.000+0000", "statistic": "Maximum",
                                      "period": 3600, "recentDatapoints": [0.31], "threshold": 0.2,
                                      "evaluatedDatapoints": [{"timestamp": "2026-11-25T09:15:00.000+0000",
                                                               "sampleCount": 1.0, "value": 0.31}]}),
            "timestamp": "2026-11-25T10:15:00.123+0000",
        },
        "previousState": {"value": "OK", "timestamp": "2026-11-24T10:15:00.000+0000"},
        "configuration": {
            "metrics": [{"id": "m1", "returnData": True, "metricStat": {
                "metric": {"namespace": "SurgicalMLOps/Drift", "name": "input_drift_psi",
                           "dimensions": {"EndpointName": "surgical-detector-prod"}},
                "period": 3600, "stat": "Maximum"}}],
            "evaluationPeriods": 1,
        },
    },
}


def event(**state) -> dict:
    e = copy.deepcopy(ALARM_EVENT)
    e["detail"]["state"].update(state)
    return e


def test_run_id_is_derived_from_the_alarm_transition():
    first = lam.dag_run_id("surgical-input-drift-prod", "2026-11-25T10:15:00.123+0000")
    assert first == lam.dag_run_id("surgical-input-drift-prod", "2026-11-25T10:15:00.123+0000")
    assert first != lam.dag_run_id("surgical-input-drift-prod", "2026-11-25T11:15:00.123+0000")
    assert first != lam.dag_run_id("surgical-prediction-drift-prod", "2026-11-25T10:15:00.123+0000")
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", lam.dag_run_id("odd name/with spaces", "2026-11-25T10:15:00Z"))
    assert "20261125T101500.123000Z" in first


def test_conf_names_the_alarm_metrics_endpoint_and_window():
    conf = lam.build_conf(ALARM_EVENT)
    assert conf["alarm_name"] == "surgical-input-drift-prod"
    assert conf["alarm_arn"].endswith(":alarm:surgical-input-drift-prod")
    assert conf["endpoint_name"] == "surgical-detector-prod"
    assert conf["metrics"] == [{"id": "m1", "namespace": "SurgicalMLOps/Drift", "name": "input_drift_psi",
                                "dimensions": {"EndpointName": "surgical-detector-prod"}, "stat": "Maximum",
                                "period_s": 3600}]
    assert conf["window"]["start"] == "2026-11-25T09:15:00+00:00"
    assert conf["window"]["end"] == "2026-11-25T10:15:00.123000+00:00"
    assert conf["window"]["period_s"] == 3600
    assert conf["window"]["evaluated_datapoints"][0]["value"] == 0.31
    json.dumps(conf)  # a DAG run conf is JSON


def test_window_without_reason_data_spans_the_evaluation_periods():
    e = event(reasonData="")
    e["detail"]["configuration"]["evaluationPeriods"] = 3
    window = lam.build_conf(e)["window"]
    assert window["start"] == "2026-11-25T07:15:00.123000+00:00" and window["period_s"] == 3600


@pytest.mark.parametrize("state", ["OK", "INSUFFICIENT_DATA"])
def test_only_a_transition_to_alarm_triggers(state, monkeypatch):
    monkeypatch.setenv("MWAA_ENV_NAME", "surgical-mlops-prod")
    assert lam.handler(event(value=state), None, mwaa_client=object()) == {"status": "ignored"}


def _mwaa():
    return boto3.client("mwaa", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_mwaa_invoke_rest_api_posts_the_dag_run(monkeypatch):
    monkeypatch.setenv("MWAA_ENV_NAME", "surgical-mlops-prod")
    monkeypatch.delenv("AIRFLOW_API_URL", raising=False)
    client = _mwaa()
    run_id = lam.dag_run_id("surgical-input-drift-prod", "2026-11-25T10:15:00.123+0000")
    with Stubber(client) as stub:
        stub.add_response("invoke_rest_api", {"RestApiStatusCode": 200, "RestApiResponse": {"state": "queued"}},
                          {"Name": "surgical-mlops-prod", "Path": "/dags/drift_retrain/dagRuns", "Method": "POST",
                           "Body": {"dag_run_id": run_id, "logical_date": None, "conf": ANY, "note": ANY}})
        result = lam.handler(ALARM_EVENT, None, mwaa_client=client)
        stub.assert_no_pending_responses()
    assert result == {"status": "created", "http_status": 200, "state": "queued", "dag_id": "drift_retrain",
                      "dag_run_id": run_id}


def test_mwaa_redelivery_finds_the_run_and_succeeds(monkeypatch):
    monkeypatch.setenv("MWAA_ENV_NAME", "surgical-mlops-prod")
    client = _mwaa()
    with Stubber(client) as stub:
        stub.add_client_error("invoke_rest_api", service_error_code="RestApiClientException", http_status_code=400,
                              modeled_fields={"RestApiStatusCode": 409,
                                              "RestApiResponse": {"title": "DAG Run already exists"}})
        assert lam.handler(ALARM_EVENT, None, mwaa_client=client)["status"] == "exists"


def test_mwaa_refusal_raises_so_lambda_retries(monkeypatch):
    monkeypatch.setenv("MWAA_ENV_NAME", "surgical-mlops-prod")
    client = _mwaa()
    with Stubber(client) as stub:
        stub.add_client_error("invoke_rest_api", service_error_code="RestApiClientException", http_status_code=400,
                              modeled_fields={"RestApiStatusCode": 404, "RestApiResponse": {"title": "no DAG"}})
        with pytest.raises(lam.TriggerError, match="404"):
            lam.handler(ALARM_EVENT, None, mwaa_client=client)


class FakeAirflow(BaseHTTPRequestHandler):
    """Airflow 3's /auth/token and POST /api/v2/dags/{dag_id}/dagRuns, as far as the Lambda uses them."""

    runs: ClassVar[dict[str, dict]] = {}
    token = "jwt-for-admin"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token":
            ok = body == {"username": "admin", "password": "pw"}
            return self._send(201 if ok else 401, {"access_token": self.token} if ok else {"detail": "bad"})
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(401, {"detail": "Not authenticated"})
        if self.path != "/api/v2/dags/drift_retrain/dagRuns":
            return self._send(404, {"detail": "no such DAG"})
        if body["dag_run_id"] in self.runs:
            return self._send(409, {"detail": "DAG Run already exists"})
        self.runs[body["dag_run_id"]] = body
        return self._send(200, {"dag_run_id": body["dag_run_id"], "state": "queued"})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_airflow(monkeypatch):
    FakeAirflow.runs = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("MWAA_ENV_NAME", raising=False)
    monkeypatch.setenv("AIRFLOW_API_URL", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setenv("AIRFLOW_API_USERNAME", "admin")
    monkeypatch.setenv("AIRFLOW_API_PASSWORD", "pw")
    yield FakeAirflow.runs
    server.shutdown()


def test_local_airflow_gets_one_run_however_often_the_event_arrives(local_airflow):
    first = lam.handler(ALARM_EVENT, None)
    again = lam.handler(ALARM_EVENT, None)
    assert (first["status"], again["status"]) == ("created", "exists")
    assert list(local_airflow) == [first["dag_run_id"]]
    body = local_airflow[first["dag_run_id"]]
    assert body["logical_date"] is None
    assert body["conf"]["metrics"][0]["name"] == "input_drift_psi"


def test_local_airflow_bad_credentials_raise(local_airflow, monkeypatch):
    monkeypatch.setenv("AIRFLOW_API_PASSWORD", "wrong")
    with pytest.raises(lam.TriggerError, match="401"):
        lam.handler(ALARM_EVENT, None)
    assert local_airflow == {}


def test_without_a_target_the_handler_says_what_to_set(monkeypatch):
    monkeypatch.delenv("MWAA_ENV_NAME", raising=False)
    monkeypatch.delenv("AIRFLOW_API_URL", raising=False)
    with pytest.raises(lam.TriggerError, match="MWAA_ENV_NAME"):
        lam.handler(ALARM_EVENT, None)
