"""ingest_and_extract's rules: message parsing, deterministic job names, the job request, idempotent outcomes."""

from __future__ import annotations

import json

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from include import ingest
from include.config import build_config
from include.lambdas.quarantine import quarantine_object
from include.lambdas.s3_to_sqs import MESSAGE_SCHEMA, video_id_for
from local_aws.sagemaker.validation import service_model, validate
from tests.sagemaker_api import TEST_KEY_ARN, valid

CONFIG = build_config("local", {"kms_key_arn": TEST_KEY_ARN})


def message(handle: str = "h1", **fields) -> dict:
    body = {"schema": MESSAGE_SCHEMA, "bucket": "raw", "key": "videos/a.mp4", "version_id": "v1", "size": 10}
    body["video_id"] = video_id_for(body["bucket"], body["key"], body["version_id"])
    body.update(fields)
    return {"ReceiptHandle": handle, "Body": json.dumps(body)}


def test_duplicate_messages_of_one_video_become_one_video_with_both_handles():
    batch = ingest.parse_messages([message("h1"), message("h2")])
    assert len(batch.videos) == 1 and batch.videos[0].receipt_handles == ("h1", "h2")
    assert batch.malformed == []


@pytest.mark.parametrize(("raw", "reason"), [
    ({"ReceiptHandle": "x", "Body": "not json"}, "malformed message: Expecting value"),
    ({"ReceiptHandle": "x", "Body": "[1, 2]"}, "not a JSON object"),
    (message(schema="other/v9"), "unknown schema 'other/v9'"),
    (message(video_id="forged"), "video_id does not match"),
])
def test_malformed_messages_are_set_aside_with_a_reason(raw, reason):
    batch = ingest.parse_messages([raw, message("ok")])
    assert [v.receipt_handles for v in batch.videos] == [("ok",)]
    assert reason in batch.malformed[0]["reason"]


def test_a_message_missing_fields_names_them():
    body = json.loads(message()["Body"])
    del body["bucket"], body["key"]
    batch = ingest.parse_messages([{"ReceiptHandle": "x", "Body": json.dumps(body)}])
    assert batch.malformed[0]["reason"] == "malformed message: missing field(s): bucket, key"


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=60))
def test_job_names_are_deterministic_valid_and_opaque(key, version):
    video = ingest.Video(video_id_for("raw", f"videos/{key}", version), "raw", f"videos/{key}", version)
    name = ingest.job_name(video, CONFIG)
    assert name == ingest.job_name(video, CONFIG)
    assert len(name) <= 63 and name.startswith(f"frames-{video.video_id}-")  # opaque: the id is a hash
    validate(service_model().operation_model("DescribeProcessingJob"), {"ProcessingJobName": name})


def test_job_name_changes_with_the_extraction_config():
    video = ingest.Video("0123456789abcdef0123", "raw", "videos/a.mp4", "v1")
    other = build_config("local", {"extraction_fps": 2})
    assert ingest.job_name(video, CONFIG) != ingest.job_name(video, other)


def test_processing_request_is_valid_for_sagemaker_and_secure():
    video = ingest.Video("0123456789abcdef0123", "raw", "videos/patient jane doe.mp4", "v1")
    request = ingest.processing_request(video, CONFIG, "scheduled__2026-11-25")
    valid("CreateProcessingJob", request)
    assert request["NetworkConfig"]["EnableNetworkIsolation"] is True
    # The key by ARN (a volume key may not be an alias); ml.c5 has EBS volumes, so they take the key too.
    assert request["ProcessingOutputConfig"]["KmsKeyId"] == TEST_KEY_ARN
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == TEST_KEY_ARN
    on_nvme = build_config("local", {"kms_key_arn": TEST_KEY_ARN, "processing_instance_type": "ml.g4dn.xlarge"})
    request = ingest.processing_request(video, on_nvme, "scheduled__2026-11-25")
    valid("CreateProcessingJob", request)
    assert "VolumeKmsKeyId" not in request["ProcessingResources"]["ClusterConfig"]
    # The job's input and output carry the opaque id only, never the uploader's key.
    assert "jane" not in json.dumps([request["ProcessingInputs"], request["ProcessingOutputConfig"],
                                     request["ProcessingJobName"]])


@pytest.fixture
def s3(in_process_aws):
    client = boto3.client("s3")
    for bucket in ("raw", CONFIG.frames_bucket):
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return client


def test_frames_done_only_for_the_same_config(s3):
    video = ingest.Video("0123456789abcdef0123", "raw", "videos/a.mp4", "v1")
    assert not ingest.frames_done(s3, video, CONFIG)
    manifest = {"video_id": video.video_id, "extraction": {"fps": 5.0, "jpeg_quality": 90, "max_side": 1280}}
    s3.put_object(Bucket=CONFIG.frames_bucket, Key=f"frames/{video.video_id}/frames.json",
                  Body=json.dumps(manifest).encode())
    assert ingest.frames_done(s3, video, CONFIG)
    assert not ingest.frames_done(s3, video, build_config("local", {"extraction_fps": 2}))


def test_staging_copies_the_exact_version(s3):
    first = s3.put_object(Bucket="raw", Key="videos/a.mp4", Body=b"first")
    s3.put_object(Bucket="raw", Key="videos/a.mp4", Body=b"second upload of the same key")
    video = ingest.Video(video_id_for("raw", "videos/a.mp4", first["VersionId"]), "raw", "videos/a.mp4",
                         first["VersionId"])
    ingest.stage(s3, video)
    assert s3.get_object(Bucket="raw", Key=ingest.staging_key(video))["Body"].read() == b"first"


def test_quarantine_twice_is_harmless(s3):
    put = s3.put_object(Bucket="raw", Key="videos/bad.mp4", Body=b"junk")
    kwargs = {"bucket": "raw", "key": "videos/bad.mp4", "version_id": put["VersionId"], "video_id": "vid",
              "reason": "not a video", "stage": "extract"}
    assert quarantine_object(s3, **kwargs) == "quarantine/vid.mp4"
    assert quarantine_object(s3, **kwargs) == "quarantine/vid.mp4"
    assert s3.get_object(Bucket="raw", Key="quarantine/vid.mp4")["Body"].read() == b"junk"
    assert "Versions" not in s3.list_object_versions(Bucket="raw", Prefix="videos/bad.mp4")
