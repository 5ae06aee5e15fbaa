"""drift_retrain's requests and decisions: valid SageMaker requests for both monitor backends and the baseline, the
drift verdict with its causes, and the new data traced back to videos through InferenceId."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from include import monitoring
from include.config import build_config
from tests.sagemaker_api import TEST_KEY_ARN, valid

CONFIG = build_config("local")


def test_the_requests_are_valid_for_both_backends():
    valid("CreateProcessingJob", monitoring.baseline_request(CONFIG, "0123456789abcdef",
                                                             "s3://surgical-models/evaluations/j/evaluation.json", "r"))
    schedule = monitoring.schedule_request(CONFIG, "0123456789abcdef")
    valid("CreateMonitoringSchedule", schedule)
    definition = schedule["MonitoringScheduleConfig"]["MonitoringJobDefinition"]
    assert definition["BaselineConfig"]["ConstraintsResource"]["S3Uri"].endswith("0123456789abcdef/constraints.json")
    assert definition["NetworkConfig"]["EnableNetworkIsolation"] and definition["Environment"][
        "publish_cloudwatch_metrics"] == "Enabled"
    end = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    job = monitoring.processing_monitor_request(CONFIG, "0123456789abcdef", datetime(2026, 11, 26, 9, tzinfo=UTC), end,
                                                ["s3://surgical-models/data-capture/surgical-detector/AllTraffic/"
                                                 "2026/11/26/09/"], "r")
    valid("CreateProcessingJob", job)
    assert job["Environment"]["start_time"] == "2026-11-26T09:00:00Z"
    assert job["Environment"]["sagemaker_monitoring_schedule_name"] == CONFIG.monitoring_schedule_name
    assert job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"].endswith("/2026/11/26/10")


def test_window_hours_cover_the_window():
    hours = monitoring.window_hours(datetime(2026, 11, 26, 10, 30, tzinfo=UTC), 3)
    assert [h.hour for h in hours] == [8, 9, 10]


def test_no_violation_no_alarm_no_drift():
    verdict = monitoring.assess({"violations": []}, {"dataset": {"item_count": 40}},
                                [{"AlarmName": "surgical-input-drift-local", "StateValue": "OK"}], {})
    assert not verdict.drift and verdict.figures["records"] == 40


def test_each_cause_is_named_with_its_figures():
    violations = {"violations": [{"feature_name": "brightness", "constraint_check_type": "baseline_drift_check",
                                  "description": "PSI 0.61 > 0.2"}]}
    alarms = [{"AlarmName": "surgical-input-drift-local", "StateValue": "ALARM", "StateReason": "0.61 > 0.2"}]
    verdict = monitoring.assess(violations, None, alarms, {"alarm_name": "surgical-prediction-drift-local"})
    assert verdict.drift and len(verdict.causes) == 3
    assert "brightness: PSI 0.61 > 0.2" in verdict.causes[0] and "in ALARM: 0.61 > 0.2" in verdict.causes[1]
    assert "triggered by alarm surgical-prediction-drift-local" in verdict.causes[2]


def _line(reference: str | None, image: bytes = b"\xff\xd8jpeg") -> str:
    metadata = {"eventId": "e", "inferenceTime": "2026-11-26T09:30:00Z"}
    if reference:
        metadata["inferenceId"] = reference
    return json.dumps({"captureData": {"endpointInput": {"observedContentType": "image/jpeg", "mode": "INPUT",
                                                         "data": base64.b64encode(image).decode(),
                                                         "encoding": "BASE64"}},
                       "eventMetadata": metadata, "eventVersion": "0"})


def test_collect_traces_frames_to_videos_and_keeps_untraced_frames_only_when_asked():
    lines = [_line("frames/vid00000000000000001/000001.jpg"), _line("frames/vid00000000000000001/000002.jpg"),
             _line("frames/other/000001.jpg"), _line(None, b"frame"), _line("../../etc/passwd"), "{not json", ""]
    found = monitoring.collect(lines, keep_untraced=False)
    assert found.videos == ["other", "vid00000000000000001"] and found.traced == 3
    assert found.untraced == 2 and found.frames == [] and found.unreadable == 1
    kept = monitoring.collect(lines, keep_untraced=True)
    assert kept.frames == [b"frame", b"\xff\xd8jpeg"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=20))
def test_collect_never_raises_and_accounts_for_every_line(lines):
    found = monitoring.collect(lines, keep_untraced=True)
    assert found.traced + found.untraced + found.unreadable == sum(1 for line in lines if line.strip())


def test_the_processing_backend_publishes_the_monitors_metric_lines(in_process_aws):
    """A Processing job publishes nothing itself: assess publishes the lines the monitor left with its results, so the
    alarms of infra/monitoring.yaml see the same metrics with either backend."""
    import boto3
    import pytest

    from include.tasks import drift

    s3, cloudwatch = boto3.client("s3"), boto3.client("cloudwatch")
    s3.create_bucket(Bucket="surgical-models")
    dimensions = [{"Name": "Endpoint", "Value": "surgical-detector"},
                  {"Name": "MonitoringSchedule", "Value": "surgical-detector-drift"}]
    lines = [json.dumps({"MetricName": name, "Timestamp": "2026-11-26T10:00:00Z", "Dimensions": dimensions,
                         "Value": value, "Unit": "None"}) for name, value in (("input_drift_psi", 0.42),
                                                                              ("prediction_drift_psi", 0.05))]
    output = "s3://surgical-models/monitoring/reports/surgical-detector/x/2026/11/26/10"
    assert drift.publish_result_metrics(s3, cloudwatch, output) == 0  # metrics disabled: nothing to publish
    s3.put_object(Bucket="surgical-models", Key=output.split("/", 3)[3] + "/cloudwatch_metrics.jsonl",
                  Body="\n".join(lines).encode())
    assert drift.publish_result_metrics(s3, cloudwatch, output) == 2
    stats = cloudwatch.get_metric_statistics(
        Namespace=monitoring.METRICS_NAMESPACE, MetricName="input_drift_psi", Dimensions=dimensions,
        StartTime=datetime(2026, 11, 26, 9, tzinfo=UTC), EndTime=datetime(2026, 11, 26, 11, tzinfo=UTC),
        Period=3600, Statistics=["Maximum"])["Datapoints"]
    assert [d["Maximum"] for d in stats] == [0.42]
    with pytest.raises(ValueError, match="metric line 2 is not a CloudWatch metric line"):
        drift.metric_data(lines[0] + "\n{\"MetricName\": \"x\"}")


# -- the requests in full: every member the monitor's container and SageMaker read ------------------------------------
KEY = TEST_KEY_ARN
KMS_CONFIG = build_config("local", {"kms_key_arn": KEY, "drift_bins": 7, "drift_psi_threshold": 0.25,
                                    "drift_min_sample_size": 50, "drift_baseline_splits": "train,val",
                                    "tags": {"project": "surgical-mlops", "owner": "ml"}})
ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/drift-monitor:latest"
ISOLATED = {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True}
TAGS = [{"Key": "project", "Value": "surgical-mlops"}, {"Key": "owner", "Value": "ml"}]


def _s3_input(name: str, uri: str, local: str) -> dict:
    return {"InputName": name, "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix",
                                           "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}


def _cluster(**volume: str) -> dict:
    return {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30, **volume}}


def test_the_baseline_request_in_full():
    request = monitoring.baseline_request(KMS_CONFIG, "datasetv20261126xyz", "s3://surgical-models/e/evaluation.json",
                                          "r" * 300)
    assert request == {
        "ProcessingJobName": "drift-baseline-datasetv20261126",
        "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": IMAGE, "ContainerArguments": [
            "baseline", "--dataset", "/opt/ml/processing/input/dataset", "--frames", "/opt/ml/processing/input/frames",
            "--evaluation", "/opt/ml/processing/input/evaluation/evaluation.json", "--output",
            "/opt/ml/processing/baseline", "--splits", "train,val", "--bins", "7", "--psi-threshold", "0.25",
            "--min-sample-size", "50"]},
        "ProcessingInputs": [
            _s3_input("dataset", "s3://surgical-annotations/datasets/datasetv20261126xyz/",
                      "/opt/ml/processing/input/dataset"),
            _s3_input("frames", "s3://surgical-frames-processed/frames/", "/opt/ml/processing/input/frames"),
            _s3_input("evaluation", "s3://surgical-models/e/evaluation.json", "/opt/ml/processing/input/evaluation")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "baseline", "S3Output": {
            "S3Uri": "s3://surgical-models/monitoring/baselines/datasetv20261126xyz",
            "LocalPath": "/opt/ml/processing/baseline", "S3UploadMode": "EndOfJob"}}], "KmsKeyId": KEY},
        "ProcessingResources": _cluster(VolumeKmsKeyId=KEY),
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "NetworkConfig": ISOLATED,
        "Tags": [{"Key": "dataset_version", "Value": "datasetv20261126xyz"}, {"Key": "dag_run_id", "Value": "r" * 256},
                 *TAGS],
    }
    valid("CreateProcessingJob", request)


def test_the_schedule_request_in_full():
    request = monitoring.schedule_request(KMS_CONFIG, "0123456789abcdef")
    baseline = "s3://surgical-models/monitoring/baselines/0123456789abcdef"
    assert request == {
        "MonitoringScheduleName": "surgical-detector-drift",
        "MonitoringScheduleConfig": {
            "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
            "MonitoringType": "DataQuality",
            "MonitoringJobDefinition": {
                "BaselineConfig": {"ConstraintsResource": {"S3Uri": f"{baseline}/constraints.json"},
                                   "StatisticsResource": {"S3Uri": f"{baseline}/statistics.json"}},
                "MonitoringInputs": [{"EndpointInput": {
                    "EndpointName": "surgical-detector", "LocalPath": "/opt/ml/processing/input/endpoint",
                    "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}],
                "MonitoringOutputConfig": {"MonitoringOutputs": [{"S3Output": {
                    "S3Uri": "s3://surgical-models/monitoring/reports", "LocalPath": "/opt/ml/processing/resultdata",
                    "S3UploadMode": "EndOfJob"}}], "KmsKeyId": KEY},
                "MonitoringResources": _cluster(VolumeKmsKeyId=KEY),
                "MonitoringAppSpecification": {"ImageUri": IMAGE},
                "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
                "Environment": {"publish_cloudwatch_metrics": "Enabled"},
                "NetworkConfig": ISOLATED,
                "RoleArn": ROLE,
            },
        },
        "Tags": [{"Key": "dataset_version", "Value": "0123456789abcdef"}, *TAGS],
    }
    valid("CreateMonitoringSchedule", request)


def test_the_processing_monitor_request_in_full():
    start, end = datetime(2026, 11, 26, 9, 7, 30, tzinfo=UTC), datetime(2026, 11, 26, 10, 7, 30, tzinfo=UTC)
    request = monitoring.processing_monitor_request(KMS_CONFIG, "0123456789abcdef", start, end,
                                                    ["s3://a/1/", "s3://a/2/"], "q" * 300)
    assert request == {
        "ProcessingJobName": "drift-monitor-1dfa8fbf-202611261007",  # sha256 of endpoint + stamp, first 8 digits
        "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": IMAGE},
        "Environment": {"publish_cloudwatch_metrics": "Enabled", "dataset_source": "/opt/ml/processing/input/endpoint",
                        "output_path": "/opt/ml/processing/resultdata",
                        "baseline_statistics": "/opt/ml/processing/baseline/statistics.json",
                        "baseline_constraints": "/opt/ml/processing/baseline/constraints.json",
                        "start_time": "2026-11-26T09:07:30Z", "end_time": "2026-11-26T10:07:30Z",
                        "metric_time": "2026-11-26T10:07:30Z", "sagemaker_endpoint_name": "surgical-detector",
                        "sagemaker_monitoring_schedule_name": "surgical-detector-drift"},
        "ProcessingInputs": [
            _s3_input("capture-0", "s3://a/1/", "/opt/ml/processing/input/endpoint/0"),
            _s3_input("capture-1", "s3://a/2/", "/opt/ml/processing/input/endpoint/1"),
            _s3_input("baseline", "s3://surgical-models/monitoring/baselines/0123456789abcdef/",
                      "/opt/ml/processing/baseline")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "resultdata", "S3Output": {
            "S3Uri": "s3://surgical-models/monitoring/reports/surgical-detector/surgical-detector-drift/2026/11/26/10",
            "LocalPath": "/opt/ml/processing/resultdata", "S3UploadMode": "EndOfJob"}}], "KmsKeyId": KEY},
        "ProcessingResources": _cluster(VolumeKmsKeyId=KEY),
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
        "NetworkConfig": ISOLATED,
        "Tags": [{"Key": "dag_run_id", "Value": "q" * 256}, *TAGS],
    }
    valid("CreateProcessingJob", request)
    other = monitoring.processing_monitor_request(KMS_CONFIG, "0123456789abcdef", start, end + timedelta(minutes=1),
                                                  [], "r")
    assert other["ProcessingJobName"].endswith("-202611261008") and other["ProcessingJobName"] != \
        "drift-monitor-1dfa8fbf-202611261008"  # the digest covers the stamp


def test_without_a_key_no_key_member_and_no_volume_key_on_local_storage():
    plain = build_config("local")
    end = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    requests = [monitoring.baseline_request(plain, "v1", "s3://b/e.json", "r"),
                monitoring.processing_monitor_request(plain, "v1", end - timedelta(hours=1), end, ["s3://a/"], "r")]
    schedule = monitoring.schedule_request(plain, "v1")["MonitoringScheduleConfig"]["MonitoringJobDefinition"]
    for output, resources in [(r["ProcessingOutputConfig"], r["ProcessingResources"]) for r in requests] + [
            (schedule["MonitoringOutputConfig"], schedule["MonitoringResources"])]:
        assert "KmsKeyId" not in output and resources == _cluster()
    nvme = build_config("local", {"kms_key_arn": KEY, "monitoring_instance_type": "ml.m5d.large"})
    request = monitoring.baseline_request(nvme, "v1", "s3://b/e.json", "r")
    assert request["ProcessingOutputConfig"]["KmsKeyId"] == KEY
    assert request["ProcessingResources"]["ClusterConfig"] == {"InstanceCount": 1, "InstanceType": "ml.m5d.large",
                                                               "VolumeSizeInGB": 30}


def test_window_hours_are_whole_hours():
    hours = monitoring.window_hours(datetime(2026, 11, 26, 10, 30, 15, 500, tzinfo=UTC), 2)
    assert hours == [datetime(2026, 11, 26, 9, tzinfo=UTC), datetime(2026, 11, 26, 10, tzinfo=UTC)]


# -- the verdict: only a drift check is drift ---------------------------------------------------------------------
def test_no_data_and_insufficient_data_are_never_drift():
    unjudged = [{"feature_name": "", "constraint_check_type": "no_data_check", "description": "no captured records"},
                {"feature_name": "score", "constraint_check_type": "insufficient_data_check"},
                {"feature_name": "brightness", "constraint_check_type": "completeness_check"}]
    verdict = monitoring.assess({"violations": unjudged}, {"dataset": {"item_count": 0}}, [], None)
    assert verdict.to_dict() == {"drift": False, "causes": [], "figures": {
        "violations": [], "unjudged": unjudged, "records": 0, "alarms": {}, "trigger": {}}}
    for violations in (None, {}, {"violations": []}):
        assert monitoring.assess(violations, None, [], {}).to_dict() == {"drift": False, "causes": [], "figures": {
            "violations": [], "unjudged": [], "alarms": {}, "trigger": {}}}
    assert monitoring.assess(None, {"features": []}, [], None).figures["records"] is None


def test_the_causes_name_every_drifted_feature_and_alarm():
    found = [{"feature_name": f"f{i}", "constraint_check_type": "baseline_drift_check", "description": f"PSI {i}"}
             for i in range(6)]
    found[1] = {"feature_name": "f1", "constraint_check_type": "baseline_drift_check"}
    unjudged = {"feature_name": "", "constraint_check_type": "no_data_check"}
    alarms = [{"AlarmName": "input", "StateValue": "ALARM"}, {"AlarmName": "prediction", "StateValue": "OK"},
              {"AlarmName": "records", "StateValue": "INSUFFICIENT_DATA"}]
    verdict = monitoring.assess({"violations": [found[0], unjudged, *found[1:]]}, None, alarms, {
        "alarm_name": "input", "state": "ALARM", "state_changed_at": "t"})  # the trigger's alarm is already a cause
    assert verdict.to_dict() == {"drift": True, "causes": [
        "6 constraint violation(s): f0: PSI 0; f1: baseline_drift_check; f2: PSI 2; f3: PSI 3; f4: PSI 4",
        "alarm input in ALARM: "], "figures": {
        "violations": found, "unjudged": [unjudged], "alarms": {"input": "ALARM", "prediction": "OK",
                                                                "records": "INSUFFICIENT_DATA"},
        "trigger": {"alarm_name": "input", "state": "ALARM", "state_changed_at": "t"}}}


def test_the_trigger_alone_is_drift():
    verdict = monitoring.assess(None, None, [{"AlarmName": "input", "StateValue": "OK"}],
                                {"alarm_name": "prediction", "state": "ALARM",
                                 "state_changed_at": "2026-11-26T10:00:00Z"})
    assert verdict.drift and verdict.causes == [
        "triggered by alarm prediction (ALARM at 2026-11-26T10:00:00Z)"]
    assert monitoring.assess(None, None, [], {"alarm_name": "p"}).causes == ["triggered by alarm p (ALARM at ?)"]
    assert monitoring.assess(None, None, [], {"alarm_name": "p", "state": "OK", "state_changed_at": "t"}).causes == [
        "triggered by alarm p (OK at t)"]  # the state the trigger reports, whatever it is
    assert not monitoring.assess(None, None, [], {"state": "ALARM"}).drift  # no alarm named: no trigger


# -- the new data --------------------------------------------------------------------------------------------------
def test_collect_keeps_at_most_the_limit_and_only_readable_images():
    lines = [_line(None, b"frame%d" % i) for i in range(3)]
    found = monitoring.collect(lines, keep_untraced=True, max_untraced=2)
    assert found.frames == [b"frame0", b"frame1"] and found.untraced == 3
    assert found.summary() == {"videos": [], "traced_records": 0, "untraced_records": 3, "kept_untraced_frames": 2,
                               "unreadable_records": 0}
    assert len(monitoring.collect([_line(None, b"f")] * 501, keep_untraced=True).frames) == 500
    record = json.loads(_line(None))
    del record["captureData"]["endpointInput"]["observedContentType"]  # unknown type: counted, not kept
    record_text = json.loads(_line(None))
    record_text["captureData"]["endpointInput"].update(observedContentType="application/json", encoding="JSON")
    broken = json.loads(_line(None))
    broken["captureData"]["endpointInput"]["data"] = "ab!cd"  # not base64 (without the '!' it would be): unreadable
    found = monitoring.collect([json.dumps(record), json.dumps(record_text), json.dumps(broken)], keep_untraced=True)
    assert (found.untraced, found.unreadable, found.frames) == (3, 1, [])
