"""Task bodies of train_and_register (the DAG file only wires them)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from include import training
from include.config import load_config
from include.s3 import key_exists, read_json, split_uri

log = logging.getLogger(__name__)
AWS_CONN_ID = "aws_default"


def _clients() -> tuple[Any, Any]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn(), SageMakerHook(aws_conn_id=AWS_CONN_ID).conn


def dataset_version(s3: Any, bucket: str, requested: str | None, events: list[Mapping[str, Any]]) -> str:
    """The version to train on: the run's param, else the newest `dataset` Asset event, else ``latest.json``."""
    version = requested or next((e["version"] for e in reversed(events) if e.get("version")), None)
    if not version:
        if not key_exists(s3, bucket, "datasets/latest.json"):
            raise training.TrainingInputError(f"no dataset version: s3://{bucket}/datasets/ has no latest.json "
                                              f"(run the labeling DAG first, or pass dataset_version)")
        version = read_json(s3, f"s3://{bucket}/datasets/latest.json")["version"]
    if not key_exists(s3, bucket, f"datasets/{version}/card.json"):
        raise training.TrainingInputError(f"dataset version {version!r} does not exist (no "
                                          f"s3://{bucket}/datasets/{version}/card.json)")
    return version


def plan(params: Mapping[str, Any], events: list[Mapping[str, Any]], run_id: str) -> dict[str, Any]:
    """The training (or tuning) request, and the job that already did it, if one did."""
    config = load_config()
    s3, sagemaker = _clients()
    version = dataset_version(s3, config.annotations_bucket, params.get("dataset_version"), events)
    hps = training.hyperparameters(config, params.get("hyperparameters"))
    hpo = bool(params.get("hpo"))
    commit = training.code_commit()
    build = training.tuning_job_request if hpo else training.training_job_request
    request = build(config, version, hps, run_id, commit)
    done = _completed_job(sagemaker, request, hpo)
    log.info("dataset %s, %s %s, hyperparameters %s, code %s%s", version, "tuning job" if hpo else "training job",
             training.training_job_name(version, hps, hpo), json.dumps(hps), commit[:12],
             f": already done by {done}" if done else "")
    return {"dataset_version": version, "hyperparameters": hps, "commit": commit, "hpo": hpo,
            "training": None if hpo else request, "tuning": request if hpo else None, "completed_job": done}


def _completed_job(sagemaker: Any, request: Mapping[str, Any], hpo: bool) -> str | None:
    try:
        if hpo:
            job = sagemaker.describe_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=request["HyperParameterTuningJobName"])
            if job["HyperParameterTuningJobStatus"] == "Completed" and job.get("BestTrainingJob"):
                return job["BestTrainingJob"]["TrainingJobName"]
            return None
        job = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        return job["TrainingJobName"] if job["TrainingJobStatus"] == "Completed" else None
    except sagemaker.exceptions.ClientError as exc:
        if "ResourceNotFound" in exc.response["Error"]["Code"] or "not found" in str(exc).lower():
            return None
        raise


def trained_job(plan_result: Mapping[str, Any], trained: Mapping[str, Any] | None,
                tuned: Mapping[str, Any] | None) -> str:
    if trained:
        return trained["Training"]["TrainingJobName"]
    if tuned:
        return tuned["Tuning"]["BestTrainingJob"]["TrainingJobName"]
    if plan_result.get("completed_job"):
        return plan_result["completed_job"]
    raise training.TrainingInputError("no training job ran and none was done before")


def evaluation(plan_result: Mapping[str, Any], job_name: str, run_id: str) -> dict[str, Any]:
    """Publish the job's evaluation and report, and the CreateModelPackage extras for the registration."""
    config = load_config()
    s3, sagemaker = _clients()
    job = sagemaker.describe_training_job(TrainingJobName=job_name)
    result = training.publish_evaluation(s3, config, job)
    if result["dataset_version"] != plan_result["dataset_version"]:
        raise training.TrainingInputError(f"job {job_name} evaluated dataset {result['dataset_version']}, "
                                          f"expected {plan_result['dataset_version']}")
    log.info("job %s: test mAP@0.5 %.4f, mAP@[.5:.95] %.4f on dataset %s; evaluation %s, report %s", job_name,
             result["map50"], result["map"], result["dataset_version"], result["evaluation_uri"],
             result["report_uri"])
    extras = training.package_extras(config, result, run_id, plan_result["commit"],
                                     dict(job.get("HyperParameters", {})))
    return {**result, "extras": extras, "package_group": config.model_package_group}


def champion(package_arn: str, candidate: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """The champion, and the Processing job that re-scores it on the candidate's test set when it was scored on
    another one (comparing figures from two test sets would be wrong)."""
    config = load_config()
    s3, sagemaker = _clients()
    package = sagemaker.describe_model_package(ModelPackageName=package_arn)
    current = training.latest_approved(sagemaker, config.model_package_group, exclude=package_arn)
    none = {"champion": None, "request": None, "evaluation_uri": None}
    if package["ModelApprovalStatus"] != "PendingManualApproval" or current is None:
        log.info("no re-evaluation: %s", "the candidate was decided before" if current else "no champion yet")
        return {**none, "champion": current and current["ModelPackageArn"]}
    own = read_json(s3, current["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
    version = candidate["dataset_version"]
    if own.get("dataset_version") == version:
        log.info("champion %s was scored on dataset %s too: its own evaluation is comparable",
                 current["ModelPackageArn"], version)
        return {**none, "champion": current["ModelPackageArn"]}
    request = training.champion_evaluation_request(config, current, version, run_id)
    uri = training.champion_evaluation_prefix(config, current["ModelPackageVersion"], version) + "/evaluation.json"
    if key_exists(s3, *split_uri(uri)):
        log.info("champion %s already re-scored on dataset %s: %s", current["ModelPackageArn"], version, uri)
        request = None
    else:
        log.info("champion %s was scored on dataset %s, the candidate on %s: re-scoring the champion (job %s)",
                 current["ModelPackageArn"], own.get("dataset_version"), version, request["ProcessingJobName"])
    return {"champion": current["ModelPackageArn"], "request": request, "evaluation_uri": uri}


def announce(record: Mapping[str, Any], candidate: Mapping[str, Any], outlet_event: Any | None) -> dict[str, Any]:
    """Emit the `approved model` Asset only for an approved version."""
    from airflow.sdk.exceptions import AirflowSkipException

    summary = {"model_package_arn": record["model_package_arn"], "approved": record["approved"],
               "reasons": record["reasons"], "map50": candidate["map50"],
               "dataset_version": candidate["dataset_version"], "training_job": candidate["training_job"],
               "report_uri": candidate["report_uri"]}
    if not record["approved"]:
        log.warning("not approved: %s", "; ".join(record["reasons"]))
        raise AirflowSkipException(f"{record['model_package_arn']} was rejected: {'; '.join(record['reasons'])}")
    if outlet_event is not None:
        outlet_event.extra = {k: summary[k] for k in ("model_package_arn", "map50", "dataset_version",
                                                      "training_job")}
    log.info("approved: %s", json.dumps(summary, indent=2))
    return summary
