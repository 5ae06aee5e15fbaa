"""The ingest Lambda's rules, in-process against moto (no server): fast checks of each rule and property."""

from __future__ import annotations

import json
import logging
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


# -- exact values: the message, the idempotency record, the outcomes and their log lines -----------------------------
def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "s3_to_sqs"]


def record_item(env: dict[str, Any], video_id: str) -> dict[str, Any]:
    return boto3.client("dynamodb").get_item(TableName="idem", Key={"pk": {"S": video_id}}).get("Item")


def test_settings_read_their_environment(monkeypatch):
    monkeypatch.setenv("QUEUE_URL", "from-os-environ")
    settings = Settings({"QUEUE_URL": "q", "IDEMPOTENCY_TABLE": "t", "VIDEO_PREFIX": "raw/",
                         "QUARANTINE_PREFIX": "held/", "VIDEO_EXTENSIONS": " .MOV, .mkv "})
    assert (settings.queue_url, settings.table, settings.video_prefix, settings.quarantine_prefix,
            settings.extensions) == ("q", "t", "raw/", "held/", (".mov", ".mkv"))
    assert (SETTINGS.video_prefix, SETTINGS.quarantine_prefix, SETTINGS.extensions) == (
        "videos/", "quarantine/", (".mp4", ".avi"))
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "table-from-os-environ")
    assert Settings().queue_url == "from-os-environ" and Settings().table == "table-from-os-environ"


def test_classify_each_kind():
    assert classify("videos/a.MP4", 5, SETTINGS) == "video"
    assert classify("videos/a.avi", 0, SETTINGS) == "empty"
    assert classify("videos/a.mov", 5, SETTINGS) == "ignored"
    assert classify("other/a.mp4", 5, SETTINGS) == "ignored"


def test_a_record_is_parsed_into_every_field():
    record = {"eventName": "ObjectCreated:Put", "eventTime": "2026-11-25T10:00:00.000Z",
              "s3": {"bucket": {"name": "b"}, "object": {"key": "videos/a+b.mp4", "size": 3, "eTag": "e",
                                                          "versionId": "v", "sequencer": "01"}}}
    assert parse_record(record) == {"bucket": "b", "key": "videos/a b.mp4", "version_id": "v", "size": 3,
                                    "etag": "e", "sequencer": "01", "event_time": "2026-11-25T10:00:00.000Z",
                                    "event_name": "ObjectCreated:Put",
                                    "video_id": video_id_for("b", "videos/a b.mp4", "v")}


def test_without_versioning_the_etag_and_sequencer_identify_the_write():
    record = {"s3": {"bucket": {"name": "b"}, "object": {"key": "videos/a.mp4", "eTag": "e", "sequencer": "01"}}}
    assert parse_record(record)["video_id"] == video_id_for("b", "videos/a.mp4", "etag:e:01")
    bare = parse_record({"s3": {"bucket": {"name": "b"}, "object": {"key": "videos/a.mp4"}}})
    assert bare == {"bucket": "b", "key": "videos/a.mp4", "version_id": None, "size": 0, "etag": None,
                    "sequencer": None, "event_time": None, "event_name": "",
                    "video_id": video_id_for("b", "videos/a.mp4", "etag::")}


@pytest.mark.parametrize(("record", "missing"), [
    ({"s3": {"object": {"key": "videos/a.mp4"}}}, "'bucket'"),
    ({"s3": {"bucket": {"name": "b"}, "object": {}}}, "'key'"),
    ({"eventName": "ObjectCreated:Put"}, "'s3'"),
])
def test_a_malformed_record_names_what_is_missing(record, missing):
    with pytest.raises(s3_to_sqs.MalformedEvent) as raised:
        parse_record(record)
    assert str(raised.value) == (f"malformed S3 event record: missing {missing} "
                                 "(expected s3.bucket.name and s3.object.key)")


def test_the_message_holds_the_upload_and_nothing_else():
    item = {"bucket": "b", "key": "videos/a.mp4", "version_id": "v", "size": 3, "etag": "e", "sequencer": "01",
            "event_time": "t", "event_name": "ObjectCreated:Put", "video_id": "vid"}
    assert s3_to_sqs.build_message(item) == {
        "schema": "surgical-mlops/video-uploaded/v1", "video_id": "vid", "bucket": "b", "key": "videos/a.mp4",
        "version_id": "v", "size": 3, "etag": "e", "sequencer": "01", "event_time": "t"}


def test_a_queued_upload_exactly(env, caplog):
    caplog.set_level(logging.INFO, logger="s3_to_sqs")
    key = "videos/a.mp4"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"x" * 10)
    video_id = video_id_for(BUCKET, key, put["VersionId"])
    result = handler(event_for(put, key, 10), None)
    got = env["sqs"].receive_message(QueueUrl=env["url"], MessageAttributeNames=["All"])["Messages"]
    [sent] = got
    assert result == {"results": [{"video_id": video_id, "outcome": "queued", "message_id": sent["MessageId"]}]}
    message = s3_to_sqs.build_message(parse_record(event_for(put, key, 10)["Records"][0]))
    assert sent["Body"] == json.dumps(message, sort_keys=True)
    assert sent["MessageAttributes"] == {
        "video_id": {"DataType": "String", "StringValue": video_id},
        "schema": {"DataType": "String", "StringValue": "surgical-mlops/video-uploaded/v1"}}
    item = record_item(env, video_id)
    claimed = int(item.pop("claimed_at")["N"])
    assert item == {"pk": {"S": video_id}, "state": {"S": "queued"}, "detail": {"S": sent["MessageId"]},
                    "expires_at": {"N": str(claimed + 14 * 24 * 3600)}}
    assert lines(caplog) == [("INFO", f"video_id={video_id} queued: message {sent['MessageId']} (10 bytes)")]


def test_a_zero_byte_upload_exactly(env, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="s3_to_sqs")
    monkeypatch.setenv("QUARANTINE_PREFIX", "held/")
    key = "videos/empty.AVI"
    put = env["s3"].put_object(Bucket=BUCKET, Key=key, Body=b"")
    video_id = video_id_for(BUCKET, key, put["VersionId"])
    reason = "zero-byte upload: the object is empty, there is no video to process"
    assert handler(event_for(put, key, 0), None) == {"results": [
        {"video_id": video_id, "outcome": "quarantined", "quarantined_object": f"held/{video_id}.avi"}]}
    doc = json.loads(env["s3"].get_object(Bucket=BUCKET, Key=f"held/{video_id}.reason.json")["Body"].read())
    assert (doc["reason"], doc["stage"]) == (reason, "ingest")
    item = record_item(env, video_id)
    assert (item["state"], item["detail"]) == ({"S": "quarantined"}, {"S": reason})
    assert lines(caplog) == [("WARNING", f"video_id={video_id} quarantined: {reason}")]


def test_ignored_events_exactly(env, caplog):
    caplog.set_level(logging.INFO, logger="s3_to_sqs")
    put = env["s3"].put_object(Bucket=BUCKET, Key="videos/x.mp4", Body=b"x")
    removed = handler(event_for(put, "videos/x.mp4", 1, name="ObjectRemoved:Delete"), None)
    removed_id = video_id_for(BUCKET, "videos/x.mp4", put["VersionId"])
    assert removed == {"results": [{"video_id": removed_id, "outcome": "ignored"}]}
    other = env["s3"].put_object(Bucket=BUCKET, Key="videos/notes.txt", Body=b"x")
    ignored = handler(event_for(other, "videos/notes.txt", 1), None)
    other_id = video_id_for(BUCKET, "videos/notes.txt", other["VersionId"])
    assert ignored == {"results": [{"video_id": other_id, "outcome": "ignored"}]}
    assert lines(caplog) == [
        ("INFO", f"video_id={removed_id} ignored: event ObjectRemoved:Delete is not ObjectCreated"),
        ("INFO", f"video_id={other_id} ignored: not a .mp4/.avi object under videos/")]
    assert record_item(env, removed_id) is None and record_item(env, other_id) is None
    assert messages(env) == []


def test_a_duplicate_exactly(env, caplog):
    put = env["s3"].put_object(Bucket=BUCKET, Key="videos/dup.mp4", Body=b"x")
    video_id = video_id_for(BUCKET, "videos/dup.mp4", put["VersionId"])
    handler(event_for(put, "videos/dup.mp4", 1), None)
    caplog.set_level(logging.INFO, logger="s3_to_sqs")
    caplog.clear()
    assert handler(event_for(put, "videos/dup.mp4", 1), None) == {
        "results": [{"video_id": video_id, "outcome": "duplicate"}]}
    assert lines(caplog) == [
        ("INFO", f"video_id={video_id} duplicate delivery of an object version already handled: skipped")]


def test_a_claim_is_taken_over_only_once_stale_and_never_once_finished(env):
    settings = Settings()
    assert s3_to_sqs._claim(settings, "vid", 1000)
    assert record_item(env, "vid") == {"pk": {"S": "vid"}, "state": {"S": "claimed"}, "claimed_at": {"N": "1000"},
                                       "expires_at": {"N": str(1000 + 14 * 24 * 3600)}}
    assert not s3_to_sqs._claim(settings, "vid", 1000 + 300)  # not yet stale
    assert s3_to_sqs._claim(settings, "vid", 1000 + 301)  # the sender died: taken over
    assert record_item(env, "vid")["claimed_at"] == {"N": "1301"}
    s3_to_sqs._finish(settings, "vid", "queued", "m-1")
    assert not s3_to_sqs._claim(settings, "vid", 10**9)  # finished: never claimed again
    assert record_item(env, "vid") == {"pk": {"S": "vid"}, "state": {"S": "queued"}, "detail": {"S": "m-1"},
                                       "claimed_at": {"N": "1301"}, "expires_at": {"N": str(1301 + 14 * 24 * 3600)}}


def test_a_failed_record_is_logged_and_reported(env, caplog):
    caplog.set_level(logging.INFO, logger="s3_to_sqs")
    bad = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}
    expected = "malformed S3 event record: missing 'object' (expected s3.bucket.name and s3.object.key)"
    with pytest.raises(RuntimeError) as raised:
        handler(bad, None)
    assert str(raised.value) == f"1 of 1 records failed: {[f'record 0: MalformedEvent: {expected}']}"
    assert lines(caplog) == [("ERROR", f"record 0 failed: {expected}")]


def test_an_event_without_records_has_no_results(env):
    assert handler({}, None) == {"results": []}


def test_the_test_event_needs_no_settings(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="s3_to_sqs")
    monkeypatch.delenv("QUEUE_URL", raising=False)
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    assert handler({"Service": "Amazon S3", "Event": "s3:TestEvent", "Records": [{}]}, None) == {"results": []}
    assert lines(caplog) == [("INFO", "s3:TestEvent ignored")]
