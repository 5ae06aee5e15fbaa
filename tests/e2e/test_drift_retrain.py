"""drift_retrain end to end on the local stack: a deployed model, its baseline built from its training data, a Model
Monitor schedule running the drift container on the endpoint's captured traffic; normal traffic raises nothing over
several windows; drift traffic (a darker scope with smoke) raises violations -> the CloudWatch alarm -> EventBridge ->
the trigger Lambda, and the DAG records the cause and sends the videos behind the traffic back to labeling.

The schedule's executions are started with the local SageMaker's local-only "run now" call (AWS runs them on the
hour) and alarms are evaluated with the local-only "evaluate now" call (CloudWatch does it every minute). Each
window runs within one clock hour (conftest.clear_of_the_hour): the hourly schedule firing on its own mid-window, or the
alarm's hour-long period turning between the execution and the evaluation, would judge other data than the window's.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from local_aws.settings import REPO_ROOT
from tests.conftest import clear_of_the_hour, run_dag_test, wait_for
from tests.datasets import make_dataset, upload_dataset

# What one window may take, from its first request to the alarm's evaluation: a drift_retrain run (its monitoring
# execution included) takes 2-4 minutes here. Each window starts when at least WINDOW_S of the clock hour is left
# (conftest.clear_of_the_hour): the schedule is hourly (the local scheduler's own execution at the top of the hour
# would be the newest, the one the run reads, over the hour before instead of the window's traffic) and the drift
# alarm's period is an hour of the clock (it reads only what was published since the top of the hour). Waiting for
# the hour to turn adds at most WINDOW_S + 30 s, once per module (the next windows then start early in the hour),
# which the tests' timeout adds to the 600 s they always had.
WINDOW_S = 420
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600 + WINDOW_S + 30)]
MODELS = "surgical-models"
ENDPOINT = "surgical-detector"
SCHEDULE = "surgical-detector-drift"
INFERENCE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/inference:latest"
# Windows of 30-60 frames (production windows hold thousands): 5 PSI bins, 30 frames to judge a feature, and the
# baseline from all the training videos' frames.
# The Model Monitor backend (an opt-in: closed to new customers; the test stack's account has it).
SETTINGS = {"monitoring_backend": "model_monitor", "drift_bins": 5, "drift_min_sample_size": 30,
            "drift_baseline_splits": "train,val,test"}


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def _frames(folder: Path) -> list[tuple[str, bytes]]:
    return [(f"frames/{p.relative_to(folder).as_posix()}", p.read_bytes()) for p in sorted(folder.rglob("*.jpg"))]


@pytest.fixture(scope="module")
def airflow_home(harness_airflow_home):
    """This module's DAG runs use a model group of their own, which the MWAA execution role does not grant: they sign
    as the harness (tests/conftest.py harness_airflow_home)."""
    return harness_airflow_home


@pytest.fixture(scope="module")
def deployed(aws, airflow_home, tmp_path_factory) -> dict:
    """A model trained on normal videos, registered with its lineage and deployed by the deploy DAG."""
    from tests.container_code.trainer.jobs import run_job

    root = tmp_path_factory.mktemp("drift")
    dataset, frames = make_dataset(root / "trained", videos=6, frames=10, width=192, height=112, prefix="drftrain")
    s3, sagemaker = aws("s3"), aws("sagemaker")
    version = upload_dataset(s3, dataset, frames)
    proc, job_root = run_job(root, {"dataset": dataset, "frames": frames},
                             {"image_size": 96, "batch_size": 4, "epochs": 2, "warmup_steps": 2})
    assert proc.returncode == 0, proc.stderr[-3000:]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted((job_root / "model").iterdir()):
            tar.add(path, arcname=path.name)
    s3.put_object(Bucket=MODELS, Key="drift-e2e/model.tar.gz", Body=buffer.getvalue())
    s3.put_object(Bucket=MODELS, Key="drift-e2e/evaluation.json",
                  Body=(job_root / "model" / "evaluation.json").read_bytes())
    sagemaker.create_model_package_group(ModelPackageGroupName="drift-e2e")
    arn = sagemaker.create_model_package(
        ModelPackageGroupName="drift-e2e", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": INFERENCE_IMAGE,
                                                "ModelDataUrl": f"s3://{MODELS}/drift-e2e/model.tar.gz"}],
                                "SupportedContentTypes": ["image/jpeg"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": f"s3://{MODELS}/drift-e2e/evaluation.json"}}},
        CustomerMetadataProperties={"dataset_version": version})["ModelPackageArn"]
    states, output = run_dag_test(airflow_home, REPO_ROOT / "dags", "deploy", conf={"model_package_arn": arn})
    assert states["record"] == "success", output[-6000:]
    batches = {}
    # Normal traffic: other moments of the training videos (same scenes: the same theatre, scope and lighting; a
    # handful of videos cannot stand for all normal surgery). Drift: new videos with smoke or a darker scope.
    for name, videos, seed, step, scenario in (("normal", 6, 100, 5, "normal"), ("drfsmoke", 2, 400, 4, "smoke"),
                                               ("drfdark", 1, 500, 4, "dark")):
        _, folder = make_dataset(root / name, videos=videos, frames=8, width=192, height=112, prefix=name[:8],
                                 seed=seed, step=step, scenario=scenario)
        batches[name] = _frames(folder)
        for key, body in batches[name]:
            s3.put_object(Bucket="surgical-frames-processed", Key=key, Body=body)
    return {"version": version, "normal": batches["normal"], "drift": batches["drfsmoke"] + batches["drfdark"]}


def _send(aws, frames: list[tuple[str, bytes]], repeat: int = 1) -> None:
    runtime = aws("sagemaker-runtime")
    for _ in range(repeat):
        for key, body in frames:
            runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/jpeg", Body=body, InferenceId=key)


def _window(airflow_home, local_stack, aws, since: float, conf: dict | None = None) -> tuple[dict, str, dict]:
    """One drift_retrain run whose monitoring execution (over the traffic sent since ``since``) is started as soon
    as the run has created or updated the schedule."""
    result: dict = {}
    env = {**airflow_home, "AIRFLOW_VAR_PIPELINE_CONFIG": json.dumps(SETTINGS)}
    sagemaker = aws("sagemaker")

    def modified() -> object:
        try:
            return sagemaker.describe_monitoring_schedule(MonitoringScheduleName=SCHEDULE)["LastModifiedTime"]
        except sagemaker.exceptions.ClientError:
            return None

    before = modified()
    thread = threading.Thread(target=lambda: result.update(
        run=run_dag_test(env, REPO_ROOT / "dags", "drift_retrain", conf=conf or {}, timeout=900)))
    thread.start()
    # the run's schedule task creates or updates the schedule: from then on, an execution counts for its window (a
    # run that ended first, having failed, says why below)
    wait_for(lambda: not thread.is_alive() or modified() not in (None, before), 600, interval=2,
             message="the drift_retrain run did not create or update the monitoring schedule")
    execution = None
    if thread.is_alive():
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 1))
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        execution = _post(f"http://{local_stack.host}:{local_stack.base_port + 1}/local/monitoring-schedules/"
                          f"{SCHEDULE}/executions", {"StartTime": start, "EndTime": end})
    thread.join(timeout=900)
    assert "run" in result, "the drift_retrain run did not end within 900 s"
    states, output = result["run"]
    Path(f"/tmp/drift_retrain_{time.time():.0f}.log").write_text(output)
    return states, output, execution


def test_normal_traffic_raises_nothing_over_several_windows(aws, airflow_home, local_stack, deployed):
    for window in range(2):
        clear_of_the_hour(WINDOW_S)
        since = time.time()
        _send(aws, deployed["normal"], repeat=2)
        states, output, _ = _window(airflow_home, local_stack, aws, since)
        assert states["assess"] == "success", output[-8000:]
        assert states["collect"] == "skipped", f"false positive in window {window}: {output[-6000:]}"
        assert "drift not found" in output
    summaries = aws("sagemaker").list_monitoring_executions(MonitoringScheduleName=SCHEDULE)[
        "MonitoringExecutionSummaries"]
    # Completed, or CompletedWithViolations of the "could not judge" kind (e.g. too few detections to judge the
    # score distribution): never a drift check, never Failed
    assert len(summaries) >= 2 and all(s["MonitoringExecutionStatus"] in ("Completed", "CompletedWithViolations")
                                       for s in summaries), summaries


class _AirflowApi(BaseHTTPRequestHandler):
    """Airflow 3's REST API as the trigger Lambda uses it (POST /auth/token, then POST
    /api/v2/dags/drift_retrain/dagRuns), recording the runs asked for."""

    runs: ClassVar[dict] = {}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token":
            return self._send(201, {"access_token": "recorded"})
        if self.path != "/api/v2/dags/drift_retrain/dagRuns" or self.headers.get("Authorization") != \
                "Bearer recorded":
            return self._send(404, {"detail": f"not the trigger Airflow expects: {self.path}"})
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
def airflow_api(aws):
    """The trigger Lambda pointed (UpdateFunctionConfiguration) at a recorder of Airflow's REST API; put back after."""
    lam = aws("lambda")
    function = next(f["FunctionName"] for f in lam.list_functions()["Functions"]
                    if f["FunctionName"].startswith("surgical-trigger-drift-retrain"))
    environment = lam.get_function_configuration(FunctionName=function)["Environment"]
    _AirflowApi.runs = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AirflowApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lam.update_function_configuration(FunctionName=function, Environment={"Variables": {
        **environment["Variables"], "AIRFLOW_API_URL": f"http://127.0.0.1:{server.server_port}"}})
    try:
        yield SimpleNamespace(runs=_AirflowApi.runs, function=function)
    finally:
        lam.update_function_configuration(FunctionName=function, Environment=environment)
        server.shutdown()


def test_drift_traffic_raises_violations_the_alarm_and_sends_its_videos_to_labeling(aws, airflow_home, local_stack,
                                                                                    deployed, airflow_api):
    clear_of_the_hour(WINDOW_S)
    since = time.time()
    _send(aws, deployed["drift"], repeat=2)
    states, output, _ = _window(airflow_home, local_stack, aws, since)
    assert states["relabel"] == "success", output[-8000:]
    latest = aws("sagemaker").describe_monitoring_schedule(MonitoringScheduleName=SCHEDULE)[
        "LastMonitoringExecutionSummary"]
    assert latest["MonitoringExecutionStatus"] == "CompletedWithViolations", latest
    assert "constraint violation" in output and "drift FOUND" in output
    decisions = aws("s3").list_objects_v2(Bucket=MODELS, Prefix="monitoring/decisions/")["Contents"]
    record = json.loads(aws("s3").get_object(Bucket=MODELS, Key=max(decisions, key=lambda o: o["LastModified"])[
        "Key"])["Body"].read())
    assert record["drift"] and record["figures"]["violations"]
    assert "drfsmoke" in output and "drfdark" in output  # the videos behind the drifted traffic go to labeling
    # the drift metrics reached CloudWatch, the alarm fires and EventBridge hands the event to the trigger Lambda
    changes = _post(f"http://{local_stack.host}:{local_stack.base_port}/local/alarms/evaluate", {})
    alarm = aws("cloudwatch").describe_alarms(AlarmNames=["surgical-input-drift-local"])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM", (changes, alarm)
    # the trigger Lambda ran its handler to the end: it asked Airflow's REST API (here the test's recorder of it:
    # this module runs DAGs with `airflow dags test`, no api-server) for a drift_retrain run named after the alarm's
    # state change, with the alarm's metrics in its conf, and logged the answer
    wait_for(lambda: airflow_api.runs, 120, interval=2,
             message="the alarm's EventBridge rule did not lead the trigger Lambda to ask Airflow for a run")
    (run_id, body), = airflow_api.runs.items()
    assert run_id.startswith("drift_alarm__surgical-input-drift-local__"), run_id
    assert body["dag_run_id"] == run_id and body["logical_date"] is None, body
    assert body["conf"]["alarm_name"] == "surgical-input-drift-local", body
    assert [m["name"] for m in body["conf"]["metrics"]] == ["input_drift_psi"], body
    logs = aws("logs")
    group = f"/aws/lambda/{airflow_api.function}"

    def logged() -> bool:
        return any(f"dag run {run_id} of drift_retrain created" in e["message"]
                   for e in logs.filter_log_events(logGroupName=group)["events"])

    # a run's lines are logged when it ends
    wait_for(logged, 60, interval=2, message=f"the trigger Lambda's log in {group} does not say the run was created")
