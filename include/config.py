"""Pipeline settings: one place for bucket names, queues, instance types, fps, classes and thresholds.

One setting picks the environment: ``PIPELINE_ENV`` = ``local`` (default) | ``dev`` | ``prod``. Any field can be
overridden without a code change by the Airflow Variable ``pipeline_config`` (a JSON object of field -> value), so
the same DAG files run on a laptop and on MWAA. This module imports nothing heavy: DAG files import it at parse
time, and the Airflow Variable is read only when ``load_config`` is asked to (inside a task, not at parse).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENVIRONMENTS = ("local", "dev", "prod")
AIRFLOW_VARIABLE = "pipeline_config"
# The first of each is the default. SageMaker Ground Truth and SageMaker Model Monitor are closed to new AWS customers
# (2026): a team opening an account today labels in Label Studio and runs the drift monitor as a Processing job;
# "ground_truth" and "model_monitor" are opt-ins for accounts that still have those services.
LABELING_BACKENDS = ("label_studio", "ground_truth")
MONITORING_BACKENDS = ("processing", "model_monitor")


class ConfigError(ValueError):
    """A setting is unknown or has a value of the wrong kind."""


@dataclass(frozen=True)
class PipelineConfig:
    env: str = "local"
    region: str = "us-east-1"
    account_id: str = "123456789012"  # the local stack's account; set through the Variable on AWS
    # Buckets (DESIGN.md section 4). On AWS bucket names are global, and dev and prod may share one account: the
    # dev/prod presets add "-<stage>" to every resource name (_aws_names), the local preset keeps these.
    raw_bucket: str = "surgical-videos-raw"
    frames_bucket: str = "surgical-frames-processed"
    annotations_bucket: str = "surgical-annotations"
    models_bucket: str = "surgical-models"
    video_prefix: str = "videos/"
    quarantine_prefix: str = "quarantine/"
    video_extensions: tuple[str, ...] = (".mp4", ".avi")
    # Queues
    video_queue: str = "video-processing-queue"
    video_dlq: str = "video-processing-dlq"
    max_receive_count: int = 5
    sqs_batch_size: int = 10
    ingest_schedule: str = "*/10 * * * *"
    # Images and roles: ECR repositories surgical-mlops/<container>, tag per release.
    image_tag: str = "latest"
    sagemaker_role_name: str = "surgical-sagemaker-execution"
    # Frame extraction
    extraction_fps: float = 5.0
    jpeg_quality: int = 90
    max_frame_side: int = 1280
    processing_instance_type: str = "ml.c5.xlarge"
    # Labeling
    label_classes: tuple[str, ...] = ("scalpel", "retractor", "tumor")
    label_attribute: str = "surgical-boxes"
    workteam_name: str = "surgical-annotators"
    labeling_workers: int = 3
    review_confidence_threshold: float = 0.6  # a frame with a box below this goes through the review job
    # "label_studio" (self-hosted, connection label_studio_default; the default) or "ground_truth" (SageMaker Ground
    # Truth: an opt-in for accounts that still have it); docs/labeling-backends.md. A run's `backend` param wins.
    labeling_backend: str = "label_studio"
    pre_annotation_min_score: float = 0.3  # Label Studio: the champion's boxes at or above this score are suggested
    pre_annotation_max_boxes: int = 20  # ... at most this many per frame, the best first
    # Training: the trainer's hyperparameters (containers/trainer/README.md) over its defaults; a run's params win.
    training_instance_type: str = "ml.g4dn.xlarge"
    training_hyperparameters: Mapping[str, Any] = field(
        default_factory=lambda: {"epochs": 10, "max_train_seconds": 170})
    training_max_runtime_s: int = 4 * 3600
    evaluation_instance_type: str = "ml.c5.xlarge"
    model_package_group: str = "surgical-detector"
    # HPO (the DAG's hpo param): SageMaker tuning over these ranges, Bayesian on AWS, random locally
    tuning_max_jobs: int = 4
    tuning_max_parallel_jobs: int = 2
    # Deploy: one real-time endpoint behind the API, blue/green updates, data capture for the drift monitor
    inference_instance_type: str = "ml.m5.large"
    inference_instance_count: int = 1
    endpoint_name: str = "surgical-detector"
    data_capture_percent: int = 100
    deploy_requires_approval: bool = False  # prod: a person approves in the Airflow UI before the endpoint changes
    smoke_test_frames: int = 8
    smoke_min_agreement: float = 0.9  # share of boxes the endpoint and the package's evaluation agree on
    smoke_latency_budget_ms: float = 3000.0  # p95 per frame through InvokeEndpoint (local: a busy laptop; prod: 200)
    # Gates: the mAP promotion rule (include/promotion.py)
    promotion_floor_map50: float = 0.8
    promotion_max_class_regression: float = 0.05
    promotion_confidence: float = 0.95
    promotion_resamples: int = 1000
    promotion_unit: str = "video"
    # Drift monitor (containers/drift_monitor): "processing" (the default: the container as a Processing job run by
    # drift_retrain itself) or "model_monitor" (a Model Monitor schedule: an opt-in, closed to new AWS customers)
    drift_psi_threshold: float = 0.2
    drift_bins: int = 10  # PSI bins, cut at the baseline's deciles
    drift_min_sample_size: int = 100  # frames a window needs before a feature is judged
    drift_baseline_splits: str = "train"  # the deployed model's training frames
    monitoring_backend: str = "processing"
    monitoring_schedule_name: str = "surgical-detector-drift"
    monitoring_schedule_expression: str = "cron(0 * ? * * *)"  # hourly, SageMaker's form
    monitoring_instance_type: str = "ml.m5.large"
    drift_schedule: str = "@hourly"  # drift_retrain's own check, so a lost alarm event cannot hide drift
    drift_window_hours: int = 1
    # Untraceable captured frames go to labeling where people label them; the local workforce only knows the truth
    # of generated videos, so locally only frames traced to a video (InferenceId) are relabeled.
    collect_untraced_captures: bool = False
    # Security: the KMS key of SageMaker volumes and outputs (infra/foundation.yaml's data key), named by its alias;
    # None lets the service use its default key. Requests name the key by ARN (a volume key may not be an alias):
    # kms_key_arn, which load_config resolves from the alias with kms:DescribeKey when it is not set.
    kms_key_alias: str | None = "alias/surgical-mlops"
    kms_key_arn: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: {"project": "surgical-mlops"})

    def image_uri(self, container: str) -> str:
        """ECR image of a folder under containers/ (``frame_extractor`` -> ``.../surgical-mlops/frame-extractor``)."""
        repository = f"surgical-mlops/{container.replace('_', '-')}"
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com/{repository}:{self.image_tag}"

    @property
    def workteam_arn(self) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:workteam/private-crowd/{self.workteam_name}"

    @property
    def sagemaker_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.sagemaker_role_name}"

    @property
    def alarm_names(self) -> tuple[str, ...]:
        """The CloudWatch alarms of infra/monitoring.yaml (stage = env) that drift_retrain checks."""
        return tuple(f"surgical-{kind}-{self.env}" for kind in ("input-drift", "prediction-drift",
                                                                 "fresh-label-map50"))

    def queue_url(self, name: str) -> str:
        return f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{name}"


def _aws_names(stage: str, **extra: Any) -> dict[str, Any]:
    """The names of a stage's resources: every one carries the stage, so dev and prod can share one AWS account
    (``StageSuffix``/``BucketSuffix`` = ``-<stage>`` of infra/foundation.yaml, platform.yaml and mwaa.yaml;
    monitoring and api are given the endpoint and schedule names). The local preset keeps the unsuffixed names (one
    stage)."""
    suffix = f"-{stage}"
    return {
        "env": stage,
        "raw_bucket": f"surgical-videos-raw{suffix}",
        "frames_bucket": f"surgical-frames-processed{suffix}",
        "annotations_bucket": f"surgical-annotations{suffix}",
        "models_bucket": f"surgical-models{suffix}",
        "video_queue": f"video-processing-queue{suffix}",
        "video_dlq": f"video-processing-dlq{suffix}",
        "sagemaker_role_name": f"surgical-sagemaker-execution{suffix}",
        "kms_key_alias": f"alias/surgical-mlops{suffix}",
        "endpoint_name": f"surgical-detector{suffix}",
        "model_package_group": f"surgical-detector{suffix}",
        "monitoring_schedule_name": f"surgical-detector-drift{suffix}",
        "workteam_name": f"surgical-annotators{suffix}",
        **extra,
    }


# The fields that name a resource of one stage (tests/unit/test_config.py: dev and prod differ in each).
STAGE_NAMED_FIELDS = ("raw_bucket", "frames_bucket", "annotations_bucket", "models_bucket", "video_queue",
                      "video_dlq", "sagemaker_role_name", "kms_key_alias", "endpoint_name", "model_package_group",
                      "monitoring_schedule_name", "workteam_name")


_PRESETS: dict[str, dict[str, Any]] = {
    # Local: CPU-only process runners; instance types are recorded, not provisioned.
    "local": {},
    "dev": _aws_names("dev", collect_untraced_captures=True),
    "prod": _aws_names(
        "prod",
        collect_untraced_captures=True,
        training_instance_type="ml.g5.xlarge",
        inference_instance_type="ml.g4dn.xlarge",
        inference_instance_count=2,
        deploy_requires_approval=True,
        smoke_latency_budget_ms=200.0,
    ),
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Give an override the type of the field's default (Variables arrive as JSON)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"setting {name!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"setting {name!r} must be a number, got {value!r}")
        return type(default)(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"setting {name!r} must be a non-empty list, got {value!r}")
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"setting {name!r} must be a string, got {value!r}")
    if isinstance(default, Mapping) and not isinstance(value, Mapping):
        raise ConfigError(f"setting {name!r} must be an object, got {value!r}")
    return value


def build_config(env: str | None = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """The config of ``env`` (default: ``PIPELINE_ENV`` or ``local``) with ``overrides`` applied."""
    env = env or os.environ.get("PIPELINE_ENV", "local")
    if env not in ENVIRONMENTS:
        raise ConfigError(f"PIPELINE_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    values = dict(_PRESETS[env])
    values.setdefault("region", os.environ.get("AWS_DEFAULT_REGION", PipelineConfig.region))
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(PipelineConfig)
    }
    for name, value in (overrides or {}).items():
        if name not in defaults:
            raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(defaults))}")
        values[name] = _coerce(name, value, defaults[name])
    for name, allowed in (("labeling_backend", LABELING_BACKENDS), ("monitoring_backend", MONITORING_BACKENDS)):
        if values.get(name, getattr(PipelineConfig, name)) not in allowed:
            raise ConfigError(f"setting {name!r} must be one of {', '.join(allowed)}, got {values[name]!r}")
    return PipelineConfig(**values)


def load_config(env: str | None = None, use_airflow_variable: bool = True) -> PipelineConfig:
    """The config as a task sees it: the preset, then the ``pipeline_config`` Airflow Variable if set, with
    ``kms_key_arn`` resolved from ``kms_key_alias`` (inside Airflow) when the Variable does not give it."""
    overrides: Mapping[str, Any] = {}
    if use_airflow_variable:
        overrides = _airflow_overrides()
    config = build_config(env, overrides)
    if use_airflow_variable and config.kms_key_alias and not config.kms_key_arn:
        arn = _airflow_key_arn(config.kms_key_alias, config.region)
        if arn:
            config = dataclasses.replace(config, kms_key_arn=arn)
    return config


def _airflow_key_arn(alias: str, region: str) -> str | None:
    """The ARN of the key behind ``alias``; None outside Airflow (Lambda, containers, scripts: left unresolved)."""
    try:
        import airflow.providers.amazon.aws.hooks.base_aws  # noqa: F401 - only asks whether the provider is here
    except ImportError:
        return None
    return resolve_key_arn(alias, region)


@functools.cache
def resolve_key_arn(alias: str, region: str) -> str:
    """``alias`` -> its key's ARN, by ``kms:DescribeKey`` through the ``aws_default`` connection (the MWAA execution
    role may describe the data key: infra/mwaa.yaml). Cached per process, by alias and region."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    kms = AwsBaseHook(aws_conn_id="aws_default", client_type="kms", region_name=region).conn
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except Exception as exc:  # botocore's ClientError and connection errors: say which setting is concerned
        raise ConfigError(f"the KMS key {alias!r} (setting 'kms_key_alias') could not be resolved to its ARN in "
                          f"{region}: {exc}; create the alias, or set 'kms_key_arn' or 'kms_key_alias'") from exc


def _airflow_overrides() -> Mapping[str, Any]:
    try:
        from airflow.sdk import Variable
    except ImportError:  # outside Airflow (Lambda, containers, scripts)
        return {}
    raw = Variable.get(AIRFLOW_VARIABLE, default=None)
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Airflow Variable {AIRFLOW_VARIABLE!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise ConfigError(f"Airflow Variable {AIRFLOW_VARIABLE!r} must be a JSON object")
    return value
