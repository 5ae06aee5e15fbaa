"""Lambda handler: S3 ObjectCreated on the raw-videos bucket -> one SQS message per uploaded video version.

Deployed by ``infra/foundation.yaml`` (the same file runs locally: ``local_aws`` delivers S3 events to this handler
the way Lambda's S3 trigger does). The deployment zip holds this file and ``quarantine.py``; the Lambda runtime
provides boto3.

Rules:
- only ``.mp4``/``.avi`` keys under ``videos/`` count; any other key is ignored with a log line;
- a zero-byte upload is moved to ``quarantine/`` with a reason document, and no message is sent;
- the same object version delivered twice yields one message: a conditional write to the idempotency table
  claims the version before the message is sent (S3 delivers events at least once, Lambda retries async calls);
- logs carry the opaque ``video_id``, never the object key (keys may hold patient identifiers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

try:  # in the deployment zip the modules sit side by side
    from quarantine import quarantine_object
except ModuleNotFoundError:  # imported from the repository (tests, DAGs)
    from include.lambdas.quarantine import quarantine_object

MESSAGE_SCHEMA = "surgical-mlops/video-uploaded/v1"
# A claim that never reached "queued" (the sender died) may be taken over after this many seconds.
CLAIM_TIMEOUT_S = 300
# Idempotency records expire (DynamoDB TTL) after the longest S3 redelivery window we care about.
RECORD_TTL_S = 14 * 24 * 3600

logger = logging.getLogger("s3_to_sqs")
logger.setLevel(logging.INFO)


class Settings:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.queue_url = env["QUEUE_URL"]
        self.table = env["IDEMPOTENCY_TABLE"]
        self.video_prefix = env.get("VIDEO_PREFIX", "videos/")
        self.quarantine_prefix = env.get("QUARANTINE_PREFIX", "quarantine/")
        self.extensions = tuple(e.strip().lower() for e in env.get("VIDEO_EXTENSIONS", ".mp4,.avi").split(","))


def video_id_for(bucket: str, key: str, version: str) -> str:
    """Opaque, deterministic id of one object version: the same upload always maps to the same id."""
    return hashlib.sha256(f"s3://{bucket}/{key}?versionId={version}".encode()).hexdigest()[:20]


def classify(key: str, size: int, settings: Settings) -> str:
    """``video`` (send a message), ``empty`` (quarantine) or ``ignored``."""
    if not key.startswith(settings.video_prefix) or not key.lower().endswith(settings.extensions):
        return "ignored"
    if size == 0:
        return "empty"
    return "video"


class MalformedEvent(ValueError):
    """An event record that is not an S3 notification record."""


def parse_record(record: dict[str, Any]) -> dict[str, Any]:
    try:
        s3 = record["s3"]
        obj = s3["object"]
        _ = obj["key"], s3["bucket"]["name"]
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(
            f"malformed S3 event record: missing {exc} (expected s3.bucket.name and s3.object.key)"
        ) from exc
    key = unquote_plus(obj["key"])  # S3 URL-encodes keys in event notifications
    version_id = obj.get("versionId")
    # Without versioning there is no version id: the ETag and sequencer still identify the write.
    version = version_id or f"etag:{obj.get('eTag', '')}:{obj.get('sequencer', '')}"
    bucket = s3["bucket"]["name"]
    return {
        "bucket": bucket,
        "key": key,
        "version_id": version_id,
        "size": int(obj.get("size", 0)),
        "etag": obj.get("eTag"),
        "sequencer": obj.get("sequencer"),
        "event_time": record.get("eventTime"),
        "event_name": record.get("eventName", ""),
        "video_id": video_id_for(bucket, key, version),
    }


def build_message(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": MESSAGE_SCHEMA,
        "video_id": item["video_id"],
        "bucket": item["bucket"],
        "key": item["key"],
        "version_id": item["version_id"],
        "size": item["size"],
        "etag": item["etag"],
        "sequencer": item["sequencer"],
        "event_time": item["event_time"],
    }


@cache
def _client(service: str) -> Any:
    return boto3.client(service)


def _claim(settings: Settings, video_id: str, now: int) -> bool:
    """Claim this object version; False when another delivery already claimed or finished it."""
    try:
        _client("dynamodb").put_item(
            TableName=settings.table,
            Item={
                "pk": {"S": video_id},
                "state": {"S": "claimed"},
                "claimed_at": {"N": str(now)},
                "expires_at": {"N": str(now + RECORD_TTL_S)},
            },
            ConditionExpression="attribute_not_exists(pk) OR (#s = :claimed AND claimed_at < :stale)",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":claimed": {"S": "claimed"}, ":stale": {"N": str(now - CLAIM_TIMEOUT_S)}},
        )
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise


def _finish(settings: Settings, video_id: str, state: str, detail: str) -> None:
    _client("dynamodb").update_item(
        TableName=settings.table,
        Key={"pk": {"S": video_id}},
        UpdateExpression="SET #s = :state, detail = :detail",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":state": {"S": state}, ":detail": {"S": detail}},
    )


def _release(settings: Settings, video_id: str) -> None:
    _client("dynamodb").delete_item(TableName=settings.table, Key={"pk": {"S": video_id}})


def _send(settings: Settings, item: dict[str, Any]) -> str:
    response = _client("sqs").send_message(
        QueueUrl=settings.queue_url,
        MessageBody=json.dumps(build_message(item), sort_keys=True),
        MessageAttributes={
            "video_id": {"DataType": "String", "StringValue": item["video_id"]},
            "schema": {"DataType": "String", "StringValue": MESSAGE_SCHEMA},
        },
    )
    return response["MessageId"]


def process_record(record: dict[str, Any], settings: Settings) -> dict[str, Any]:
    item = parse_record(record)
    video_id = item["video_id"]
    if not item["event_name"].startswith("ObjectCreated"):
        logger.info("video_id=%s ignored: event %s is not ObjectCreated", video_id, item["event_name"])
        return {"video_id": video_id, "outcome": "ignored"}
    kind = classify(item["key"], item["size"], settings)
    if kind == "ignored":
        logger.info("video_id=%s ignored: not a .mp4/.avi object under %s", video_id, settings.video_prefix)
        return {"video_id": video_id, "outcome": "ignored"}
    if not _claim(settings, video_id, int(time.time())):
        logger.info("video_id=%s duplicate delivery of an object version already handled: skipped", video_id)
        return {"video_id": video_id, "outcome": "duplicate"}
    try:
        if kind == "empty":
            reason = "zero-byte upload: the object is empty, there is no video to process"
            target = quarantine_object(_client("s3"), bucket=item["bucket"], key=item["key"],
                                       version_id=item["version_id"], video_id=video_id, reason=reason,
                                       stage="ingest", prefix=settings.quarantine_prefix)
            _finish(settings, video_id, "quarantined", reason)
            logger.warning("video_id=%s quarantined: %s", video_id, reason)
            return {"video_id": video_id, "outcome": "quarantined", "quarantined_object": target}
        message_id = _send(settings, item)
    except Exception:
        _release(settings, video_id)  # let the retry claim it again: nothing is lost
        raise
    _finish(settings, video_id, "queued", message_id)
    logger.info("video_id=%s queued: message %s (%d bytes)", video_id, message_id, item["size"])
    return {"video_id": video_id, "outcome": "queued", "message_id": message_id}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("Event") == "s3:TestEvent":  # sent by S3 when a notification is configured
        logger.info("s3:TestEvent ignored")
        return {"results": []}
    settings = Settings()
    results, failures = [], []
    for index, record in enumerate(event.get("Records", [])):
        try:
            results.append(process_record(record, settings))
        except Exception as exc:  # one bad record must not stop the others
            logger.exception("record %d failed: %s", index, exc)
            failures.append(f"record {index}: {type(exc).__name__}: {exc}")
    if failures:
        # Raising makes Lambda retry the event; the records already handled are skipped as duplicates.
        raise RuntimeError(f"{len(failures)} of {len(results) + len(failures)} records failed: {failures}")
    return {"results": results}
