"""S3 upload -> Lambda (run by the local runner from its deployed zip) -> SQS, against the running local stack."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from include.lambdas.s3_to_sqs import MESSAGE_SCHEMA, video_id_for
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

RAW = "surgical-videos-raw"
QUEUE = "video-processing-queue"
DLQ = "video-processing-dlq"
LAMBDA = "surgical-s3-to-sqs"
SETTLE_S = 2.5  # time for a late duplicate to show up after the first message (an absence check, after the message)


def delivery_wait_s(aws: Any) -> float:
    """How long an upload's Lambda may take, as the local Lambda runner allows it: S3 invokes the function
    asynchronously, one run and up to MaximumRetryAttempts (2) retries, each stopped at the function's Timeout
    (60 s in infra/foundation.yaml); a test waits longer than all of them."""
    timeout = aws("lambda").get_function_configuration(FunctionName=LAMBDA)["Timeout"]
    return 3 * timeout + 60


class QueueReader:
    """Reads and deletes every message of the queue, keeping them by object key (tests run one after another)."""

    def __init__(self, sqs: Any, queue: str, timeout: float) -> None:
        self.sqs, self.url = sqs, sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        self.by_key: dict[str, list[dict[str, Any]]] = {}
        self.timeout = timeout

    def poll(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            response = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                MessageAttributeNames=["All"])
            for message in response.get("Messages", []):
                body = json.loads(message["Body"])
                body["_attributes"] = message.get("MessageAttributes", {})
                self.by_key.setdefault(body.get("key", ""), []).append(body)
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def wait_for(self, key: str, count: int = 1) -> list[dict[str, Any]]:
        """The key's messages once there are ``count`` of them (the test fails if they do not come), and any late
        duplicate that follows within SETTLE_S."""
        def arrived() -> bool:
            self.poll(1.0)
            return len(self.by_key.get(key, [])) >= count

        wait_for(arrived, self.timeout, interval=0, message=lambda: f"{count} message(s) for {key!r} expected, got "
                                                                     f"{self.by_key.get(key, [])}")
        self.poll(SETTLE_S)
        return self.by_key.get(key, [])


@pytest.fixture(scope="module")
def queue(aws) -> QueueReader:
    return QueueReader(aws("sqs"), QUEUE, delivery_wait_s(aws))


def lambda_log(aws) -> list[str]:
    """Every line the function has logged so far (the runner writes a run's lines when the run has ended)."""
    pages = aws("logs").get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{LAMBDA}")
    return [event["message"] for page in pages for event in page["events"]]


def unique_key(ext: str = ".mp4", prefix: str = "videos/") -> str:
    return f"{prefix}case {uuid.uuid4().hex[:8]}+clip{ext}"  # a space and a plus: S3 URL-encodes both in events


def s3_event(bucket: str, key: str, size: int, version_id: str, etag: str) -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "redelivery",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key), "size": size, "eTag": etag, "versionId": version_id,
                          "sequencer": "0055AED6DCD90281E5"}},
    }]}


def test_upload_yields_exactly_one_message_with_its_fields(aws, queue):
    key = unique_key()
    put = aws("s3").put_object(Bucket=RAW, Key=key, Body=b"\x00\x00\x00\x18ftypmp42" + b"x" * 500)
    messages = queue.wait_for(key)
    assert len(messages) == 1, messages
    message = messages[0]
    assert message["schema"] == MESSAGE_SCHEMA
    assert message["bucket"] == RAW and message["key"] == key
    assert message["version_id"] == put["VersionId"]
    assert message["size"] == 512
    assert message["etag"] == put["ETag"].strip('"')
    assert message["video_id"] == video_id_for(RAW, key, put["VersionId"])
    assert len(message["video_id"]) == 20 and "case" not in message["video_id"]
    assert message["_attributes"]["video_id"]["StringValue"] == message["video_id"]


def test_new_version_of_same_key_is_a_new_video(aws, queue):
    key = unique_key(".avi")
    first = aws("s3").put_object(Bucket=RAW, Key=key, Body=b"RIFF" + b"a" * 100)
    assert len(queue.wait_for(key)) == 1
    second = aws("s3").put_object(Bucket=RAW, Key=key, Body=b"RIFF" + b"b" * 100)
    messages = queue.wait_for(key, count=2)
    assert [m["version_id"] for m in messages] == [first["VersionId"], second["VersionId"]]


def test_duplicate_delivery_of_one_version_yields_one_message(aws, queue):
    key = unique_key()
    put = aws("s3").put_object(Bucket=RAW, Key=key, Body=b"v" * 64)
    assert len(queue.wait_for(key)) == 1
    # S3 delivers at least once: the same event again (twice in one batch, and once more) must not queue it again.
    event = s3_event(RAW, key, 64, put["VersionId"], put["ETag"].strip('"'))
    event["Records"] *= 2
    response = aws("lambda").invoke(FunctionName=LAMBDA, Payload=json.dumps(event).encode())
    assert "FunctionError" not in response
    outcomes = [r["outcome"] for r in json.loads(response["Payload"].read())["results"]]
    assert outcomes == ["duplicate", "duplicate"]
    assert len(queue.wait_for(key)) == 1


def test_zero_byte_upload_is_quarantined_with_a_reason(aws, queue):
    s3 = aws("s3")
    key = unique_key()
    put = s3.put_object(Bucket=RAW, Key=key, Body=b"")
    video_id = video_id_for(RAW, key, put["VersionId"])
    reason_key = f"quarantine/{video_id}.reason.json"
    # The run has ended once its last line is logged: the reason, the quarantined copy and the deleted version are
    # all in place then (the reason is written before the version is deleted).
    wait_for(lambda: any(f"\tvideo_id={video_id} quarantined: " in line for line in lambda_log(aws)),
             delivery_wait_s(aws), message=f"the Lambda did not quarantine the empty upload {video_id}")
    document = json.loads(s3.get_object(Bucket=RAW, Key=reason_key)["Body"].read())
    assert "zero-byte" in document["reason"]
    assert document["source"] == {"bucket": RAW, "key": key, "version_id": put["VersionId"]}
    quarantined = s3.head_object(Bucket=RAW, Key=f"quarantine/{video_id}.mp4")
    assert quarantined["Metadata"]["quarantine-reason"] == document["reason"]
    versions = s3.list_object_versions(Bucket=RAW, Prefix=key).get("Versions", [])
    assert put["VersionId"] not in [v["VersionId"] for v in versions]  # moved, not copied
    queue.poll(SETTLE_S)  # the run has ended: a message it sent would be on the queue now
    assert queue.by_key.get(key) is None


def test_non_video_keys_yield_no_message(aws, queue):
    s3 = aws("s3")
    keys = [unique_key(".txt"), unique_key(".mp4", prefix="incoming/"), unique_key(".mov")]
    video_ids = [video_id_for(RAW, key, s3.put_object(Bucket=RAW, Key=key, Body=b"not a video we take")["VersionId"])
                 for key in keys]
    # the .txt and .mov under videos/ reach the Lambda, which ignores each with a line of its own once it has run
    expected = [f"\tvideo_id={video_ids[i]} ignored: not a .mp4/.avi object" for i in (0, 2)]

    def ignored() -> list[str]:
        lines = lambda_log(aws)
        return lines if all(any(e in line for line in lines) for e in expected) else []

    wait_for(ignored, delivery_wait_s(aws), interval=1,
             message="the Lambda did not log that it ignored the .txt and .mov uploads")
    queue.poll(SETTLE_S)  # the runs have ended: a message they sent, or a run for incoming/, would show by now
    for key in keys:
        assert queue.by_key.get(key) is None
    lines = lambda_log(aws)
    assert not any(video_ids[1] in line for line in lines), "incoming/ never reaches the Lambda"
    assert not any("case " in line for line in lines), "object keys must not appear in logs"


def test_message_that_keeps_failing_lands_in_the_dlq(aws):
    sqs = aws("sqs")
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    redrive = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
                         ["Attributes"]["RedrivePolicy"])
    max_receives = int(redrive["maxReceiveCount"])
    marker = f"poison-{uuid.uuid4().hex}"
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"key": marker}))
    receives = 0
    for _ in range(max_receives + 3):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1)
        receives += sum(marker in m["Body"] for m in got.get("Messages", []))
    assert receives == max_receives  # a consumer that never deletes it sees it maxReceiveCount times

    def in_dlq() -> bool:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1)  # the next ones next
        return any(marker in m["Body"] for m in got.get("Messages", []))

    wait_for(in_dlq, 60, interval=0, message=f"{marker} did not reach the dead-letter queue")


def test_failed_lambda_event_is_retried_then_kept_in_the_failure_queue(aws):
    sqs = aws("sqs")
    failed = sqs.get_queue_url(QueueName="video-ingest-lambda-dlq")["QueueUrl"]
    broken = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": RAW}}}]}
    response = aws("lambda").invoke(FunctionName=LAMBDA, InvocationType="Event", Payload=json.dumps(broken))
    assert response["StatusCode"] == 202
    # three runs (the first try and MaximumRetryAttempts 2), each stopped at the function's Timeout at the latest
    records = wait_for(lambda: [json.loads(m["Body"]) for m in
                                sqs.receive_message(QueueUrl=failed, WaitTimeSeconds=1).get("Messages", [])],
                       delivery_wait_s(aws), interval=0, message="the failed event must not be lost")
    record = records[0]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3  # first try + MaximumRetryAttempts 2
    assert record["requestPayload"] == broken
    assert "MalformedEvent: malformed S3 event record: missing 'object'" in record["responsePayload"]["errorMessage"]
