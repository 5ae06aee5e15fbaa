"""drift_retrain's requests and decisions: the baseline job, the monitoring schedule (or the same container as a
Processing job the DAG runs itself), the drift verdict, and the new data to relabel.

Model Monitor is closed to new AWS customers, so the monitor has two backends with one container and one contract
(``containers/drift_monitor/README.md``, AWS's bring-your-own-container contract): a Model Monitor schedule, or a
Processing job over the same captured window. ``PipelineConfig.monitoring_backend`` picks one.

The verdict: drift when the monitor's ``constraint_violations.json`` has violations, or one of the pipeline's alarms
is in ALARM, or the trigger (the alarm Lambda) says so. The new data: captured requests carry the frame they were
sent for as SageMaker's ``InferenceId`` (``frames/<video_id>/<index>.jpg``, no patient data), so the videos behind
drifted traffic go back to labeling; untraceable captures are written as a frame batch of their own where people
label (AWS), and left out locally, where the simulated workforce can only label frames it knows the truth of.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from include.config import PipelineConfig
from include.instances import volume_key

MONITOR = "drift_monitor"
PROCESSING = "/opt/ml/processing"
FRAME_REFERENCE = re.compile(r"^frames/([A-Za-z0-9_-]{1,64})/([A-Za-z0-9_.-]{1,64}\.jpg)$")
METRICS_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"


def _kms(config: PipelineConfig, key: str) -> dict[str, str]:
    """An output's KMS member, by key ARN (volume keys: ``include.instances.volume_key``)."""
    return {key: config.kms_key_arn} if config.kms_key_arn else {}


def baseline_prefix(config: PipelineConfig, dataset_version: str) -> str:
    return f"s3://{config.models_bucket}/monitoring/baselines/{dataset_version}"


def baseline_request(config: PipelineConfig, dataset_version: str, evaluation_uri: str,
                     run_id: str) -> dict[str, Any]:
    """A Processing job of the monitor image's ``baseline`` command over the training data of the deployed model."""
    def source(name: str, uri: str) -> dict[str, Any]:
        return {"InputName": name, "S3Input": {"S3Uri": uri, "LocalPath": f"{PROCESSING}/input/{name}",
                                               "S3DataType": "S3Prefix", "S3InputMode": "File",
                                               "S3DataDistributionType": "FullyReplicated"}}

    return {
        "ProcessingJobName": f"drift-baseline-{dataset_version[:16]}",
        "RoleArn": config.sagemaker_role_arn,
        "AppSpecification": {"ImageUri": config.image_uri(MONITOR), "ContainerArguments": [
            "baseline", "--dataset", f"{PROCESSING}/input/dataset", "--frames", f"{PROCESSING}/input/frames",
            "--evaluation", f"{PROCESSING}/input/evaluation/evaluation.json", "--output", f"{PROCESSING}/baseline",
            "--splits", config.drift_baseline_splits, "--bins", str(config.drift_bins), "--psi-threshold",
            str(config.drift_psi_threshold), "--min-sample-size", str(config.drift_min_sample_size)]},
        "ProcessingInputs": [
            source("dataset", f"s3://{config.annotations_bucket}/datasets/{dataset_version}/"),
            source("frames", f"s3://{config.frames_bucket}/frames/"),
            source("evaluation", evaluation_uri),
        ],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "baseline", "S3Output": {
            "S3Uri": baseline_prefix(config, dataset_version), "LocalPath": f"{PROCESSING}/baseline",
            "S3UploadMode": "EndOfJob"}}], **_kms(config, "KmsKeyId")},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": config.monitoring_instance_type, "VolumeSizeInGB": 30,
            **volume_key(config.kms_key_arn, config.monitoring_instance_type)}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "NetworkConfig": {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True},
        "Tags": [{"Key": "dataset_version", "Value": dataset_version}, {"Key": "dag_run_id", "Value": run_id[:256]},
                 *({"Key": k, "Value": v} for k, v in config.tags.items())],
    }


def _environment(config: PipelineConfig) -> dict[str, str]:
    return {"publish_cloudwatch_metrics": "Enabled"}  # thresholds travel in the baseline's constraints.json


def schedule_request(config: PipelineConfig, dataset_version: str) -> dict[str, Any]:
    """CreateMonitoringSchedule (bring-your-own container) on the endpoint's captured data, hourly."""
    baseline = baseline_prefix(config, dataset_version)
    return {
        "MonitoringScheduleName": config.monitoring_schedule_name,
        "MonitoringScheduleConfig": {
            "ScheduleConfig": {"ScheduleExpression": config.monitoring_schedule_expression},
            "MonitoringType": "DataQuality",
            "MonitoringJobDefinition": {
                "BaselineConfig": {"ConstraintsResource": {"S3Uri": f"{baseline}/constraints.json"},
                                   "StatisticsResource": {"S3Uri": f"{baseline}/statistics.json"}},
                "MonitoringInputs": [{"EndpointInput": {
                    "EndpointName": config.endpoint_name, "LocalPath": f"{PROCESSING}/input/endpoint",
                    "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}],
                "MonitoringOutputConfig": {"MonitoringOutputs": [{"S3Output": {
                    "S3Uri": f"s3://{config.models_bucket}/monitoring/reports", "LocalPath": f"{PROCESSING}/resultdata",
                    "S3UploadMode": "EndOfJob"}}], **_kms(config, "KmsKeyId")},
                "MonitoringResources": {"ClusterConfig": {
                    "InstanceCount": 1, "InstanceType": config.monitoring_instance_type, "VolumeSizeInGB": 30,
                    **volume_key(config.kms_key_arn, config.monitoring_instance_type)}},
                "MonitoringAppSpecification": {"ImageUri": config.image_uri(MONITOR)},
                "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
                "Environment": _environment(config),
                "NetworkConfig": {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True},
                "RoleArn": config.sagemaker_role_arn,
            },
        },
        "Tags": [{"Key": "dataset_version", "Value": dataset_version},
                 *({"Key": k, "Value": v} for k, v in config.tags.items())],
    }


def window_hours(end: datetime, hours: int) -> list[datetime]:
    """The whole hours of the window ending at ``end`` (UTC), oldest first: capture files are foldered by hour."""
    last = end.replace(minute=0, second=0, microsecond=0)
    return [last - timedelta(hours=h) for h in reversed(range(hours))]


def capture_prefix(config: PipelineConfig) -> str:
    return f"data-capture/{config.endpoint_name}/"


def processing_monitor_request(config: PipelineConfig, dataset_version: str, start: datetime, end: datetime,
                               capture_uris: Sequence[str], run_id: str) -> dict[str, Any]:
    """The same container and contract as a Processing job over the window's capture files (the other backend)."""
    baseline = baseline_prefix(config, dataset_version)
    stamp = end.strftime("%Y%m%d%H%M")
    inputs = [{"InputName": f"capture-{i}", "S3Input": {
        "S3Uri": uri, "LocalPath": f"{PROCESSING}/input/endpoint/{i}", "S3DataType": "S3Prefix",
        "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}} for i, uri in enumerate(capture_uris)]
    inputs += [{"InputName": "baseline", "S3Input": {
        "S3Uri": f"{baseline}/", "LocalPath": f"{PROCESSING}/baseline", "S3DataType": "S3Prefix",
        "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}]
    iso = "%Y-%m-%dT%H:%M:%SZ"
    digest = hashlib.sha256(f"{config.endpoint_name}{stamp}".encode()).hexdigest()[:8]
    return {
        "ProcessingJobName": f"drift-monitor-{digest}-{stamp}",
        "RoleArn": config.sagemaker_role_arn,
        "AppSpecification": {"ImageUri": config.image_uri(MONITOR)},
        "Environment": {**_environment(config), "dataset_source": f"{PROCESSING}/input/endpoint",
                        "output_path": f"{PROCESSING}/resultdata",
                        "baseline_statistics": f"{PROCESSING}/baseline/statistics.json",
                        "baseline_constraints": f"{PROCESSING}/baseline/constraints.json",
                        "start_time": start.strftime(iso), "end_time": end.strftime(iso),
                        "metric_time": end.strftime(iso),
                        "sagemaker_endpoint_name": config.endpoint_name,
                        "sagemaker_monitoring_schedule_name": config.monitoring_schedule_name},
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "resultdata", "S3Output": {
            "S3Uri": f"s3://{config.models_bucket}/monitoring/reports/{config.endpoint_name}/"
                     f"{config.monitoring_schedule_name}/{end.strftime('%Y/%m/%d/%H')}",
            "LocalPath": f"{PROCESSING}/resultdata", "S3UploadMode": "EndOfJob"}}], **_kms(config, "KmsKeyId")},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": config.monitoring_instance_type, "VolumeSizeInGB": 30,
            **volume_key(config.kms_key_arn, config.monitoring_instance_type)}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
        "NetworkConfig": {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True},
        "Tags": [{"Key": "dag_run_id", "Value": run_id[:256]}, *({"Key": k, "Value": v}
                                                                 for k, v in config.tags.items())],
    }


# -- the verdict ---------------------------------------------------------------------------------------------------
@dataclass
class Assessment:
    drift: bool
    causes: list[str]
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(violations: Mapping[str, Any] | None, statistics: Mapping[str, Any] | None,
           alarms: Iterable[Mapping[str, Any]], trigger: Mapping[str, Any] | None) -> Assessment:
    """Drift or not, why, and the figures each cause rests on."""
    causes: list[str] = []
    figures: dict[str, Any] = {}
    everything = list((violations or {}).get("violations", []))
    # Only a drift check is drift: no_data/insufficient_data/completeness mean "this window could not be judged".
    found = [v for v in everything if v.get("constraint_check_type") == "baseline_drift_check"]
    if found:
        causes.append(f"{len(found)} constraint violation(s): " + "; ".join(
            f"{v.get('feature_name')}: {v.get('description', v.get('constraint_check_type'))}" for v in found[:5]))
    figures["violations"] = found
    figures["unjudged"] = [v for v in everything if v not in found]
    if statistics:
        figures["records"] = statistics.get("dataset", {}).get("item_count")
    firing = [a for a in alarms if a.get("StateValue") == "ALARM"]
    for alarm in firing:
        causes.append(f"alarm {alarm['AlarmName']} in ALARM: {alarm.get('StateReason', '')}")
    figures["alarms"] = {a["AlarmName"]: a.get("StateValue") for a in alarms}
    if trigger and trigger.get("alarm_name") and not any(a["AlarmName"] == trigger["alarm_name"] for a in firing):
        causes.append(f"triggered by alarm {trigger['alarm_name']} ({trigger.get('state', 'ALARM')} at "
                      f"{trigger.get('state_changed_at', '?')})")
    figures["trigger"] = dict(trigger or {})
    return Assessment(bool(causes), causes, figures)


# -- the new data --------------------------------------------------------------------------------------------------
@dataclass
class Collected:
    videos: list[str]
    traced: int
    untraced: int
    unreadable: int
    frames: list[bytes]  # the untraced inputs kept for labeling

    def summary(self) -> dict[str, Any]:
        return {"videos": self.videos, "traced_records": self.traced, "untraced_records": self.untraced,
                "kept_untraced_frames": len(self.frames), "unreadable_records": self.unreadable}


def collect(lines: Iterable[str], keep_untraced: bool, max_untraced: int = 500) -> Collected:
    """The frame references (``InferenceId``) of the captured records, and the untraceable inputs' bytes."""
    videos: set[str] = set()
    traced, untraced, unreadable, frames = 0, 0, 0, []
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            reference = (record.get("eventMetadata") or {}).get("inferenceId") or ""
            match = FRAME_REFERENCE.match(reference)
            if match:
                videos.add(match.group(1))
                traced += 1
                continue
            data = record["captureData"]["endpointInput"]
            untraced += 1
            if keep_untraced and len(frames) < max_untraced and data.get("encoding") == "BASE64" and \
                    data.get("observedContentType", "").startswith("image/"):
                frames.append(base64.b64decode(data["data"], validate=True))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            unreadable += 1
    return Collected(sorted(videos), traced, untraced, unreadable, frames)
