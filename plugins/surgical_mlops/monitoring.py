"""Model Monitor on ``SageMakerHook``: create-or-update a monitoring schedule, and wait for its latest execution.

The Amazon provider has no Model Monitor operator or sensor. ``SageMakerMonitoringScheduleOperator`` makes the
schedule exist with the given config (CreateMonitoringSchedule the first time, UpdateMonitoringSchedule afterwards,
StartMonitoringSchedule if it was stopped) and waits until it is Scheduled. ``SageMakerMonitoringExecutionSensor``
waits for the schedule's newest execution scheduled at or after a time and returns its summary; a Failed or Stopped
execution fails the task with SageMaker's reason (``CompletedWithViolations`` is a success: violations are what the
monitor is for, the DAG decides what they mean).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerBaseOperator
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from botocore.exceptions import ClientError

DONE = ("Completed", "CompletedWithViolations")
FAILED = ("Failed", "Stopped")


class SageMakerMonitoringScheduleOperator(SageMakerBaseOperator):
    """:param config: a CreateMonitoringSchedule request (templated). Returns DescribeMonitoringSchedule."""

    template_fields: Sequence[str] = aws_template_fields("config")

    def __init__(self, *, config: dict, wait_timeout_s: float = 300, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        self.wait_timeout_s = wait_timeout_s

    def _describe(self, name: str) -> dict | None:
        try:
            return self.hook.conn.describe_monitoring_schedule(MonitoringScheduleName=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ResourceNotFound", "ValidationException"):
                return None
            raise

    def execute(self, context: Any) -> dict:
        name = self.config["MonitoringScheduleName"]
        current = self._describe(name)
        if current is None:
            self.log.info("creating monitoring schedule %s", name)
            self.hook.conn.create_monitoring_schedule(**self.config)
        else:
            self.log.info("updating monitoring schedule %s (was %s)", name, current["MonitoringScheduleStatus"])
            self.hook.conn.update_monitoring_schedule(
                MonitoringScheduleName=name, MonitoringScheduleConfig=self.config["MonitoringScheduleConfig"])
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            described = self._describe(name) or {}
            status = described.get("MonitoringScheduleStatus")
            if status == "Scheduled":
                break
            if status == "Stopped":
                self.hook.conn.start_monitoring_schedule(MonitoringScheduleName=name)
            elif status == "Failed":
                raise RuntimeError(f"monitoring schedule {name} failed: {described.get('FailureReason')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"monitoring schedule {name} is {status} after {self.wait_timeout_s:.0f} s")
            time.sleep(self.check_interval)
        self.log.info("monitoring schedule %s is Scheduled (%s)", name,
                      described["MonitoringScheduleConfig"]["ScheduleConfig"]["ScheduleExpression"])
        return self.serialize_result(described)

    def serialize_result(self, described: dict) -> dict:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in described.items()
                if k != "ResponseMetadata"}


class SageMakerMonitoringExecutionSensor(AwsBaseSensor[SageMakerHook]):
    """
    Wait for the newest execution of ``schedule_name`` scheduled at or after ``after``.

    :param schedule_name: the monitoring schedule (templated)
    :param after: ISO 8601 time (templated); executions scheduled before it do not count
    """

    aws_hook_class = SageMakerHook
    template_fields: Sequence[str] = aws_template_fields("schedule_name", "after")

    def __init__(self, *, schedule_name: str, after: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schedule_name, self.after = schedule_name, after

    def poke(self, context: Any) -> Any:
        from airflow.sdk.bases.sensor import PokeReturnValue

        request: dict[str, Any] = {"MonitoringScheduleName": self.schedule_name, "SortBy": "ScheduledTime",
                                   "SortOrder": "Descending", "MaxResults": 1}
        if self.after:
            request["ScheduledTimeAfter"] = datetime.fromisoformat(self.after.replace("Z", "+00:00"))
        summaries = self.hook.conn.list_monitoring_executions(**request)["MonitoringExecutionSummaries"]
        if not summaries:
            self.log.info("no execution of %s since %s yet", self.schedule_name, self.after)
            return False
        latest = summaries[0]
        status = latest["MonitoringExecutionStatus"]
        self.log.info("execution scheduled %s: %s", latest["ScheduledTime"], status)
        if status in FAILED:
            raise RuntimeError(f"monitoring execution of {self.schedule_name} {status}: "
                               f"{latest.get('FailureReason', 'no reason given')}")
        if status not in DONE:
            return False
        return PokeReturnValue(True, {k: (v.isoformat() if isinstance(v, datetime) else v)
                                      for k, v in latest.items()})
