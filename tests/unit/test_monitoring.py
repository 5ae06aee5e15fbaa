"""drift_retrain's requests and decisions: valid SageMaker requests for both monitor backends and the baseline, the
drift verdict with its causes, and the new data traced back to videos through InferenceId."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from include import monitoring
from include.config import build_config
from tests.sagemaker_api import valid

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
