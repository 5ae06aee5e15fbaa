"""Task bodies of drift_retrain (the DAG file only wires them)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from include import monitoring
from include.config import load_config
from include.s3 import prefix_exists, read_json_if_exists, read_text_if_exists, split_uri

log = logging.getLogger(__name__)
AWS_CONN_ID = "aws_default"
RESULT_METRICS_FILE = "cloudwatch_metrics.jsonl"  # containers/drift_monitor: its metric lines beside its results


def _clients() -> tuple[Any, Any, Any]:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return (S3Hook(aws_conn_id=AWS_CONN_ID).get_conn(), SageMakerHook(aws_conn_id=AWS_CONN_ID).conn,
            AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type="cloudwatch").conn)


def plan(params: Mapping[str, Any], conf: Mapping[str, Any], run_id: str, end: datetime | None) -> dict[str, Any]:
    """What is deployed, its baseline (built if missing), the window, and the monitor request of the backend.

    A run triggered by the alarm Lambda (``include/lambdas/trigger_drift_retrain.py``) carries the alarm's conf: it
    is the recorded reason, and its window (the alarm's evaluated period) is the window monitored."""
    from airflow.sdk.exceptions import AirflowSkipException

    config = load_config()
    s3, sagemaker, _ = _clients()
    deployed = read_json_if_exists(s3, config.models_bucket, f"deployments/{config.endpoint_name}/latest.json")
    if not deployed:
        raise AirflowSkipException(f"nothing deployed on {config.endpoint_name}: nothing to monitor")
    package = sagemaker.describe_model_package(ModelPackageName=deployed["model_package_arn"])
    dataset = package.get("CustomerMetadataProperties", {}).get("dataset_version")
    if not dataset:
        raise ValueError(f"{package['ModelPackageArn']} has no dataset_version lineage: cannot build its baseline")
    evaluation = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    trigger = dict(params.get("reason") or {}) or ({k: v for k, v in conf.items() if k != "window_hours"}
                                                    if conf.get("alarm_name") else {})
    window = trigger.get("window") or {}
    end = datetime.fromisoformat(window["end"]) if window.get("end") else (end or datetime.now(UTC))
    end = end.astimezone(UTC)
    hours = int(params.get("window_hours") or config.drift_window_hours)
    start = end - timedelta(hours=hours)
    if window.get("start"):
        start = min(start, datetime.fromisoformat(window["start"]).astimezone(UTC))
        hours = max(hours, int((end - start).total_seconds() // 3600) + 1)
    has_baseline = prefix_exists(s3, *split_uri(f"{monitoring.baseline_prefix(config, dataset)}/constraints.json"))
    captures = [f"s3://{config.models_bucket}/{monitoring.capture_prefix(config)}AllTraffic/"
                f"{hour.strftime('%Y/%m/%d/%H')}/" for hour in monitoring.window_hours(end, hours + 1)]
    captures = [uri for uri in captures if prefix_exists(s3, *split_uri(uri))]
    result = {
        "endpoint": config.endpoint_name, "package_arn": package["ModelPackageArn"], "dataset_version": dataset,
        "backend": config.monitoring_backend, "window": {"start": start.isoformat(), "end": end.isoformat()},
        # The execution to read: for the hourly check, the one scheduled at the window's end (it covers the window);
        # for an alarm's run, the one that raised the alarm, scheduled within the alarm's window.
        "execution_after": (start if trigger else end).isoformat(),
        "baseline": None if has_baseline else monitoring.baseline_request(config, dataset, evaluation, run_id),
        "schedule": monitoring.schedule_request(config, dataset),
        "monitor": monitoring.processing_monitor_request(config, dataset, start, end, captures, run_id)
        if captures else None,
        "captures": captures, "trigger": trigger,
    }
    log.info("monitoring %s (package %s, dataset %s) over %s .. %s with the %s backend; %d capture folder(s)%s",
             config.endpoint_name, package["ModelPackageArn"], dataset, start.isoformat(), end.isoformat(),
             config.monitoring_backend, len(captures), "; the baseline is built first" if not has_baseline else "")
    return result


def monitor_route(planned: Mapping[str, Any]) -> list[str]:
    """The tasks that run: the backend's monitor (none without captured data for the Processing backend); assess
    always (it also reads the alarms and the trigger's reason)."""
    if planned["backend"] == "processing":
        return [*(["monitor.run_monitor"] if planned["monitor"] else []), "assess"]
    return ["monitor.schedule", "assess"]


def _violations(s3: Any, output_uri: str) -> tuple[dict | None, dict | None]:
    bucket, prefix = split_uri(output_uri)
    prefix = prefix.rstrip("/")
    return (read_json_if_exists(s3, bucket, f"{prefix}/constraint_violations.json"),
            read_json_if_exists(s3, bucket, f"{prefix}/statistics.json"))


def metric_data(text: str) -> list[dict[str, Any]]:
    """PutMetricData members from the monitor's metric lines (``cloudwatch_metrics.jsonl``); a bad line is an error
    naming the line (the container writes them, so a bad one is a bug, not input)."""
    data = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            datum = {"MetricName": str(item["MetricName"]), "Value": float(item["Value"]),
                     "Timestamp": datetime.fromisoformat(str(item["Timestamp"]).replace("Z", "+00:00")),
                     "Dimensions": [{"Name": str(d["Name"]), "Value": str(d["Value"])}
                                    for d in item.get("Dimensions", [])]}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"metric line {number} is not a CloudWatch metric line: {exc!r}") from exc
        if item.get("Unit"):
            datum["Unit"] = str(item["Unit"])
        data.append(datum)
    return data


def publish_result_metrics(s3: Any, cloudwatch: Any, output_uri: str) -> int:
    """Publish the metric lines a monitor Processing job left beside its results; the number published."""
    bucket, prefix = split_uri(output_uri)
    text = read_text_if_exists(s3, bucket, f"{prefix.rstrip('/')}/{RESULT_METRICS_FILE}")
    data = metric_data(text or "")
    for index in range(0, len(data), 20):  # PutMetricData's limit is 1000; 20 keeps each request small
        cloudwatch.put_metric_data(Namespace=monitoring.METRICS_NAMESPACE, MetricData=data[index:index + 20])
    return len(data)


def assess(planned: Mapping[str, Any], execution: Mapping[str, Any] | None, processing: Mapping[str, Any] | None,
           run_id: str) -> dict[str, Any]:
    """The verdict with its causes and figures, written to ``monitoring/decisions/`` and returned."""
    config = load_config()
    s3, sagemaker, cloudwatch = _clients()
    violations = statistics = None
    job_name = None
    if execution and execution.get("ProcessingJobArn"):
        job_name = execution["ProcessingJobArn"].rsplit("/", 1)[-1]
    elif processing:
        job_name = processing["Processing"]["ProcessingJobName"]
    if job_name:
        job = sagemaker.describe_processing_job(ProcessingJobName=job_name)
        output = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        violations, statistics = _violations(s3, output)
        log.info("monitor job %s (%s): %d violation(s); output %s", job_name, job["ProcessingJobStatus"],
                 len((violations or {}).get("violations", [])), output)
        if processing and not (execution and execution.get("ProcessingJobArn")):
            # Model Monitor publishes the container's metrics; a Processing job does not: this task does, so the
            # CloudWatch alarms on them (infra/monitoring.yaml) work the same with either backend.
            published = publish_result_metrics(s3, cloudwatch, output)
            log.info("published %d drift metric(s) of %s to CloudWatch (%s)", published, job_name,
                     monitoring.METRICS_NAMESPACE)
    alarms = cloudwatch.describe_alarms(AlarmNames=list(config.alarm_names))["MetricAlarms"]
    verdict = monitoring.assess(violations, statistics, alarms, planned.get("trigger"))
    record = {"run_id": run_id, "endpoint": planned["endpoint"], "package_arn": planned["package_arn"],
              "window": planned["window"], "monitor_job": job_name, **verdict.to_dict()}
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    s3.put_object(Bucket=config.models_bucket, Key=f"monitoring/decisions/{safe}.json",
                  Body=json.dumps(record, indent=2, default=str).encode(), ContentType="application/json")
    log.info("drift %s: %s", "FOUND" if verdict.drift else "not found", "; ".join(verdict.causes) or "no cause")
    return record


def collect(planned: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The videos behind the window's traffic (and, where people label, the untraceable frames as a batch)."""
    from airflow.sdk.exceptions import AirflowSkipException

    config = load_config()
    s3, _, _ = _clients()
    lines: list[str] = []
    for uri in planned["captures"]:
        bucket, prefix = split_uri(uri)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                lines += s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode(
                    errors="replace").splitlines()
    found = monitoring.collect(lines, keep_untraced=config.collect_untraced_captures)
    videos = list(found.videos)
    if found.frames:
        batch = "captured" + "".join(c for c in run_id if c.isalnum())[-12:]
        for index, body in enumerate(found.frames):
            s3.put_object(Bucket=config.frames_bucket, Key=f"frames/{batch}/{index:06d}.jpg", Body=body,
                          ContentType="image/jpeg")
        videos.append(batch)
    summary = found.summary()
    log.info("new data for labeling: %s", json.dumps(summary))
    if not videos:
        raise AirflowSkipException(f"drift found but no capture of the window can be relabeled: {summary}")
    return {**summary, "video_ids": videos}
