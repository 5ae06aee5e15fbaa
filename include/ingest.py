"""ingest_and_extract logic: which videos a batch holds, which need extraction, the job requests, and the outcome.

The DAG only wires these functions. The rules:
- a video is identified by its opaque ``video_id`` (bucket, key and version); messages are parsed and checked, a
  malformed one is moved to the dead-letter queue with its reason (it can never succeed);
- one SageMaker Processing job per video, named from the video id and a hash of the extraction config, so retries
  and re-runs address the same job; a video whose ``frames.json`` already records this config needs no job;
- the exact object version is staged under ``staging/<video_id>.<ext>`` (the job input is then exact and opaque);
- afterwards: extracted -> the message is deleted; failed because of the input (one of the frame extractor's own
  failure reasons, :data:`INPUT_FAILURES`) -> the video is quarantined with that reason and the message deleted
  (nothing is lost, the batch goes on); failed for any other reason (the platform's: an internal error, capacity, an
  instance lost, a missing permission, a throttled call, the container's own ``internal error``) -> not the video's
  fault: never quarantined, the message stays; so does anything unfinished. SQS redelivers a message that stays after
  its visibility timeout (the backoff), a later run starts a new job for it, and after ``maxReceiveCount`` receives
  SQS moves it to the dead-letter queue, whose alarm fires (``infra/foundation.yaml``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from include.config import PipelineConfig
from include.instances import volume_key
from include.lambdas.quarantine import quarantine_object
from include.lambdas.s3_to_sqs import MESSAGE_SCHEMA, video_id_for

log = logging.getLogger(__name__)
FRAMES_SCHEMA = "surgical-mlops/frames/v1"
EXTRACTOR = "frame_extractor"
INPUT_DIR = "/opt/ml/processing/input/video"
OUTPUT_DIR = "/opt/ml/processing/output/frames"
_REQUIRED = ("video_id", "bucket", "key", "version_id")
# The frame extractor's failure reasons that the input causes (containers/frame_extractor/extract.py, ExtractionError):
# only these quarantine a video. "no input file" / "more than one input file" are not among them: the job's input
# folder is the pipeline's staging, not the uploader's video.
INPUT_FAILURES = ("empty file", "not a video", "no video stream", "zero frames decoded", "truncated or corrupt video")
# SageMaker may put its error class before the container's failure text.
_REASON_PREFIXES = ("AlgorithmError: ", "ClientError: ")


def input_failure(reason: str) -> bool:
    """True when a failed job's reason says the video itself cannot give frames (so quarantining it is right)."""
    text = reason.strip()
    for prefix in _REASON_PREFIXES:
        text = text.removeprefix(prefix)
    return text.startswith(INPUT_FAILURES)


@dataclass(frozen=True)
class Video:
    video_id: str
    bucket: str
    key: str
    version_id: str | None
    size: int = 0
    receipt_handles: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ext(self) -> str:
        return os.path.splitext(self.key)[1].lower()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "receipt_handles": list(self.receipt_handles)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Video:
        return cls(**{**data, "receipt_handles": tuple(data.get("receipt_handles", ()))})


@dataclass
class Batch:
    videos: list[Video]
    malformed: list[dict[str, str]]  # {"receipt_handle", "body", "reason"}


def parse_messages(messages: list[dict[str, Any]]) -> Batch:
    """SQS messages (as SqsSensor pushes them) -> videos, one per video_id, with every receipt handle kept."""
    by_id: dict[str, Video] = {}
    malformed = []
    for message in messages:
        handle, body = message["ReceiptHandle"], message.get("Body", "")
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("the body is not a JSON object")
            if data.get("schema") != MESSAGE_SCHEMA:
                raise ValueError(f"unknown schema {data.get('schema')!r} (expected {MESSAGE_SCHEMA})")
            missing = [k for k in _REQUIRED if k not in data]
            if missing:
                raise ValueError(f"missing field(s): {', '.join(missing)}")
            expected = video_id_for(data["bucket"], data["key"], data["version_id"] or "")
            if data["version_id"] and data["video_id"] != expected:
                raise ValueError("video_id does not match bucket, key and version_id")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            malformed.append({"receipt_handle": handle, "body": body[:2000], "reason": f"malformed message: {exc}"})
            continue
        previous = by_id.get(data["video_id"])
        handles = (previous.receipt_handles if previous else ()) + (handle,)
        by_id[data["video_id"]] = Video(data["video_id"], data["bucket"], data["key"], data["version_id"],
                                        int(data.get("size", 0)), handles)
    return Batch(list(by_id.values()), malformed)


def videos_from_keys(s3: Any, bucket: str, keys: list[str]) -> list[Video]:
    """Explicit keys from the UI (reprocessing, backfills): their current versions."""
    videos = []
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        version = head.get("VersionId")
        videos.append(Video(video_id_for(bucket, key, version or f"etag:{head['ETag'].strip(chr(34))}:"), bucket,
                            key, version, head["ContentLength"]))
    return videos


def extraction_settings(config: PipelineConfig) -> dict[str, Any]:
    return {"fps": config.extraction_fps, "jpeg_quality": config.jpeg_quality, "max_side": config.max_frame_side,
            "image": config.image_uri(EXTRACTOR)}


def settings_hash(config: PipelineConfig) -> str:
    return hashlib.sha256(json.dumps(extraction_settings(config), sort_keys=True).encode()).hexdigest()[:8]


def job_name(video: Video, config: PipelineConfig) -> str:
    """Deterministic: the same video and extraction config always name the same job (<= 63 characters)."""
    return f"frames-{video.video_id}-{settings_hash(config)}"


def staging_key(video: Video) -> str:
    return f"staging/{video.video_id}{video.ext}"


def frames_prefix(video: Video) -> str:
    return f"frames/{video.video_id}"


def processing_request(video: Video, config: PipelineConfig, run_id: str = "manual") -> dict[str, Any]:
    """The CreateProcessingJob request of one video (what SageMakerProcessingOperator is given)."""
    kms = {"KmsKeyId": config.kms_key_arn} if config.kms_key_arn else {}
    return {
        "ProcessingJobName": job_name(video, config),
        "RoleArn": config.sagemaker_role_arn,
        "AppSpecification": {
            "ImageUri": config.image_uri(EXTRACTOR),
            "ContainerArguments": [
                "--input", INPUT_DIR, "--output", OUTPUT_DIR, "--video-id", video.video_id,
                "--source-bucket", video.bucket, "--source-key", video.key,
                "--source-version", video.version_id or "", "--fps", str(config.extraction_fps),
                "--jpeg-quality", str(config.jpeg_quality), "--max-side", str(config.max_frame_side),
            ],
        },
        "ProcessingInputs": [{"InputName": "video", "S3Input": {
            "S3Uri": f"s3://{video.bucket}/{staging_key(video)}", "LocalPath": INPUT_DIR, "S3DataType": "S3Prefix",
            "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "frames", "S3Output": {
            "S3Uri": f"s3://{config.frames_bucket}/{frames_prefix(video)}", "LocalPath": OUTPUT_DIR,
            "S3UploadMode": "EndOfJob"}}], **kms},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": config.processing_instance_type, "VolumeSizeInGB": 30,
            **volume_key(config.kms_key_arn, config.processing_instance_type)}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        # Medical data: no network for the container, encrypted traffic between instances.
        "NetworkConfig": {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True},
        "Tags": [{"Key": "video_id", "Value": video.video_id}, {"Key": "dag_run_id", "Value": run_id[:256]},
                 *({"Key": k, "Value": v} for k, v in config.tags.items())],
    }


def frames_done(s3: Any, video: Video, config: PipelineConfig) -> bool:
    """True when the video's frames.json exists and records this extraction config and version."""
    try:
        body = s3.get_object(Bucket=config.frames_bucket, Key=f"{frames_prefix(video)}/frames.json")["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return False
        raise
    manifest = json.loads(body)
    extraction = manifest.get("extraction", {})
    return (manifest.get("video_id") == video.video_id
            and extraction.get("fps") == config.extraction_fps
            and extraction.get("jpeg_quality") == config.jpeg_quality
            and extraction.get("max_side") == config.max_frame_side)


def stage(s3: Any, video: Video) -> None:
    """Copy the exact object version to ``staging/`` (idempotent: the same version gives the same object)."""
    source = {"Bucket": video.bucket, "Key": video.key, **({"VersionId": video.version_id} if video.version_id else {})}
    s3.copy_object(Bucket=video.bucket, Key=staging_key(video), CopySource=source)


@dataclass
class Outcome:
    extracted: list[Video] = field(default_factory=list)
    already_done: list[Video] = field(default_factory=list)
    quarantined: list[tuple[Video, str]] = field(default_factory=list)
    pending: list[tuple[Video, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"extracted": [v.video_id for v in self.extracted],
                "already_done": [v.video_id for v in self.already_done],
                "quarantined": {v.video_id: reason for v, reason in self.quarantined},
                "pending": {v.video_id: why for v, why in self.pending}}


def latest_job(sagemaker: Any, name: str) -> dict[str, Any] | None:
    """The job of this name, or the newest retry of it (the operator suffixes a timestamp on retries)."""
    summaries = sagemaker.list_processing_jobs(NameContains=name, SortBy="CreationTime", SortOrder="Descending",
                                               MaxResults=10)["ProcessingJobSummaries"]
    matching = [s for s in summaries if s["ProcessingJobName"] == name or
                s["ProcessingJobName"].startswith(name[:52] + "-")]
    if not matching:
        return None
    return sagemaker.describe_processing_job(ProcessingJobName=matching[0]["ProcessingJobName"])


def settle(s3: Any, sagemaker: Any, videos: list[Video], config: PipelineConfig,
           planned: set[str] | None = None) -> Outcome:
    """After the jobs: decide each video's outcome, quarantine the failed ones, clean the staged copies. A video with
    frames is ``extracted`` when its job was ``planned`` in this run (the job names; None: any job of its name),
    else ``already_done``."""
    outcome = Outcome()
    for video in videos:
        name = job_name(video, config)
        job = latest_job(sagemaker, name)
        status = job["ProcessingJobStatus"] if job else None
        if frames_done(s3, video, config):
            new = job is not None and (planned is None or name in planned)
            (outcome.extracted if new else outcome.already_done).append(video)
        elif status == "Failed" and not input_failure(job.get("FailureReason", "")):  # type: ignore[union-attr]
            reason = job.get("FailureReason") or "no reason given"  # type: ignore[union-attr]
            outcome.pending.append((video, f"job Failed, not because of the video: {reason}"))
            log.warning("video_id=%s: job failed, not because of the video (%s): not quarantined, its message stays "
                        "for a retry", video.video_id, reason)
            continue
        elif status == "Failed":
            reason = job["FailureReason"]  # type: ignore[index]
            quarantine_object(s3, bucket=video.bucket, key=video.key, version_id=video.version_id,
                              video_id=video.video_id, reason=f"frame extraction failed: {reason}",
                              stage="extract", prefix=config.quarantine_prefix)
            outcome.quarantined.append((video, reason))
            log.warning("video_id=%s quarantined: %s", video.video_id, reason)
        else:
            outcome.pending.append((video, f"job {status or 'missing'}"))
            continue
        s3.delete_object(Bucket=video.bucket, Key=staging_key(video))
    return outcome
