"""Task bodies of the labeling DAG: select new frames, triage the labels, publish a dataset version."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from include.config import PipelineConfig, load_config
from include.labeling import dataset as datasets
from include.labeling.ground_truth import input_manifest, label_category_config, labeling_job_request
from include.labeling.manifest import LabeledFrame, parse_manifest

log = logging.getLogger(__name__)
AWS_CONN_ID = "aws_default"
LABELING_PREFIX = "labeling"


def _s3() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _read(s3: Any, uri: str) -> str:
    bucket, key = uri[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def _request(config: PipelineConfig, name: str, manifest_uri: str, attribute: str, adjustment: bool,
             run_id: str) -> dict[str, Any]:
    return labeling_job_request(
        name=name, region=config.region, manifest_uri=manifest_uri,
        label_config_uri=f"s3://{config.annotations_bucket}/{LABELING_PREFIX}/label-categories.json",
        output_uri=f"s3://{config.annotations_bucket}/{LABELING_PREFIX}/output", role_arn=config.sagemaker_role_arn,
        workteam_arn=config.workteam_arn, label_attribute=attribute, workers=config.labeling_workers,
        kms_key=config.kms_key_arn, adjustment=adjustment,
        tags=[{"Key": "dag_run_id", "Value": run_id[:256]}, *({"Key": k, "Value": v} for k, v in config.tags.items())])


def select_frames(video_ids: list[str], run_id: str) -> dict[str, Any]:
    """The labeling request for the frames of these videos that no dataset version has labeled yet."""
    from airflow.sdk.exceptions import AirflowSkipException

    config, s3 = load_config(), _s3()
    _, labeled, _ = datasets.load_latest(s3, config.annotations_bucket)
    done = {f.source_ref for f in labeled}
    uris = []
    for video_id in sorted(set(video_ids)):
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=config.frames_bucket, Prefix=f"frames/{video_id}/"):
            uris += [f"s3://{config.frames_bucket}/{o['Key']}" for o in page.get("Contents", [])
                     if o["Key"].endswith(".jpg")]
    uris = sorted(u for u in uris if u not in done)
    if not uris:
        raise AirflowSkipException(f"no unlabeled frames for videos {sorted(set(video_ids))}: nothing to label")
    # The job name is the content's hash: a re-run for the same frames finds the same job instead of a new one.
    name = f"label-{hashlib.sha256(''.join(uris).encode()).hexdigest()[:20]}"
    base = f"{LABELING_PREFIX}/{name}"
    s3.put_object(Bucket=config.annotations_bucket, Key=f"{LABELING_PREFIX}/label-categories.json",
                  Body=json.dumps(label_category_config(config.label_classes)).encode())
    s3.put_object(Bucket=config.annotations_bucket, Key=f"{base}/input.manifest", Body=input_manifest(uris).encode())
    log.info("labeling %d new frame(s) of %d video(s) in job %s", len(uris), len(set(video_ids)), name)
    return _request(config, name, f"s3://{config.annotations_bucket}/{base}/input.manifest",
                    config.label_attribute, False, run_id)


def triage(job: dict[str, Any], run_id: str) -> dict[str, Any] | None:
    """Frames with a doubtful box go to a review (label adjustment) job; returns its request, or None."""
    config, s3 = load_config(), _s3()
    output = _read(s3, job["LabelingJobOutput"]["OutputDatasetS3Uri"])
    report = parse_manifest(output, config.label_attribute)
    for error in report.errors:
        log.error("%s: left out of the dataset", error)
    doubtful = {f.source_ref for f in report.frames if f.min_confidence < config.review_confidence_threshold}
    log.info("first pass: %d frame(s) labeled, %d doubtful (a box under confidence %.2f), %d bad line(s)",
             len(report.frames), len(doubtful), config.review_confidence_threshold, len(report.errors))
    if not doubtful:
        return None
    lines = [line for line in output.splitlines() if line.strip() and json.loads(line)["source-ref"] in doubtful]
    name = f"{job['LabelingJobName'][:50]}-review"
    key = f"{LABELING_PREFIX}/{job['LabelingJobName']}/review-input.manifest"
    s3.put_object(Bucket=config.annotations_bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
    return _request(config, name, f"s3://{config.annotations_bucket}/{key}", f"{config.label_attribute}-reviewed",
                    True, run_id)


def publish(first_pass: dict[str, Any], review: dict[str, Any] | None, outlet_event: Any | None) -> dict[str, Any]:
    """Merge the first pass with the reviewed frames, then publish an immutable dataset version."""
    config, s3 = load_config(), _s3()
    frames = {f.source_ref: f for f in _labeled(s3, first_pass, config.label_attribute)}
    sources = {"first_pass": len(frames), "reviewed": 0}
    if review:
        for frame in _labeled(s3, review, f"{config.label_attribute}-reviewed"):
            frames[frame.source_ref] = frame
            sources["reviewed"] += 1
    parent, parent_frames, parent_splits = datasets.load_latest(s3, config.annotations_bucket)
    merged = datasets.merge(parent_frames, list(frames.values()))
    splits = datasets.assign_splits(sorted({f.video_id for f in merged}), parent_splits)
    version = datasets.DatasetVersion(merged, tuple(config.label_classes), splits, parent, sources)
    result = datasets.publish(s3, config.annotations_bucket, version)
    card = version.card()
    log.info("dataset %s %s (parent %s): %s", result["version"], "published" if result["created"] else
             "already published", parent, json.dumps(card["splits"]))
    if outlet_event is not None:
        outlet_event.extra = {"version": result["version"], "uri": result["uri"], "parent": parent}
    return {**result, "parent": parent, "frames": card["frames"]}


def _labeled(s3: Any, job: dict[str, Any], attribute: str) -> list[LabeledFrame]:
    report = parse_manifest(_read(s3, job["LabelingJobOutput"]["OutputDatasetS3Uri"]), attribute)
    for error in report.errors:
        log.error("%s (%s): left out of the dataset", error, job["LabelingJobName"])
    return report.frames


def backend(requested: str | None) -> str:
    """The labeling backend of this run: the run's ``backend`` param, else the config's ``labeling_backend``."""
    from include.config import LABELING_BACKENDS

    chosen = requested or load_config().labeling_backend
    if chosen not in LABELING_BACKENDS:
        raise ValueError(f"labeling backend {chosen!r}: expected one of {', '.join(LABELING_BACKENDS)}")
    log.info("labeling backend: %s", chosen)
    return chosen


def pre_annotation(request: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The champion's predictions for the round's frames (Label Studio pre-annotations): the Processing job that
    makes them (None when there is no champion or they exist already), where they land, and the round's request."""
    from include import training
    from include.s3 import key_exists, split_uri

    config, s3 = load_config(), _s3()
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    champion = training.latest_approved(SageMakerHook(aws_conn_id=AWS_CONN_ID).conn, config.model_package_group)
    if champion is None:
        log.info("no champion model yet: the round starts without pre-annotations")
        return {"request": None, "predictions": None, "round": request}
    name = request["LabelingJobName"]
    uris = [json.loads(line)["source-ref"] for line in
            _read(s3, request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]).splitlines()
            if line.strip()]
    bucket = split_uri(uris[0])[0]
    prefix = f"s3://{bucket}/"
    version = champion["ModelPackageVersion"]
    base = f"{LABELING_PREFIX}/{name}/pre-annotations/v{version}"
    output = f"s3://{config.annotations_bucket}/{base}"
    predictions = {"uri": output, "frames_prefix": prefix, "model": f"{config.model_package_group} v{version}"}
    if key_exists(s3, config.annotations_bucket, f"{base}/predictions.jsonl"):
        log.info("pre-annotations by %s exist already: %s", predictions["model"], output)
        return {"request": None, "predictions": predictions, "round": request}
    # SageMaker's manifest file: the common prefix, then each object's key relative to it.
    manifest = [{"prefix": prefix}, *(split_uri(u)[1] for u in uris)]
    s3.put_object(Bucket=config.annotations_bucket, Key=f"{base}/frames.manifest", Body=json.dumps(manifest).encode())
    job = f"predict-{hashlib.sha256(f'{name}:{version}'.encode()).hexdigest()[:20]}"
    log.info("pre-annotating %d frame(s) with %s (processing job %s)", len(uris), predictions["model"], job)
    return {"request": training.prediction_request(config, champion, f"s3://{config.annotations_bucket}/{base}/"
                                                   "frames.manifest", output, job, run_id),
            "predictions": predictions, "round": request}


def first_pass_result(ti: Any) -> dict[str, Any]:
    """The first pass's ``{"LabelingJob": ...}`` from whichever backend ran."""
    return _one(ti, ["ground_truth.first_pass", "label_studio.first_pass.round.export"], required=True)


def review_result(ti: Any) -> dict[str, Any] | None:
    return _one(ti, ["ground_truth.review", "label_studio.review.export"], required=False)


def _one(ti: Any, task_ids: list[str], required: bool) -> dict[str, Any] | None:
    found = [value for value in (ti.xcom_pull(task_ids=task_id) for task_id in task_ids) if value]
    if required and not found:
        raise RuntimeError(f"no labeling result from {task_ids}")
    return found[0] if found else None
