"""Model Monitor schedules of the local SageMaker: executions on the schedule's cron, as processing jobs.

A scheduler thread starts one execution of each ``Scheduled`` schedule whenever its ``ScheduleExpression`` fires
(SageMaker's ``cron(0 * ? * * *)`` hourly, ``cron(0 */N ? * * *)``, ``cron(0 H ? * * *)`` daily and ``NOW``; any
6-field cron is accepted locally, a non-zero minute field being a local-only extension AWS rejects). An execution is
a processing job of the schedule's ``MonitoringJobDefinition`` that follows Model Monitor's bring-your-own-container
contract: the endpoint's captured data of the window (whole ``yyyy/mm/dd/hh`` folders that overlap it, as AWS
downloads them) under ``<EndpointInput.LocalPath>/<endpoint>/<variant>/yyyy/mm/dd/hh``, the baseline files, the
contract's environment (``dataset_source``, ``output_path``, ``start_time``...), the result folder uploaded to
``<MonitoringOutputs S3Uri>/<endpoint>/<schedule>/yyyy/mm/dd/hh`` and the metric lines the container wrote in
``/opt/ml/output/metrics/cloudwatch`` published to CloudWatch (``aws/sagemaker/Endpoints/data-metrics``).
Each execution is listed by ListMonitoringExecutions and summarised in the schedule's
``LastMonitoringExecutionSummary``; ``constraint_violations.json`` with violations makes it
``CompletedWithViolations``. Schedules by ``MonitoringJobDefinitionName`` (CreateDataQualityJobDefinition) are not
supported locally: such an execution fails with a reason that says so.

Local-only: ``POST /local/monitoring-schedules/<name>/executions`` runs one execution now (``MonitoringService.run``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from local_aws.sagemaker.exceptions import SageMakerError, ValidationException
from local_aws.sagemaker.resources import KINDS, now
from local_aws.sagemaker.runners import RESTART_REASON, local_path

if TYPE_CHECKING:
    from local_aws.sagemaker.backend import SageMakerBackend

log = logging.getLogger("local_aws.sagemaker.monitoring")
METRICS_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"
ENDPOINT_LOCAL_PATH = "/opt/ml/processing/input/endpoint"
BASELINE_LOCAL_PATH = "/opt/ml/processing/baseline"
METRICS_DIR = "/opt/ml/output/metrics/cloudwatch"
DATASET_FORMAT = json.dumps({"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}})
_DOW = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_MONTHS = {m: i for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
                                       "DEC"], start=1)}


# -- schedule expressions ------------------------------------------------------------------------------------------
def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int] | None:
    """One cron field -> the values it allows; None for ``*``/``?`` (anything)."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.split(","):
        base, _, step = part.partition("/")
        for name, number in (names or {}).items():
            base = base.upper().replace(name, str(number))
        if base in ("*", ""):
            start, stop = low, high
        elif "-" in base:
            start, stop = (int(x) for x in base.split("-", 1))
        else:
            start = int(base)
            stop = high if step else start
        if not (low <= start <= high and low <= stop <= high):
            raise ValueError(f"{part} is outside {low}-{high}")
        values.update(range(start, stop + 1, int(step) if step else 1))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """AWS's 6-field cron (minute hour day-of-month month day-of-week year), UTC."""

    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 1 = Sunday, as AWS counts
    years: frozenset[int] | None

    @classmethod
    def parse(cls, expression: str) -> Cron:
        match = re.fullmatch(r"cron\((.+)\)", expression.strip())
        fields = match.group(1).split() if match else []
        if len(fields) != 6:
            raise ValidationException(f"Invalid ScheduleExpression {expression!r}: expected cron(<minute> <hour> "
                                      "<day-of-month> <month> <day-of-week> <year>), e.g. cron(0 * ? * * *)")
        try:
            return cls(_field(fields[0], 0, 59), _field(fields[1], 0, 23), _field(fields[2], 1, 31),
                       _field(fields[3], 1, 12, _MONTHS), _field(fields[4], 1, 7, _DOW),
                       _field(fields[5], 1970, 2199))
        except ValueError as exc:
            raise ValidationException(f"Invalid ScheduleExpression {expression!r}: {exc}") from exc

    def _day_matches(self, moment: datetime) -> bool:
        weekday = moment.isoweekday() % 7 + 1  # Monday 1 -> 2, Sunday 7 -> 1
        return all(allowed is None or value in allowed for allowed, value in (
            (self.days, moment.day), (self.months, moment.month), (self.weekdays, weekday), (self.years, moment.year),
            (self.hours, moment.hour)))

    def next_after(self, moment: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (within about two years)."""
        hour = moment.replace(minute=0, second=0, microsecond=0)
        minutes = sorted(self.minutes) if self.minutes is not None else list(range(60))
        for _ in range(24 * 800):
            if self._day_matches(hour):
                for minute in minutes:
                    fire = hour.replace(minute=minute)
                    if fire > moment:
                        return fire
            hour += timedelta(hours=1)
        return None


def validate_schedule_config(config: dict[str, Any]) -> None:
    expression = config.get("ScheduleConfig", {}).get("ScheduleExpression")
    if expression and expression != "NOW":
        Cron.parse(expression)


def _offset(text: str) -> timedelta:
    """``-PT1H``, ``-PT30M``, ``-P1D``: ScheduleConfig's DataAnalysisStartTime/EndTime offsets."""
    match = re.fullmatch(r"(-?)P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", text.strip())
    if not match:
        raise ValidationException(f"Invalid analysis time offset {text!r} (expected e.g. -PT1H)")
    sign, days, hours, minutes = match.groups()
    delta = timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0))
    return -delta if sign else delta


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def capture_hours(start: datetime, end: datetime) -> list[datetime]:
    """The ``yyyy/mm/dd/hh`` capture folders that overlap [start, end)."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end or (hour == start.replace(minute=0, second=0, microsecond=0) and not hours):
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def metric_lines(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The container's metric lines (PutMetricData members) and a note per line that could not be read."""
    data, problems = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                datum = {"MetricName": str(item["MetricName"]), "Timestamp": _parse_time(item["Timestamp"]),
                         "Dimensions": [{"Name": d["Name"], "Value": str(d["Value"])}
                                        for d in item.get("Dimensions", [])]}
                if "StatisticValues" in item:
                    datum["StatisticValues"] = {k: float(v) for k, v in item["StatisticValues"].items()}
                else:
                    datum["Value"] = float(item["Value"])
                if item.get("Unit"):
                    datum["Unit"] = item["Unit"]
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path.name}:{number}: {exc!r}")
                continue
            data.append(datum)
    return data, problems


def has_violations(result_dir: Path) -> bool:
    path = result_dir / "constraint_violations.json"
    try:
        return bool(json.loads(path.read_text()).get("violations"))
    except (OSError, ValueError, AttributeError):
        return False


# -- the service ---------------------------------------------------------------------------------------------------
class MonitoringService:
    """Executions of monitoring schedules: the scheduler thread, run-now, and their records."""

    def __init__(self, backend: SageMakerBackend) -> None:
        self.backend = backend
        self.resources, self.store = backend.resources, backend.store
        self.tick_s = float(os.environ.get("LOCAL_MONITORING_TICK_S", "10"))
        self._next: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._cloudwatch = boto3.client("cloudwatch")

    # -- scheduler ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._loop, daemon=True, name="monitoring-scheduler").start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick(datetime.now(UTC))
            except Exception:  # the scheduler outlives any one schedule's trouble
                log.exception("monitoring scheduler tick failed")

    def tick(self, moment: datetime) -> list[str]:
        """Start the executions due at ``moment``; returns their processing job names."""
        started = []
        for schedule in list(self.store.items("MonitoringSchedule")):
            name = schedule["MonitoringScheduleName"]
            if schedule.get("MonitoringScheduleStatus") != "Scheduled":
                self._next.pop(name, None)
                continue
            config = schedule["MonitoringScheduleConfig"].get("ScheduleConfig", {})
            expression = config.get("ScheduleExpression")
            if not expression:
                continue
            try:
                if expression == "NOW":  # one-time: a single execution, then nothing more
                    if "LastMonitoringExecutionSummary" not in schedule:
                        started.append(self.start_execution(name, moment)["ProcessingJobName"])
                    continue
                cron = Cron.parse(expression)
                due = self._next.setdefault(name, cron.next_after(moment) or datetime.max.replace(tzinfo=UTC))
                if moment >= due:
                    self._next[name] = cron.next_after(moment) or datetime.max.replace(tzinfo=UTC)
                    started.append(self.start_execution(name, due)["ProcessingJobName"])
            except Exception:
                log.exception("monitoring schedule %s: execution could not start", name)
        return started

    def recover(self) -> None:
        """After a restart nothing stays Pending/InProgress: as jobs, such executions are marked Failed."""
        for execution in list(self.store.items("MonitoringExecution")):
            if execution["MonitoringExecutionStatus"] in ("Pending", "InProgress", "Stopping"):
                self._update(execution["ProcessingJobArn"], "Failed", RESTART_REASON.format(what="execution"))

    # -- one execution --------------------------------------------------------------------------------------------
    def run(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run-now (local only): the window is the body's StartTime/EndTime, by default the hour up to now.

        The default end is the start of the next whole second: captured records carry ``inferenceTime`` in whole
        seconds (as on AWS) and the window goes to the container in whole seconds, so an end of "now" would leave out
        the records of the current second (a run-now right after the traffic missed up to half of it)."""
        self.resources.describe("MonitoringSchedule", name)
        moment = datetime.now(UTC)
        start = _parse_time(body["StartTime"]) if body.get("StartTime") else None
        end = _parse_time(body["EndTime"]) if body.get("EndTime") else moment.replace(microsecond=0) + timedelta(
            seconds=1)
        return self.start_execution(name, moment, (start or end - timedelta(hours=1), end))

    def window(self, schedule: dict[str, Any], scheduled: datetime) -> tuple[datetime, datetime]:
        """The data an execution analyses: the offsets of ScheduleConfig, else the previous period of the cron
        (the previous hour for an hourly schedule, as on AWS)."""
        config = schedule["MonitoringScheduleConfig"].get("ScheduleConfig", {})
        if config.get("DataAnalysisStartTime") and config.get("DataAnalysisEndTime"):
            return (scheduled + _offset(config["DataAnalysisStartTime"]),
                    scheduled + _offset(config["DataAnalysisEndTime"]))
        expression = config.get("ScheduleExpression", "NOW")
        if expression != "NOW":
            cron = Cron.parse(expression)
            previous = scheduled - timedelta(hours=1)
            probe = cron.next_after(scheduled - timedelta(days=2))
            while probe is not None and probe < scheduled:
                previous, probe = probe, cron.next_after(probe)
            return previous, scheduled
        return scheduled - timedelta(hours=1), scheduled

    def start_execution(self, name: str, scheduled: datetime,
                        window: tuple[datetime, datetime] | None = None) -> dict[str, Any]:
        schedule = self.resources.describe("MonitoringSchedule", name)
        config = schedule["MonitoringScheduleConfig"]
        start, end = window or self.window(schedule, scheduled)
        digest = hashlib.sha256(f"{name}\n{scheduled.isoformat()}\n{uuid.uuid4()}".encode()).hexdigest()[:24]
        job_name = f"model-monitoring-{scheduled:%Y%m%d%H%M}-{digest}"
        job_arn = KINDS["ProcessingJob"].arn(job_name)
        execution = {"MonitoringScheduleName": name, "ScheduledTime": scheduled.timestamp(), "CreationTime": now(),
                     "LastModifiedTime": now(), "MonitoringExecutionStatus": "Pending", "ProcessingJobArn": job_arn,
                     "MonitoringType": config.get("MonitoringType", schedule.get("MonitoringType", "DataQuality"))}
        if schedule.get("EndpointName"):
            execution["EndpointName"] = schedule["EndpointName"]
        if config.get("MonitoringJobDefinitionName"):
            execution["MonitoringJobDefinitionName"] = config["MonitoringJobDefinitionName"]
        self.store.create("MonitoringExecution", job_arn, KINDS["MonitoringExecution"].arn(job_name), execution,
                          execution["CreationTime"])
        self._summarise(name, execution)
        try:
            request, result_dir, publish = self._processing_request(schedule, job_name, scheduled, start, end)
            started = self._update(job_arn, "InProgress", None, job_name)  # before the job can finish
            self.backend.op_CreateProcessingJob(
                request, on_done=lambda job: self._finished(job_arn, job, result_dir, publish))
        except SageMakerError as exc:
            return self._update(job_arn, "Failed", f"{exc.code}: {exc}", job_name)
        except Exception as exc:  # any setup error fails this execution, never the schedule
            log.exception("monitoring schedule %s: execution %s could not start", name, job_name)
            return self._update(job_arn, "Failed", f"InternalServerError: {exc}", job_name)
        return started

    def _processing_request(self, schedule: dict[str, Any], job_name: str, scheduled: datetime, start: datetime,
                            end: datetime) -> tuple[dict[str, Any], str, bool]:
        config = schedule["MonitoringScheduleConfig"]
        definition = config.get("MonitoringJobDefinition")
        if definition is None:
            raise ValidationException(
                "MonitoringJobDefinitionName schedules (Create*JobDefinition) are not supported by the local "
                "SageMaker: give the schedule an inline MonitoringJobDefinition.")
        endpoint_input = next((i["EndpointInput"] for i in definition["MonitoringInputs"] if "EndpointInput" in i),
                              None)
        if endpoint_input is None:
            raise ValidationException("The local SageMaker monitors endpoints only (MonitoringInputs.EndpointInput; "
                                      "BatchTransformInput is not supported).")
        endpoint_name = endpoint_input["EndpointName"]
        endpoint = self.resources.describe("Endpoint", endpoint_name)
        capture = endpoint.get("DataCaptureConfig") or {}
        if not capture.get("EnableCapture") or not capture.get("DestinationS3Uri"):
            raise ValidationException(f"Endpoint {endpoint_name} does not capture data (DataCaptureConfig): "
                                      "there is nothing to monitor.")
        self._flush_capture(endpoint_name)
        variants = [v["VariantName"] for v in endpoint.get("ProductionVariants", [])]
        local = endpoint_input.get("LocalPath", ENDPOINT_LOCAL_PATH).rstrip("/")
        destination = capture["DestinationS3Uri"].rstrip("/")
        inputs = []
        for variant in variants:
            for hour in capture_hours(start, end):
                folder = f"{endpoint_name}/{variant}/{hour:%Y/%m/%d/%H}"
                inputs.append({"InputName": f"endpoint-{variant}-{hour:%Y%m%d%H}", "S3Input": {
                    "S3Uri": f"{destination}/{folder}/", "LocalPath": f"{local}/{folder}", "S3DataType": "S3Prefix",
                    "S3InputMode": "File"}})
        environment = {
            "dataset_format": DATASET_FORMAT, "dataset_source": local, "start_time": _iso(start),
            "end_time": _iso(end), "metric_time": _iso(scheduled), "publish_cloudwatch_metrics": "Enabled",
            "sagemaker_endpoint_name": endpoint_name, "sagemaker_monitoring_schedule_name":
                schedule["MonitoringScheduleName"],
        }
        baseline = definition.get("BaselineConfig", {})
        for key, resource, folder in (("baseline_statistics", "StatisticsResource", "stats"),
                                      ("baseline_constraints", "ConstraintsResource", "constraints")):
            uri = baseline.get(resource, {}).get("S3Uri")
            if uri:
                target = f"{BASELINE_LOCAL_PATH}/{folder}"
                inputs.append({"InputName": key, "S3Input": {"S3Uri": uri, "LocalPath": target,
                                                             "S3DataType": "S3Prefix", "S3InputMode": "File"}})
                environment[key] = f"{target}/{uri.rstrip('/').rsplit('/', 1)[-1]}"
        environment.update(definition.get("Environment", {}))  # the definition may turn metrics off
        output = definition["MonitoringOutputConfig"]["MonitoringOutputs"][0]["S3Output"]
        environment["output_path"] = output["LocalPath"]
        upload = f"{output['S3Uri'].rstrip('/')}/{endpoint_name}/{schedule['MonitoringScheduleName']}/" \
                 f"{scheduled:%Y/%m/%d/%H}"
        app = definition["MonitoringAppSpecification"]
        request = {
            "ProcessingJobName": job_name, "RoleArn": definition["RoleArn"],
            "AppSpecification": {"ImageUri": app["ImageUri"],
                                 **{k: app[k] for k in ("ContainerEntrypoint", "ContainerArguments") if k in app}},
            "ProcessingInputs": inputs,
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "result", "S3Output": {
                "S3Uri": upload, "LocalPath": output["LocalPath"],
                "S3UploadMode": output.get("S3UploadMode", "EndOfJob")}}]},
            "ProcessingResources": {"ClusterConfig": definition["MonitoringResources"]["ClusterConfig"]},
            "StoppingCondition": definition.get("StoppingCondition", {"MaxRuntimeInSeconds": 3600}),
            "Environment": environment,
            "MonitoringScheduleArn": schedule["MonitoringScheduleArn"],
        }
        publish = environment.get("publish_cloudwatch_metrics", "Enabled").lower() == "enabled"
        return request, output["LocalPath"], publish

    def _flush_capture(self, endpoint: str) -> None:
        """Captured records still buffered in this process reach S3 before the execution reads them (on AWS the
        capture lands within minutes; run-now right after invocations should see them)."""
        deployment = getattr(self.backend.endpoints, "_deployments", {}).get(endpoint)
        if deployment is not None and deployment.capture is not None:
            deployment.capture.flush()

    def _finished(self, job_arn: str, job: dict[str, Any], result_dir: str, publish: bool) -> None:
        try:
            name = job["ProcessingJobName"]
            root = self.backend.jobs.job_root("ProcessingJob", name)
            status = job["ProcessingJobStatus"]
            if status == "Completed":
                if publish:
                    self._publish(root, name)
                status = "CompletedWithViolations" if has_violations(local_path(root, result_dir)) else "Completed"
            self._update(job_arn, status, job.get("FailureReason") if status in ("Failed", "Stopped") else None)
        except Exception as exc:  # the execution ends, whatever went wrong after the job
            log.exception("monitoring execution %s: completion failed", job_arn)
            self._update(job_arn, "Failed", f"InternalServerError: {exc}")

    def _publish(self, root: Path, job_name: str) -> None:
        data, problems = metric_lines(local_path(root, METRICS_DIR))
        for problem in problems:
            log.warning("monitoring execution %s: metric line skipped: %s", job_name, problem)
        for index in range(0, len(data), 20):
            self._cloudwatch.put_metric_data(Namespace=METRICS_NAMESPACE, MetricData=data[index:index + 20])

    def _update(self, job_arn: str, status: str, reason: str | None, job_name: str | None = None
                ) -> dict[str, Any]:
        def change(d: dict[str, Any]) -> None:
            d["MonitoringExecutionStatus"] = status
            d["LastModifiedTime"] = now()
            if reason:
                d["FailureReason"] = reason[:1024]

        execution = self.store.update("MonitoringExecution", job_arn, change)
        assert execution is not None
        self._summarise(execution["MonitoringScheduleName"], execution)
        return {**execution, "ProcessingJobName": job_name or job_arn.rsplit("/", 1)[-1]}

    def _summarise(self, schedule: str, execution: dict[str, Any]) -> None:
        def change(d: dict[str, Any]) -> None:
            last = d.get("LastMonitoringExecutionSummary")
            if last is None or last["ScheduledTime"] <= execution["ScheduledTime"] or \
                    last["ProcessingJobArn"] == execution["ProcessingJobArn"]:
                d["LastMonitoringExecutionSummary"] = dict(execution)

        self.store.update("MonitoringSchedule", schedule, change)

    # -- listing --------------------------------------------------------------------------------------------------
    def list_executions(self, request: dict[str, Any]) -> dict[str, Any]:
        rows = list(self.store.items("MonitoringExecution"))
        for bound, keep in (("ScheduledTimeAfter", lambda v, b: v > b), ("ScheduledTimeBefore", lambda v, b: v < b)):
            if request.get(bound) is not None:
                limit = _parse_time(request[bound]).timestamp()
                rows = [r for r in rows if keep(r["ScheduledTime"], limit)]
        if request.get("MonitoringTypeEquals"):
            rows = [r for r in rows if r.get("MonitoringType") == request["MonitoringTypeEquals"]]
        return self.resources.list("MonitoringExecution", request, rows)

