"""train_and_register's requests and records: the training (or tuning) job, the evaluation in S3, the model package
version with its metrics and lineage, the champion's re-evaluation on the candidate's test set, and its batch
predictions that pre-annotate new frames.

Pure functions of the config and the inputs (no AWS call), except :func:`publish_evaluation` and
:func:`find_package`, which take the clients they use. Names are deterministic so that a retry or a re-run finds the
work already done instead of repeating it: the training job is named by the dataset version and the hash of its
hyperparameters, the package is found again by its training job, the champion's re-evaluation by (champion version,
dataset version).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from include.config import PipelineConfig
from include.instances import volume_key
from include.s3 import split_uri

TRAINER = "trainer"
INFERENCE = "inference"
CHECKPOINT_DIR = "/opt/ml/checkpoints"
# What the job's MetricDefinitions pick up from the trainer's log (containers/trainer/README.md).
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"train_loss=([0-9.]+)"},
    {"Name": "validation:map50", "Regex": r"val_map50=([0-9.]+)"},
    {"Name": "validation:map", "Regex": r"val_map=([0-9.]+)"},
    {"Name": "test:map50", "Regex": r"test_map50=([0-9.]+)"},
    {"Name": "test:map", "Regex": r"test_map=([0-9.]+)"},
]
TUNING_OBJECTIVE = "validation:map50"
TUNING_RANGES = {
    "ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.001", "MaxValue": "0.01",
                                   "ScalingType": "Logarithmic"}],
    "CategoricalParameterRanges": [{"Name": "augment", "Values": ["full", "flip"]}],
}
CONTENT_TYPES = ["image/jpeg", "image/png", "application/x-image", "application/json"]
PROCESSING = "/opt/ml/processing"


class TrainingInputError(ValueError):
    """The run's inputs cannot give a training job (no dataset version, bad hyperparameters)."""


def hyperparameters(config: PipelineConfig, overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """The job's HyperParameters: config defaults, then the run's params; every value a string (SageMaker's type;
    the trainer JSON-decodes them)."""
    merged = {**config.training_hyperparameters, **(overrides or {})}
    result = {}
    for name, value in sorted(merged.items()):
        if isinstance(value, (dict, list)) or value is None:
            raise TrainingInputError(f"hyperparameter {name!r} must be a string, number or boolean, got {value!r}")
        result[name] = json.dumps(value) if isinstance(value, bool) else str(value)
    return result


def config_hash(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def training_job_name(dataset_version: str, hps: Mapping[str, str], hpo: bool = False) -> str:
    """``train-<dataset>-<hash>`` (``hpo-...`` for a tuning job, which AWS caps at 32 characters)."""
    digest = config_hash({"hyperparameters": dict(hps), "hpo": hpo})
    return f"hpo-{dataset_version[:12]}-{digest[:10]}" if hpo else f"train-{dataset_version[:16]}-{digest[:12]}"


def code_commit() -> str:
    """The pipeline code's commit: ``PIPELINE_CODE_COMMIT``, else the bundle's ``include/build_info.json`` (MWAA),
    else ``git`` where the DAGs run from a checkout, else ``unknown``."""
    if os.environ.get("PIPELINE_CODE_COMMIT"):
        return os.environ["PIPELINE_CODE_COMMIT"]
    info = Path(__file__).resolve().parent / "build_info.json"  # written into the MWAA bundle by tools/mwaa_bundle
    if info.is_file():
        return json.loads(info.read_text()).get("commit") or "unknown"
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _kms(config: PipelineConfig, key: str) -> dict[str, str]:
    """An output's KMS member, by key ARN (volume keys: ``include.instances.volume_key``)."""
    return {key: config.kms_key_arn} if config.kms_key_arn else {}


def lineage(dataset_version: str, run_id: str, commit: str, job_name: str) -> dict[str, str]:
    return {"dataset_version": dataset_version, "code_commit": commit[:256], "dag_run_id": run_id[:256],
            "training_job": job_name}


def _tags(config: PipelineConfig, values: Mapping[str, str]) -> list[dict[str, str]]:
    return [*({"Key": k, "Value": v} for k, v in values.items()), *({"Key": k, "Value": v}
                                                                     for k, v in config.tags.items())]


def _definition(config: PipelineConfig, dataset_version: str, checkpoint_name: str) -> dict[str, Any]:
    """What a training job and a tuning job's TrainingJobDefinition share."""
    def channel(name: str, uri: str) -> dict[str, Any]:
        return {"ChannelName": name, "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}

    return {
        "AlgorithmSpecification": {"TrainingImage": config.image_uri(TRAINER), "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_DEFINITIONS},
        "RoleArn": config.sagemaker_role_arn,
        "InputDataConfig": [
            channel("dataset", f"s3://{config.annotations_bucket}/datasets/{dataset_version}/"),
            channel("frames", f"s3://{config.frames_bucket}/frames/"),
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{config.models_bucket}/training/", **_kms(config, "KmsKeyId")},
        "ResourceConfig": {"InstanceType": config.training_instance_type, "InstanceCount": 1, "VolumeSizeInGB": 50,
                           **volume_key(config.kms_key_arn, config.training_instance_type)},
        "StoppingCondition": {"MaxRuntimeInSeconds": config.training_max_runtime_s},
        # A stopped or spot-interrupted job resumes from its checkpoints (the trainer's checkpoint.pt).
        "CheckpointConfig": {"S3Uri": f"s3://{config.models_bucket}/checkpoints/{checkpoint_name}/",
                             "LocalPath": CHECKPOINT_DIR},
        # Medical data: the container has no network; traffic between instances is encrypted.
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": True,
    }


def training_job_request(config: PipelineConfig, dataset_version: str, hps: Mapping[str, str], run_id: str,
                         commit: str) -> dict[str, Any]:
    """The CreateTrainingJob request (what SageMakerTrainingOperator is given)."""
    name = training_job_name(dataset_version, hps)
    return {"TrainingJobName": name, **_definition(config, dataset_version, name), "HyperParameters": dict(hps),
            "Tags": _tags(config, lineage(dataset_version, run_id, commit, name))}


def tuning_job_request(config: PipelineConfig, dataset_version: str, hps: Mapping[str, str], run_id: str,
                       commit: str) -> dict[str, Any]:
    """The CreateHyperParameterTuningJob request: the tuned names leave the static hyperparameters."""
    name = training_job_name(dataset_version, hps, hpo=True)
    tuned = {r["Name"] for ranges in TUNING_RANGES.values() for r in ranges}
    definition = _definition(config, dataset_version, name)
    definition["StaticHyperParameters"] = {k: v for k, v in hps.items() if k not in tuned}
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": TUNING_OBJECTIVE},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": config.tuning_max_jobs,
                               "MaxParallelTrainingJobs": config.tuning_max_parallel_jobs},
            "ParameterRanges": TUNING_RANGES,
        },
        "TrainingJobDefinition": definition,
        "Tags": _tags(config, lineage(dataset_version, run_id, commit, name)),
    }


# -- after training ------------------------------------------------------------------------------------------------
def report_key(job_name: str, file: str = "index.html") -> str:
    """Where a training job's report is published in the models bucket (``index.html``, the plots beside it)."""
    return f"reports/{job_name}/{file}"


def evaluation_uri(config: PipelineConfig, job_name: str) -> str:
    return f"s3://{config.models_bucket}/evaluations/{job_name}/evaluation.json"


def publish_evaluation(s3: Any, config: PipelineConfig, job: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the job's ``evaluation.json`` (inside ``output.tar.gz``, next to ``model.tar.gz``) to a plain JSON object
    that ModelMetrics and the promotion rule read, and the report (inside ``model.tar.gz``) to ``reports/<job>/``.
    Idempotent: the same job gives the same objects; the bucket's default encryption (SSE-KMS) applies."""
    if job.get("TrainingJobStatus") != "Completed":
        raise TrainingInputError(f"training job {job.get('TrainingJobName')} is {job.get('TrainingJobStatus')}: "
                                 f"{job.get('FailureReason', 'no reason given')}")
    name = job["TrainingJobName"]
    model_uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    bucket, key = split_uri(model_uri)
    output_key = key.rsplit("/", 1)[0] + "/output.tar.gz"
    evaluation = _member(s3, bucket, output_key, "evaluation.json")
    document = json.loads(evaluation)
    target_bucket, target_key = split_uri(evaluation_uri(config, name))
    s3.put_object(Bucket=target_bucket, Key=target_key, Body=evaluation, ContentType="application/json")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        for member in tar.getmembers():
            path = member.name.removeprefix("./")
            if member.isfile() and path.startswith("report/"):
                content_type = {"html": "text/html", "png": "image/png", "json": "application/json"}.get(
                    path.rsplit(".", 1)[-1], "application/octet-stream")
                s3.put_object(Bucket=config.models_bucket, Key=report_key(name, path.removeprefix("report/")),
                              Body=tar.extractfile(member).read(), ContentType=content_type)
    metrics = {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}
    return {"training_job": name, "model_data": model_uri, "evaluation_uri": evaluation_uri(config, name),
            "report_uri": f"s3://{config.models_bucket}/{report_key(name)}",
            "dataset_version": document.get("dataset_version"), "map50": document["map50"], "map": document["map"],
            "job_metrics": metrics}


def _member(s3: Any, bucket: str, key: str, name: str) -> bytes:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.removeprefix("./") == name:
                return tar.extractfile(member).read()
    raise TrainingInputError(f"s3://{bucket}/{key} has no {name}")


def package_extras(config: PipelineConfig, evaluation: Mapping[str, Any], run_id: str, commit: str,
                   hps: Mapping[str, str]) -> dict[str, Any]:
    """CreateModelPackage fields beyond SageMakerRegisterModelVersionOperator's own: the inference spec, the metrics,
    the lineage (as CustomerMetadataProperties, searchable, and as tags)."""
    values = lineage(evaluation["dataset_version"] or "unknown", run_id, commit, evaluation["training_job"])
    metadata = {**values, "map50": f"{evaluation['map50']:.4f}", "map": f"{evaluation['map']:.4f}",
                "hyperparameters_sha256": config_hash(dict(hps))[:16], "report": evaluation["report_uri"]}
    return {
        "InferenceSpecification": {
            "Containers": [{"Image": config.image_uri(INFERENCE), "ModelDataUrl": evaluation["model_data"]}],
            "SupportedContentTypes": CONTENT_TYPES, "SupportedResponseMIMETypes": ["application/json"],
            "SupportedRealtimeInferenceInstanceTypes": [config.inference_instance_type],
        },
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                         "S3Uri": evaluation["evaluation_uri"]}}},
        "CustomerMetadataProperties": metadata,
        "Tags": _tags(config, values),
    }


def find_package(sagemaker: Any, group: str, training_job: str) -> dict[str, Any] | None:
    """The group's version registered for this training job, if any (a re-run registers no duplicate)."""
    try:
        pages = sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group,
                                                                         SortBy="CreationTime",
                                                                         SortOrder="Descending")
        for page in pages:
            for summary in page["ModelPackageSummaryList"]:
                package = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                if package.get("CustomerMetadataProperties", {}).get("training_job") == training_job:
                    return package
    except sagemaker.exceptions.ResourceNotFound:
        return None
    return None


def latest_approved(sagemaker: Any, group: str, exclude: str | None = None) -> dict[str, Any] | None:
    """The champion: the group's latest Approved version other than ``exclude``."""
    try:
        response = sagemaker.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Approved",
                                                 SortBy="CreationTime", SortOrder="Descending", MaxResults=10)
    except sagemaker.exceptions.ResourceNotFound:
        return None
    for summary in response["ModelPackageSummaryList"]:
        if summary["ModelPackageArn"] != exclude:
            return sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    return None


def champion_evaluation_request(config: PipelineConfig, champion: Mapping[str, Any], dataset_version: str,
                                run_id: str) -> dict[str, Any]:
    """The CreateProcessingJob request that scores the champion on ``dataset_version``'s test split with the
    trainer image's ``evaluate`` command (containers/trainer/evaluate.py)."""
    version = champion["ModelPackageVersion"]
    return _trainer_processing(
        config, f"eval-champion-v{version}-{dataset_version[:16]}", champion, "evaluate",
        [_processing_input("dataset", f"s3://{config.annotations_bucket}/datasets/{dataset_version}/"),
         _processing_input("frames", f"s3://{config.frames_bucket}/frames/")],
        ("evaluation", f"{PROCESSING}/evaluation", champion_evaluation_prefix(config, version, dataset_version)),
        {"dataset_version": dataset_version, "dag_run_id": run_id[:256], "model_package_version": str(version)})


def prediction_request(config: PipelineConfig, package: Mapping[str, Any], manifest_uri: str, output_uri: str,
                       job_name: str, run_id: str) -> dict[str, Any]:
    """The CreateProcessingJob request that pre-annotates new frames with a model package (the champion) through the
    trainer image's ``predict`` command (containers/trainer/predict.py): the frames are the objects ``manifest_uri``
    lists (a SageMaker manifest file: ``[{"prefix": "s3://..."}, "relative/key.jpg", ...]``), and
    ``predictions.jsonl`` + ``predictions_summary.json`` land under ``output_uri``."""
    if len(job_name) > 63 or not _JOB_NAME.fullmatch(job_name):
        raise TrainingInputError(f"bad processing job name {job_name!r}: at most 63 letters, digits and hyphens, "
                                 "starting and ending with a letter or digit")
    version = package.get("ModelPackageVersion")
    request = _trainer_processing(
        config, job_name, package, "predict",
        [_processing_input("frames", manifest_uri, "ManifestFile")],
        ("predictions", f"{PROCESSING}/output", output_uri),
        {"dag_run_id": run_id[:256], **({"model_package_version": str(version)} if version is not None else {})})
    request["AppSpecification"]["ContainerArguments"] += ["--min-score", str(config.pre_annotation_min_score),
                                                       "--max-boxes", str(config.pre_annotation_max_boxes)]
    return request


_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def _processing_input(name: str, uri: str, data_type: str = "S3Prefix") -> dict[str, Any]:
    return {"InputName": name, "S3Input": {
        "S3Uri": uri, "LocalPath": f"{PROCESSING}/input/{name}", "S3DataType": data_type, "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated"}}


def _trainer_processing(config: PipelineConfig, name: str, package: Mapping[str, Any], command: str,
                        inputs: list[dict[str, Any]], output: tuple[str, str, str],
                        tags: Mapping[str, str]) -> dict[str, Any]:
    """A Processing job of the trainer image running ``command`` on the package's model (input ``model``) and
    ``inputs`` (each passed as ``--<name> <path>``), writing ``output`` = (name, local path, S3 URI): encrypted,
    network-isolated, tagged."""
    output_name, output_path, output_uri = output
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    inputs = [_processing_input("model", model_data), *inputs]
    arguments = [command, *(a for i in inputs for a in (f"--{i['InputName']}", i["S3Input"]["LocalPath"])),
                 "--output", output_path]
    return {
        "ProcessingJobName": name,
        "RoleArn": config.sagemaker_role_arn,
        "AppSpecification": {"ImageUri": config.image_uri(TRAINER), "ContainerArguments": arguments},
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": output_name, "S3Output": {
            "S3Uri": output_uri, "LocalPath": output_path, "S3UploadMode": "EndOfJob"}}], **_kms(config, "KmsKeyId")},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": config.evaluation_instance_type, "VolumeSizeInGB": 30,
            **volume_key(config.kms_key_arn, config.evaluation_instance_type)}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "NetworkConfig": {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True},
        "Tags": _tags(config, tags),
    }


def champion_evaluation_prefix(config: PipelineConfig, version: int, dataset_version: str) -> str:
    return f"s3://{config.models_bucket}/evaluations/champion-v{version}-on-{dataset_version}"
