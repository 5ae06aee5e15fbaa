"""Task bodies of ingest_and_extract (the DAG file only wires them)."""

from __future__ import annotations

import json
import logging
from typing import Any

from include import ingest
from include.config import load_config

log = logging.getLogger(__name__)
AWS_CONN_ID = "aws_default"


def _clients() -> tuple[Any, Any, Any]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    return (S3Hook(aws_conn_id=AWS_CONN_ID).get_conn(), SageMakerHook(aws_conn_id=AWS_CONN_ID).conn,
            SqsHook(aws_conn_id=AWS_CONN_ID).conn)


def videos_from_keys(keys: list[str]) -> list[dict]:
    config = load_config()
    s3, _, _ = _clients()
    videos = ingest.videos_from_keys(s3, config.raw_bucket, keys)
    log.info("reprocessing %d video(s) given as params: %s", len(videos), [v.video_id for v in videos])
    return [v.to_dict() for v in videos]


def plan(messages: list[dict], explicit: list[dict], run_id: str) -> dict[str, Any]:
    """Parse the batch, set malformed messages aside, and build one job request per video that needs one."""
    config = load_config()
    s3, _, sqs = _clients()
    batch = ingest.parse_messages(messages)
    videos = batch.videos + [ingest.Video.from_dict(v) for v in explicit]
    if batch.malformed:
        dlq = config.queue_url(config.video_dlq)
        for item in batch.malformed:
            # A malformed message can never succeed: straight to the dead-letter queue, with its reason.
            sqs.send_message(QueueUrl=dlq, MessageBody=item["body"] or "(empty)", MessageAttributes={
                "reason": {"DataType": "String", "StringValue": item["reason"]}})
            sqs.delete_message(QueueUrl=config.queue_url(config.video_queue), ReceiptHandle=item["receipt_handle"])
            log.error("%s -> moved to %s", item["reason"], config.video_dlq)
    requests = []
    for video in videos:
        if ingest.frames_done(s3, video, config):
            log.info("video_id=%s: frames already extracted with this config, no job", video.video_id)
            continue
        ingest.stage(s3, video)
        requests.append(ingest.processing_request(video, config, run_id))
    log.info("batch: %d video(s), %d job(s) to run, %d malformed message(s)", len(videos), len(requests),
             len(batch.malformed))
    return {"requests": requests, "videos": [v.to_dict() for v in videos],
            "planned": [r["ProcessingJobName"] for r in requests]}


def settle(videos: list[dict], frames_event: Any | None, planned: list[str] | None = None) -> dict[str, Any]:
    """Outcome per video; delete the messages of every video that is done; emit the new frames (those of the jobs
    ``planned`` in this run: a duplicate message of a video extracted before is already done, not new)."""
    from airflow.sdk.exceptions import AirflowSkipException

    config = load_config()
    s3, sagemaker, sqs = _clients()
    batch = [ingest.Video.from_dict(v) for v in videos]
    outcome = ingest.settle(s3, sagemaker, batch, config, planned=None if planned is None else set(planned))
    queue = config.queue_url(config.video_queue)
    finished = outcome.extracted + outcome.already_done + [v for v, _ in outcome.quarantined]
    for video in finished:
        for handle in video.receipt_handles:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=handle)
    summary = outcome.summary()
    log.info("outcome: %s", json.dumps(summary, indent=2))
    if outcome.pending:
        log.warning("%d video(s) not finished; their messages stay on the queue for a later run",
                    len(outcome.pending))
    if not outcome.extracted:
        raise AirflowSkipException("no new frames in this run: the frames Asset is not updated")
    if frames_event is not None:
        frames_event.extra = {"videos": summary["extracted"], "bucket": config.frames_bucket, "prefix": "frames/"}
    return summary
