"""The ingest Lambda's rules, in-process against moto (no server): fast checks of each rule and property."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from include.lambdas import s3_to_sqs
from include.lambdas.s3_to_sqs import Settings, classify, handler, parse_record, video_id_for

BUCKET = "surgical-videos-raw"
SETTINGS = Settings({"QUEUE_URL": "unused", "IDEMPOTENCY_TABLE": "unused"})


@pytest.fixture
def env(in_process_aws, monkeypatch: pytest.MonkeyPatch) -> Any:
    s3_to_sqs._client.cache_clear()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    url = boto3.client("sqs").create_queue(QueueName="q")["QueueUrl"]
    boto3.client("dynamodb").create_table(
        TableName="idem", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    monkeypatch.setenv("QUEUE_URL", url)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "idem")
    yield {"s3": s3, "sqs": boto3.client("sqs"), "url": url}
    s3_to_sqs._client.cache_clear()


def event_for(put: dict[str, Any], key: str, size: int, name: str = "ObjectCreated:Put") -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {"Records": [{"eventName": name, "eventTime": "2026-11-25T10:00:00.000Z",
                         "s3": {"bucket": {"name": BUCKET},
                                "object": {"key": quote_plus(key), "size": size, "eTag": put["ETag"].strip('"'),
                                           "versionId": put["VersionId"], "sequencer": "01"}}}]}


def messages(env: dict[str, Any]) -> list[dict[str, Any]]:
    got = env["sqs"].receive_message(QueueUrl=env["url"], MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in got]


def test_video_upload_queues_one_message(env):
    key = "videos/a b+c.MP4"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"x" * 10)
    result = handler(event_for(put, key, 10), None)
    assert [r["outcome"] for r in result["results"]] == ["queued"]
    [message] = messages(env)
    assert message["key"] == key and message["version_id"] == put["VersionId"] and message["size"] == 10


def test_duplicate_event_yields_one_message(env):
    key = "videos/dup.mp4"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"x")
    event = event_for(put, key, 1)
    handler(event, None)
    assert handler(event, None)["results"][0]["outcome"] == "duplicate"
    assert len(messages(env)) == 1


def test_send_failure_releases_the_claim_so_the_retry_queues_it(env, monkeypatch):
    key = "videos/retry.avi"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"x")
    real_send = s3_to_sqs._send
    monkeypatch.setattr(s3_to_sqs, "_send", lambda *a: (_ for _ in ()).throw(RuntimeError("SQS unavailable")))
    with pytest.raises(RuntimeError, match=r"1 of 1 records failed: .*SQS unavailable"):
        handler(event_for(put, key, 1), None)
    monkeypatch.setattr(s3_to_sqs, "_send", real_send)
    assert handler(event_for(put, key, 1), None)["results"][0]["outcome"] == "queued"
    assert len(messages(env)) == 1


def test_zero_byte_upload_is_moved_to_quarantine(env):
    key = "videos/empty.mp4"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"")
    [result] = handler(event_for(put, key, 0), None)["results"]
    assert result["outcome"] == "quarantined"
    video_id = video_id_for(BUCKET, key, put["VersionId"])
    doc = json.loads(env["s3"].get_object(Bucket=BUCKET, Key=f"quarantine/{video_id}.reason.json")["Body"].read())
    assert doc["reason"].startswith("zero-byte upload")
    assert "Versions" not in env["s3"].list_object_versions(Bucket=BUCKET, Prefix=key)
    assert messages(env) == []


def test_one_bad_record_does_not_stop_the_others(env):
    key = "videos/good.mp4"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"x")
    event = event_for(put, key, 1)
    event["Records"].insert(0, {"eventName": "ObjectCreated:Put", "s3": {}})
    with pytest.raises(RuntimeError, match="record 0: MalformedEvent"):
        handler(event, None)
    assert len(messages(env)) == 1


def test_test_event_and_removals_are_ignored(env):
    assert handler({"Service": "Amazon S3", "Event": "s3:TestEvent"}, None) == {"results": []}
    put = env["s3"].put_object(Bucket=BUCKET, Key="videos/x.mp4", Body=b"x")
    result = handler(event_for(put, "videos/x.mp4", 1, name="ObjectRemoved:Delete"), None)
    assert result["results"][0]["outcome"] == "ignored"


def test_event_keys_are_url_decoded():
    record = {"s3": {"bucket": {"name": "b"}, "object": {"key": "videos/a+b%2Bc.mp4", "size": 3}}}
    assert parse_record(record)["key"] == "videos/a b+c.mp4"


@given(st.text(min_size=1, max_size=60), st.integers(min_value=0, max_value=10**9))
def test_only_mp4_and_avi_under_videos_count(name, size):
    for key in (name, f"videos/{name}"):
        kind = classify(key, size, SETTINGS)
        counts = key.startswith("videos/") and key.lower().endswith((".mp4", ".avi"))
        assert kind == ("ignored" if not counts else "empty" if size == 0 else "video")


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_video_id_is_opaque_and_deterministic(key, version, other_version):
    vid = video_id_for(BUCKET, key, version)
    assert vid == video_id_for(BUCKET, key, version)
    assert len(vid) == 20 and all(c in "0123456789abcdef" for c in vid)
    if other_version != version:
        assert vid != video_id_for(BUCKET, key, other_version)
