"""S3 reads the task bodies share: ``s3://`` URIs, JSON documents, and whether a key or a prefix exists.

URIs are parsed by the Amazon provider's ``S3Hook.parse_s3_url``; the client is any boto3 S3 client (the tasks get
theirs from ``S3Hook``), so the functions are also usable from tests with moto.
"""

from __future__ import annotations

import json
from typing import Any

_MISSING = ("404", "NoSuchKey", "NotFound")


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook.parse_s3_url(uri)


def read_json(s3: Any, uri: str) -> Any:
    bucket, key = split_uri(uri)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def read_text_if_exists(s3: Any, bucket: str, key: str) -> str | None:
    """The object's text, or None when the key does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in _MISSING:
            return None
        raise


def read_json_if_exists(s3: Any, bucket: str, key: str) -> Any | None:
    """The document, or None when the key does not exist."""
    text = read_text_if_exists(s3, bucket, key)
    return None if text is None else json.loads(text)


def key_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in _MISSING:
            return False
        raise


def prefix_exists(s3: Any, bucket: str, prefix: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))
