"""Parts of the local monitoring that need no stack: cron schedules, windows, metric lines, alarm evaluation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from local_aws import alarms, bootstrap
from local_aws.sagemaker.exceptions import ValidationException
from local_aws.sagemaker.monitoring import Cron, MonitoringService, capture_hours, has_violations, metric_lines


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("cron(0 * ? * * *)", "2026-11-25T10:15:00", "2026-11-25T11:00:00"),
    ("cron(0 * ? * * *)", "2026-11-25T11:00:00", "2026-11-25T12:00:00"),
    ("cron(0 */6 ? * * *)", "2026-11-25T10:15:00", "2026-11-25T12:00:00"),
    ("cron(0 3 ? * * *)", "2026-11-25T10:15:00", "2026-11-26T03:00:00"),
    ("cron(0 3 ? * MON *)", "2026-11-25T10:15:00", "2026-11-30T03:00:00"),  # 2026-11-25 is a Wednesday
    ("cron(*/5 * ? * * *)", "2026-11-25T10:16:00", "2026-11-25T10:20:00"),  # local-only minute field
])
def test_cron_fires_as_sagemaker_schedules_do(expression, after, expected):
    assert Cron.parse(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize("expression", ["rate(1 hour)", "cron(0 * * *)", "cron(0 24 ? * * *)", "cron(x * ? * * *)"])
def test_malformed_schedule_expressions_are_validation_errors(expression):
    with pytest.raises(ValidationException, match="Invalid ScheduleExpression"):
        Cron.parse(expression)


def test_hourly_window_is_the_previous_hour_and_offsets_are_honoured():
    service = MonitoringService.__new__(MonitoringService)
    hourly = {"MonitoringScheduleConfig": {"ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"}}}
    assert service.window(hourly, at("2026-11-25T11:00:00")) == (at("2026-11-25T10:00:00"), at("2026-11-25T11:00:00"))
    daily = {"MonitoringScheduleConfig": {"ScheduleConfig": {"ScheduleExpression": "cron(0 3 ? * * *)"}}}
    assert service.window(daily, at("2026-11-25T03:00:00"))[0] == at("2026-11-24T03:00:00")
    one_time = {"MonitoringScheduleConfig": {"ScheduleConfig": {
        "ScheduleExpression": "NOW", "DataAnalysisStartTime": "-PT2H", "DataAnalysisEndTime": "-PT0H"}}}
    assert service.window(one_time, at("2026-11-25T11:30:00")) == (at("2026-11-25T09:30:00"),
                                                                    at("2026-11-25T11:30:00"))


def test_capture_folders_cover_every_hour_the_window_touches():
    assert capture_hours(at("2026-11-25T09:30:00"), at("2026-11-25T11:00:00")) == [
        at("2026-11-25T09:00:00"), at("2026-11-25T10:00:00")]
    assert capture_hours(at("2026-11-25T09:30:00"), at("2026-11-25T11:05:00"))[-1] == at("2026-11-25T11:00:00")


def test_metric_lines_keep_good_lines_and_name_bad_ones(tmp_path):
    (tmp_path / "m.jsonl").write_text("\n".join([
        json.dumps({"MetricName": "input_drift_psi", "Timestamp": "2026-11-25T11:00:00Z", "Value": 0.3,
                    "Dimensions": [{"Name": "Endpoint", "Value": "e"}]}),
        "{not json", json.dumps({"MetricName": "x"}), ""]))
    data, problems = metric_lines(tmp_path)
    assert data == [{"MetricName": "input_drift_psi", "Timestamp": at("2026-11-25T11:00:00"), "Value": 0.3,
                     "Dimensions": [{"Name": "Endpoint", "Value": "e"}]}]
    assert len(problems) == 2 and problems[0].startswith("m.jsonl:2")
    assert metric_lines(tmp_path / "missing") == ([], [])


def test_violations_need_a_non_empty_list(tmp_path):
    assert not has_violations(tmp_path)
    (tmp_path / "constraint_violations.json").write_text('{"violations": []}')
    assert not has_violations(tmp_path)
    (tmp_path / "constraint_violations.json").write_text('{"violations": [{"feature_name": "x"}]}')
    assert has_violations(tmp_path)


# -- alarms ----------------------------------------------------------------------------------------------------------
def dim(name: str, value: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, value=value)


def alarm(**overrides) -> SimpleNamespace:
    values = {"name": "a", "alarm_arn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:a", "namespace": "ns",
              "metric_name": "m", "dimensions": [dim("Endpoint", "e")], "statistic": "Maximum",
              "extended_statistic": None, "period": 3600, "evaluation_periods": 1, "datapoints_to_alarm": None,
              "threshold": 0.2, "comparison_operator": "GreaterThanThreshold", "treat_missing_data": "notBreaching",
              "metric_data_queries": [], "rule": None}
    values.update(overrides)
    return SimpleNamespace(**values)


def datum(value: float, when: datetime, dimensions=None, name: str = "m") -> SimpleNamespace:
    return SimpleNamespace(namespace="ns", name=name, value=value, timestamp=when,
                           dimensions=dimensions if dimensions is not None else [dim("Endpoint", "e")])


NOW = at("2026-11-25T11:20:00")


def test_breaching_datapoint_alarms_with_the_figures_in_the_reason():
    verdict = alarms.evaluate(alarm(), [datum(0.1, NOW - timedelta(minutes=5)), datum(0.35, NOW)], NOW)
    assert verdict.state == "ALARM"
    assert verdict.reason == ("Threshold Crossed: 1 datapoint [0.35 (25/11/26 11:00:00)] was greater than the "
                              "threshold (0.2).")
    reason = json.loads(verdict.reason_data)
    assert reason["period"] == 3600 and reason["evaluatedDatapoints"][0]["value"] == 0.35


def test_other_dimensions_metrics_and_old_periods_do_not_count():
    data = [datum(9, NOW, [dim("Endpoint", "other")]), datum(9, NOW, [dim("Endpoint", "e"), dim("X", "y")]),
            datum(9, NOW, name="other"), datum(9, NOW - timedelta(hours=2))]
    assert alarms.evaluate(alarm(), data, NOW).state == "OK"  # notBreaching: no data is fine
    assert alarms.evaluate(alarm(treat_missing_data="missing"), data, NOW).state == "INSUFFICIENT_DATA"
    assert alarms.evaluate(alarm(treat_missing_data="breaching"), data, NOW).state == "ALARM"
    assert alarms.evaluate(alarm(treat_missing_data="ignore"), data, NOW) is None


def test_m_out_of_n_and_less_than_operators():
    hourly = [datum(v, NOW - timedelta(hours=i)) for i, v in enumerate([0.9, 0.1, 0.9])]
    two_of_three = alarm(evaluation_periods=3, datapoints_to_alarm=2)
    assert alarms.evaluate(two_of_three, hourly, NOW).state == "ALARM"
    assert alarms.evaluate(alarm(evaluation_periods=3), hourly, NOW).state == "OK"
    quality = alarm(statistic="Minimum", threshold=0.8, comparison_operator="LessThanThreshold", period=86400)
    verdict = alarms.evaluate(quality, [datum(0.75, NOW)], NOW)
    assert verdict.state == "ALARM" and "was less than the threshold (0.8)" in verdict.reason


def test_state_change_event_has_cloudwatchs_shape():
    a = alarm(state_value="ALARM", state_reason="r", state_reason_data="{}", state_updated_timestamp=NOW,
              description="d")
    entry = alarms.state_change_event(a, {"value": "OK", "reason": "x", "timestamp": "t"}, "123456789012",
                                      "us-east-1")
    assert entry["Source"] == "aws.cloudwatch" and entry["DetailType"] == "CloudWatch Alarm State Change"
    assert entry["Resources"] == [a.alarm_arn]
    detail = json.loads(entry["Detail"])
    assert detail["state"] == {"value": "ALARM", "reason": "r", "reasonData": "{}",
                               "timestamp": "2026-11-25T11:20:00.000+0000"}
    assert detail["configuration"]["metrics"][0]["metricStat"] == {
        "metric": {"namespace": "ns", "name": "m", "dimensions": {"Endpoint": "e"}}, "period": 3600,
        "stat": "Maximum"}


# -- infra/monitoring.yaml on moto -------------------------------------------------------------------------------
def test_monitoring_template_is_deployable_without_its_alarms():
    template = bootstrap._load_template(bootstrap.MONITORING_TEMPLATE)
    body = json.loads(bootstrap.deployable_template(template, {"Stage": "local"}))
    assert not [r for r in body["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    pattern = body["Resources"]["AlarmToRetrainRule"]["Properties"]["EventPattern"]
    assert "arn:aws:cloudwatch:us-east-1:123456789012:alarm:surgical-input-drift-local" in pattern["resources"]
    assert body["Outputs"]["TriggerFunctionArn"]["Value"] == {"Fn::GetAtt": ["TriggerFunction", "Arn"]}


def test_scheduler_starts_each_scheduled_schedule_once_per_firing_and_skips_stopped_ones():
    schedules = [
        {"MonitoringScheduleName": "hourly", "MonitoringScheduleStatus": "Scheduled",
         "MonitoringScheduleConfig": {"ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"}}},
        {"MonitoringScheduleName": "stopped", "MonitoringScheduleStatus": "Stopped",
         "MonitoringScheduleConfig": {"ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"}}},
    ]
    service = MonitoringService.__new__(MonitoringService)
    service.store, service._next = SimpleNamespace(items=lambda kind: schedules), {}
    runs: list[tuple[str, datetime]] = []
    service.start_execution = lambda name, due: runs.append((name, due)) or {"ProcessingJobName": name}
    for moment in ("10:20", "10:59", "11:00", "11:00", "11:30", "12:00"):
        service.tick(at(f"2026-11-25T{moment}:00"))
    assert runs == [("hourly", at("2026-11-25T11:00:00")), ("hourly", at("2026-11-25T12:00:00"))]
