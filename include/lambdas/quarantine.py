"""Move a bad upload aside: ``quarantine/<video_id>.<ext>`` plus ``quarantine/<video_id>.reason.json``.

Shared by the ingest Lambda (zero-byte uploads) and ingest_and_extract (videos that fail extraction), so every
quarantined item looks the same whoever found it. Self-contained (boto3 only): it ships in the Lambda zip.
Nothing is lost: the exact object version is copied first, and only then is that version removed from ``videos/``.
Re-running it for an item already quarantined is harmless.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

QUARANTINE_SCHEMA = "surgical-mlops/quarantine/v1"


def quarantine_object(s3: Any, *, bucket: str, key: str, version_id: str | None, video_id: str, reason: str,
                      stage: str, prefix: str = "quarantine/") -> str:
    """Copy the object version to quarantine with its reason, then delete that version; returns the target key."""
    ext = os.path.splitext(key)[1].lower()
    target = f"{prefix}{video_id}{ext}"
    source = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
    try:
        s3.copy_object(Bucket=bucket, Key=target, CopySource=source, MetadataDirective="REPLACE",
                       Metadata={"quarantine-reason": reason[:1024], "video-id": video_id})
    except ClientError as exc:
        # The version is gone: it was quarantined by an earlier attempt if the target exists.
        if exc.response["Error"]["Code"] not in ("NoSuchKey", "NoSuchVersion", "404"):
            raise
        s3.head_object(Bucket=bucket, Key=target)
        return target
    document = {
        "schema": QUARANTINE_SCHEMA,
        "video_id": video_id,
        "reason": reason,
        "stage": stage,
        "source": {"bucket": bucket, "key": key, "version_id": version_id},
        "quarantined_object": target,
        "quarantined_at": datetime.now(UTC).isoformat(),
    }
    s3.put_object(Bucket=bucket, Key=f"{prefix}{video_id}.reason.json", Body=json.dumps(document, indent=2).encode(),
                  ContentType="application/json")
    s3.delete_object(Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
    return target
