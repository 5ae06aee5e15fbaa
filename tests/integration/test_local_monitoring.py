"""Monitoring on the local stack: Model Monitor executions, alarms that evaluate, EventBridge -> Lambda delivery."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local_aws import bootstrap
from local_aws.settings import ACCOUNT_ID, REGION
from tests.conftest import ENDPOINT_WAITER, clear_of_the_hour, wait_for

ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"  # infra/platform.yaml (make up deploys it)
BUCKET = "surgical-models"
NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"
TERMINAL = ("Completed", "CompletedWithViolations", "Failed", "Stopped")
MAX_RUNTIME_S = 120  # the executions' StoppingCondition: the local SageMaker stops a job that runs longer
# An execution ends (its processing job is stopped at MAX_RUNTIME_S at the latest) before a test stops waiting for it.
EXECUTION_WAIT_S = MAX_RUNTIME_S + 120
# The steps that must fall in one clock hour (conftest.clear_of_the_hour): one execution and what follows it.
ONE_HOUR_STEPS_S = EXECUTION_WAIT_S + 120
# Waiting for the hour to turn adds at most ONE_HOUR_STEPS_S + 30 s to a test: its timeout (pyproject.toml's 600 s)
# grows by as much.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600 + ONE_HOUR_STEPS_S + 30)]


def _post(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _run_now(local_stack, schedule: str, **window: str) -> dict[str, Any]:
    status, execution = _post(f"{local_stack.sagemaker_url}/local/monitoring-schedules/{schedule}/executions",
                              window)
    assert status == 201, execution
    return execution


def _wait_execution(sm, schedule: str, job_arn: str, timeout: float = EXECUTION_WAIT_S) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        return next((summary for summary in sm.list_monitoring_executions(
            MonitoringScheduleName=schedule, MaxResults=100)["MonitoringExecutionSummaries"]
            if summary["ProcessingJobArn"] == job_arn and summary["MonitoringExecutionStatus"] in TERMINAL), None)

    return wait_for(finished, timeout, interval=0.3, message=f"execution {job_arn} did not finish")


@pytest.fixture(scope="module")
def probe_image(local_stack) -> str:
    folder = Path(__file__).resolve().parent.parent / "containers" / "monitor_probe"
    return bootstrap.image_uri(bootstrap.register_containers(local_stack, [folder])[0])


@pytest.fixture(scope="module")
def monitored(aws, local_stack, toy_image, probe_image) -> dict[str, Any]:
    """A toy endpoint with data capture, invoked a few times (plus one malformed capture file), and a schedule."""
    sm, s3, suffix = aws("sagemaker"), aws("s3"), uuid.uuid4().hex[:6]
    model = io.BytesIO()
    with tarfile.open(fileobj=model, mode="w:gz") as tar:
        data = json.dumps({"mean": 2.0}).encode()
        info = tarfile.TarInfo("model.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=BUCKET, Key=f"mon-{suffix}/model.tar.gz", Body=model.getvalue())
    s3.put_object(Bucket=BUCKET, Key=f"mon-{suffix}/baseline/statistics.json",
                  Body=json.dumps({"x_mean": 1.0, "y_mean": 2.0}).encode())
    s3.put_object(Bucket=BUCKET, Key=f"mon-{suffix}/baseline/constraints.json",
                  Body=json.dumps({"drift_threshold": 0.2}).encode())
    endpoint, schedule = f"mon-ep-{suffix}", f"mon-sched-{suffix}"
    sm.create_model(ModelName=f"mon-m-{suffix}", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": toy_image, "ModelDataUrl": f"s3://{BUCKET}/mon-{suffix}/model.tar.gz"})
    sm.create_endpoint_config(
        EndpointConfigName=f"mon-c-{suffix}",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": f"mon-m-{suffix}", "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                           "DestinationS3Uri": f"s3://{BUCKET}/data-capture",
                           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                           "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}})
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"mon-c-{suffix}")  # Creating at once
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=ENDPOINT_WAITER)
    runtime = aws("sagemaker-runtime")
    for x in (3, 4, 5):
        runtime.invoke_endpoint(EndpointName=endpoint, Body=json.dumps({"x": x}), ContentType="application/json")
    hour = datetime.now(UTC)  # the capture folder of now: the run-now window below (the hour up to then) takes it in
    s3.put_object(Bucket=BUCKET, Key=f"data-capture/{endpoint}/AllTraffic/{hour:%Y/%m/%d/%H}/garbage.jsonl",
                  Body=b'not json\n{"captureData": {}}\n')
    # The schedule is hourly: at the top of the hour the local scheduler would start an execution of its own, which
    # would become the schedule's LastMonitoringExecutionSummary and publish a second datapoint. The schedule is made
    # when that hour is far enough away for the run-now execution and the first test's checks of it.
    clear_of_the_hour(ONE_HOUR_STEPS_S)
    sm.create_monitoring_schedule(MonitoringScheduleName=schedule, MonitoringScheduleConfig={
        "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
        "MonitoringType": "DataQuality",
        "MonitoringJobDefinition": {
            "BaselineConfig": {
                "StatisticsResource": {"S3Uri": f"s3://{BUCKET}/mon-{suffix}/baseline/statistics.json"},
                "ConstraintsResource": {"S3Uri": f"s3://{BUCKET}/mon-{suffix}/baseline/constraints.json"}},
            "MonitoringInputs": [{"EndpointInput": {"EndpointName": endpoint,
                                                    "LocalPath": "/opt/ml/processing/input/endpoint"}}],
            "MonitoringOutputConfig": {"MonitoringOutputs": [{"S3Output": {
                "S3Uri": f"s3://{BUCKET}/monitoring/mon-{suffix}", "LocalPath": "/opt/ml/processing/resultdata"}}]},
            "MonitoringResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                      "VolumeSizeInGB": 5}},
            "MonitoringAppSpecification": {"ImageUri": probe_image},
            "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME_S},
            "RoleArn": ROLE}})
    execution = _run_now(local_stack, schedule)
    summary = _wait_execution(sm, schedule, execution["ProcessingJobArn"])
    return {"endpoint": endpoint, "schedule": schedule, "suffix": suffix, "execution": execution,
            "summary": summary}


def test_run_now_completes_with_violations_outputs_in_s3_and_metrics_in_cloudwatch(aws, monitored):
    sm, s3, summary = aws("sagemaker"), aws("s3"), monitored["summary"]
    assert monitored["execution"]["MonitoringExecutionStatus"] in ("Pending", "InProgress")
    assert summary["MonitoringExecutionStatus"] == "CompletedWithViolations", summary
    assert summary["EndpointName"] == monitored["endpoint"] and summary["MonitoringType"] == "DataQuality"
    described = sm.describe_monitoring_schedule(MonitoringScheduleName=monitored["schedule"])
    assert described["LastMonitoringExecutionSummary"]["ProcessingJobArn"] == summary["ProcessingJobArn"]
    assert described["LastMonitoringExecutionSummary"]["MonitoringExecutionStatus"] == "CompletedWithViolations"
    job_name = summary["ProcessingJobArn"].rsplit("/", 1)[1]
    job = sm.describe_processing_job(ProcessingJobName=job_name)
    assert job["ProcessingJobStatus"] == "Completed" and job["MonitoringScheduleArn"] == \
        described["MonitoringScheduleArn"]
    assert job["Environment"]["sagemaker_monitoring_schedule_name"] == monitored["schedule"]
    scheduled = summary["ScheduledTime"].astimezone(UTC)
    prefix = f"monitoring/mon-{monitored['suffix']}/{monitored['endpoint']}/{monitored['schedule']}/" \
             f"{scheduled:%Y/%m/%d/%H}"
    keys = {o["Key"].rsplit("/", 1)[1] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert keys == {"statistics.json", "constraint_violations.json"}
    statistics = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/statistics.json")["Body"].read())
    assert statistics["dataset"] == {"item_count": 3, "malformed_count": 2}  # bad lines did not stop it
    assert statistics["drift"]["input_drift_psi"] == pytest.approx(3.0)  # mean x 4 vs baseline 1
    now = datetime.now(UTC)  # one instant for both ends of the query
    points = aws("cloudwatch").get_metric_statistics(
        Namespace=NAMESPACE, MetricName="input_drift_psi", Statistics=["Maximum"], Period=3600,
        Dimensions=[{"Name": "Endpoint", "Value": monitored["endpoint"]},
                    {"Name": "MonitoringSchedule", "Value": monitored["schedule"]}],
        StartTime=now - timedelta(hours=2), EndTime=now + timedelta(hours=1))
    assert [p["Maximum"] for p in points["Datapoints"]] == [pytest.approx(3.0)]


def test_an_empty_window_completes_with_a_clear_result(aws, local_stack, monitored):
    long_ago = datetime.now(UTC) - timedelta(days=3)
    execution = _run_now(local_stack, monitored["schedule"], StartTime=long_ago.isoformat(),
                         EndTime=(long_ago + timedelta(hours=1)).isoformat())
    summary = _wait_execution(aws("sagemaker"), monitored["schedule"], execution["ProcessingJobArn"])
    assert summary["MonitoringExecutionStatus"] == "Completed", summary
    job = aws("sagemaker").describe_processing_job(ProcessingJobName=execution["ProcessingJobName"])
    output = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    bucket, key = output[5:].split("/", 1)
    statistics = json.loads(aws("s3").get_object(Bucket=bucket, Key=f"{key}/statistics.json")["Body"].read())
    assert statistics["dataset"]["item_count"] == 0 and statistics["message"] == "no captured data in the window"


def test_run_now_window_takes_in_the_records_of_the_current_second(aws, local_stack, monitored):
    """inferenceTime and the window are whole seconds: a window ending "now" lost the traffic of the last second."""
    stamped = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # a record captured now carries this inferenceTime
    execution = _run_now(local_stack, monitored["schedule"])
    _wait_execution(aws("sagemaker"), monitored["schedule"], execution["ProcessingJobArn"])
    environment = aws("sagemaker").describe_processing_job(
        ProcessingJobName=execution["ProcessingJobArn"].rsplit("/", 1)[1])["Environment"]
    assert environment["start_time"] <= stamped < environment["end_time"], environment


def test_unknown_schedule_and_bad_cron_are_refused(aws, local_stack, monitored):
    status, body = _post(f"{local_stack.sagemaker_url}/local/monitoring-schedules/nope/executions")
    assert status == 400 and body["__type"] == "ResourceNotFound"
    sm = aws("sagemaker")
    config = sm.describe_monitoring_schedule(MonitoringScheduleName=monitored["schedule"])["MonitoringScheduleConfig"]
    config["ScheduleConfig"]["ScheduleExpression"] = "cron(0 25 ? * * *)"
    with pytest.raises(sm.exceptions.ClientError, match="Invalid ScheduleExpression"):
        sm.create_monitoring_schedule(MonitoringScheduleName=f"bad-cron-{monitored['suffix']}",
                                      MonitoringScheduleConfig=config)


RECORDER = '''
import json, os, boto3
def handler(event, context):
    boto3.client("s3").put_object(Bucket=os.environ["BUCKET"], Key=os.environ["KEY"], Body=json.dumps(event))
    return {"ok": True}
'''


def test_drift_alarm_goes_to_alarm_and_eventbridge_delivers_the_event_to_a_lambda(aws, local_stack, monitored):
    suffix, cloudwatch, events = monitored["suffix"], aws("cloudwatch"), aws("events")
    alarm = f"mon-drift-{suffix}"
    # The alarm's period is an hour of the clock: it reads the datapoints published since the top of the hour. The
    # drift metric it judges is published here, by an execution over the captured traffic, when the hour is far
    # enough away for that execution and the evaluation below to fall in it (the fixture's was published earlier).
    clear_of_the_hour(ONE_HOUR_STEPS_S)
    execution = _run_now(local_stack, monitored["schedule"])
    summary = _wait_execution(aws("sagemaker"), monitored["schedule"], execution["ProcessingJobArn"])
    assert summary["MonitoringExecutionStatus"] == "CompletedWithViolations", summary
    # The rule and its target exist before the alarm does: the evaluator thread (every 5 s) may move a new alarm to
    # ALARM at once, and an event sent while no rule matches goes nowhere (as on AWS).
    arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{alarm}"
    role = aws("iam").create_role(RoleName=f"recorder-{suffix}", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    aws("iam").put_role_policy(RoleName=f"recorder-{suffix}", PolicyName="record", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:PutObject",
                                                "Resource": f"arn:aws:s3:::{BUCKET}/events/*"}]}))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("recorder.py", RECORDER)
    key = f"events/{suffix}.json"
    function = aws("lambda").create_function(
        FunctionName=f"recorder-{suffix}", Runtime="python3.12", Role=role, Handler="recorder.handler",
        Code={"ZipFile": code.getvalue()}, Timeout=30, Environment={"Variables": {"BUCKET": BUCKET, "KEY": key}})
    events.put_rule(Name=f"mon-rule-{suffix}", EventPattern=json.dumps({
        "source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"], "resources": [arn],
        "detail": {"state": {"value": ["ALARM"]}}}))
    events.put_targets(Rule=f"mon-rule-{suffix}", Targets=[{"Id": "recorder", "Arn": function["FunctionArn"]}])
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, Namespace=NAMESPACE, MetricName="input_drift_psi", Statistic="Maximum", Period=3600,
        EvaluationPeriods=1, Threshold=0.2, ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
        Dimensions=[{"Name": "Endpoint", "Value": monitored["endpoint"]},
                    {"Name": "MonitoringSchedule", "Value": monitored["schedule"]}])
    assert cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]["AlarmArn"] == arn

    status, body = _post(f"{local_stack.moto_url}/local/alarms/evaluate", {"AlarmNames": [alarm]})
    # the evaluator thread (every 5 s) may have changed the state before this call: then this call changes nothing
    assert status == 200 and [c["StateValue"] for c in body["StateChanges"]] in (["ALARM"], []), body
    described = cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]
    assert described["StateValue"] == "ALARM"
    assert described["StateReason"].startswith("Threshold Crossed: 1 datapoint [3 (")
    assert described["StateReason"].endswith("was greater than the threshold (0.2).")
    assert json.loads(described["StateReasonData"])["evaluatedDatapoints"][0]["value"] == pytest.approx(3.0)

    def recorded() -> dict[str, Any] | None:
        try:
            return json.loads(aws("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except aws("s3").exceptions.NoSuchKey:
            return None

    # EventBridge invokes the Lambda asynchronously: one run, or its retries, each up to the function's Timeout (30 s)
    event = wait_for(recorded, 120, interval=0.3, message="the Lambda never received the alarm's event")
    assert event["source"] == "aws.cloudwatch" and event["detail-type"] == "CloudWatch Alarm State Change"
    assert event["resources"] == [arn]
    detail = event["detail"]
    assert detail["alarmName"] == alarm and detail["state"]["value"] == "ALARM"
    assert detail["previousState"]["value"] == "OK" and "timestamp" in detail["state"]
    assert detail["configuration"]["metrics"][0]["metricStat"] == {
        "metric": {"namespace": NAMESPACE, "name": "input_drift_psi",
                   "dimensions": {"Endpoint": monitored["endpoint"], "MonitoringSchedule": monitored["schedule"]}},
        "period": 3600, "stat": "Maximum"}
    # A second pass changes nothing: one event per change of state.
    assert _post(f"{local_stack.moto_url}/local/alarms/evaluate", {"AlarmNames": [alarm]})[1]["StateChanges"] == []


def test_monitoring_stack_is_deployed_with_the_container_contract_metrics(aws):
    alarms = {a["AlarmName"]: a for a in aws("cloudwatch").describe_alarms(AlarmNamePrefix="surgical-")["MetricAlarms"]}
    drift = alarms["surgical-input-drift-local"]
    assert drift["Namespace"] == NAMESPACE and drift["MetricName"] == "input_drift_psi"
    assert {d["Name"]: d["Value"] for d in drift["Dimensions"]} == {
        "Endpoint": "surgical-detector", "MonitoringSchedule": "surgical-detector-drift"}
    assert alarms["surgical-fresh-label-map50-local"]["Namespace"] == "SurgicalMLOps/Quality"
    targets = aws("events").list_targets_by_rule(Rule="surgical-drift-alarm-to-retrain-local")["Targets"]
    assert targets[0]["Arn"].endswith(":function:surgical-trigger-drift-retrain-local")
    environment = aws("lambda").get_function_configuration(
        FunctionName="surgical-trigger-drift-retrain-local")["Environment"]["Variables"]
    assert environment["AIRFLOW_API_URL"] == "http://127.0.0.1:8080" and "MWAA_ENV_NAME" not in environment
