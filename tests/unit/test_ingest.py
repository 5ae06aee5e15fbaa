"""ingest_and_extract's rules: message parsing, deterministic job names, the job request, idempotent outcomes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
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


# -- exact values: what the DAG and the job are given --------------------------------------------------------------
VIDEO = ingest.Video("0123456789abcdef0123", "raw", "videos/Case One.MP4", "v1", 42, ("h1",))


def test_a_video_round_trips_through_its_dict():
    data = VIDEO.to_dict()
    assert data == {"video_id": "0123456789abcdef0123", "bucket": "raw", "key": "videos/Case One.MP4",
                    "version_id": "v1", "size": 42, "receipt_handles": ["h1"]}
    back = ingest.Video.from_dict(json.loads(json.dumps(data)))
    assert back == VIDEO and back.receipt_handles == ("h1",)
    bare = ingest.Video.from_dict({"video_id": "v", "bucket": "b", "key": "videos/x.avi", "version_id": None})
    assert bare.receipt_handles == () and bare.size == 0 and bare.ext == ".avi"


def test_parsed_videos_carry_every_field_of_the_message():
    sized, unsized = message("h1", size=7), message("h2")
    body = json.loads(unsized["Body"])
    del body["size"]
    unsized["Body"] = json.dumps(body)
    batch = ingest.parse_messages([unsized, sized])  # the last message of a video gives its fields
    [video] = batch.videos
    assert (video.video_id, video.bucket, video.key, video.version_id, video.size, video.receipt_handles) == (
        body["video_id"], "raw", "videos/a.mp4", "v1", 7, ("h2", "h1"))
    [other] = ingest.parse_messages([unsized]).videos
    assert other.size == 0


def test_a_message_without_a_version_is_taken_as_it_is():
    [video] = ingest.parse_messages([message("h", version_id=None, video_id="anything", size=3)]).videos
    assert (video.video_id, video.version_id, video.size) == ("anything", None, 3)


@pytest.mark.parametrize(("raw", "reason"), [
    ({"ReceiptHandle": "x", "Body": "[1, 2]"}, "malformed message: the body is not a JSON object"),
    ({"ReceiptHandle": "x"}, "malformed message: Expecting value: line 1 column 1 (char 0)"),
    (message("x", schema="other/v9"),
     f"malformed message: unknown schema 'other/v9' (expected {MESSAGE_SCHEMA})"),
    (message("x", video_id="forged"), "malformed message: video_id does not match bucket, key and version_id"),
])
def test_a_malformed_message_keeps_its_handle_body_and_exact_reason(raw, reason):
    batch = ingest.parse_messages([raw])
    assert batch.videos == []
    assert batch.malformed == [{"receipt_handle": "x", "body": raw.get("Body", ""), "reason": reason}]


def test_a_malformed_body_is_kept_up_to_2000_characters():
    body = "x" * 2500
    [bad] = ingest.parse_messages([{"ReceiptHandle": "x", "Body": body}]).malformed
    assert bad["body"] == "x" * 2000


def test_extraction_settings_and_their_hash():
    settings = {"fps": 5.0, "jpeg_quality": 90, "max_side": 1280,
                "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/frame-extractor:latest"}
    assert ingest.extraction_settings(CONFIG) == settings
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    assert ingest.settings_hash(CONFIG) == digest
    assert ingest.job_name(VIDEO, CONFIG) == f"frames-0123456789abcdef0123-{digest}"


def test_processing_request_exactly():
    run_id = "r" * 300
    request = ingest.processing_request(VIDEO, CONFIG, run_id)
    assert request == {
        "ProcessingJobName": ingest.job_name(VIDEO, CONFIG),
        "RoleArn": "arn:aws:iam::123456789012:role/surgical-sagemaker-execution",
        "AppSpecification": {
            "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/frame-extractor:latest",
            "ContainerArguments": [
                "--input", "/opt/ml/processing/input/video", "--output", "/opt/ml/processing/output/frames",
                "--video-id", "0123456789abcdef0123", "--source-bucket", "raw",  # pragma: allowlist secret - a video id
                "--source-key", "videos/Case One.MP4", "--source-version", "v1", "--fps", "5.0",
                "--jpeg-quality", "90", "--max-side", "1280",
            ],
        },
        "ProcessingInputs": [{"InputName": "video", "S3Input": {
            "S3Uri": "s3://raw/staging/0123456789abcdef0123.mp4", "LocalPath": "/opt/ml/processing/input/video",
            "S3DataType": "S3Prefix", "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "frames", "S3Output": {
            "S3Uri": "s3://surgical-frames-processed/frames/0123456789abcdef0123",
            "LocalPath": "/opt/ml/processing/output/frames", "S3UploadMode": "EndOfJob"}}],
            "KmsKeyId": TEST_KEY_ARN},
        "ProcessingResources": {"ClusterConfig": {
            "InstanceCount": 1, "InstanceType": "ml.c5.xlarge", "VolumeSizeInGB": 30,
            "VolumeKmsKeyId": TEST_KEY_ARN}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "NetworkConfig": {"EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True},
        "Tags": [{"Key": "video_id", "Value": "0123456789abcdef0123"}, {"Key": "dag_run_id", "Value": "r" * 256},
                 {"Key": "project", "Value": "surgical-mlops"}],
    }


def test_processing_request_without_a_key_or_a_version_and_its_default_run_id():
    video = ingest.Video("0123456789abcdef0123", "raw", "videos/a.avi", None)
    request = ingest.processing_request(video, build_config("local"))
    assert request["ProcessingOutputConfig"] == {"Outputs": [{"OutputName": "frames", "S3Output": {
        "S3Uri": "s3://surgical-frames-processed/frames/0123456789abcdef0123",
        "LocalPath": "/opt/ml/processing/output/frames", "S3UploadMode": "EndOfJob"}}]}
    assert "VolumeKmsKeyId" not in request["ProcessingResources"]["ClusterConfig"]
    arguments = request["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--source-version") + 1] == ""
    assert request["Tags"][1] == {"Key": "dag_run_id", "Value": "manual"}


class FakeS3:
    """Records the calls (name, kwargs); answers head_object from ``heads``, raises ``errors[name]`` if set."""

    def __init__(self, heads: dict | None = None, errors: dict | None = None, body: bytes = b"") -> None:
        self.calls: list[tuple[str, dict]] = []
        self.heads, self.errors, self.body = heads or {}, errors or {}, body

    def _call(self, name: str, kwargs: dict):
        self.calls.append((name, kwargs))
        if name in self.errors:
            raise self.errors[name]

    def head_object(self, **kwargs):
        self._call("head_object", kwargs)
        return self.heads.get(kwargs["Key"], {})

    def get_object(self, **kwargs):
        self._call("get_object", kwargs)
        return {"Body": io.BytesIO(self.body)}

    def copy_object(self, **kwargs):
        self._call("copy_object", kwargs)

    def put_object(self, **kwargs):
        self._call("put_object", kwargs)

    def delete_object(self, **kwargs):
        self._call("delete_object", kwargs)


def client_error(code: str, operation: str = "CopyObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


def test_videos_from_keys_reads_each_current_version():
    s3 = FakeS3(heads={"videos/a.mp4": {"VersionId": "v7", "ETag": '"e1"', "ContentLength": 11},
                       "videos/b.avi": {"ETag": '"e2"', "ContentLength": 22}})
    videos = ingest.videos_from_keys(s3, "raw", ["videos/a.mp4", "videos/b.avi"])
    assert s3.calls == [("head_object", {"Bucket": "raw", "Key": "videos/a.mp4"}),
                        ("head_object", {"Bucket": "raw", "Key": "videos/b.avi"})]
    assert videos == [ingest.Video(video_id_for("raw", "videos/a.mp4", "v7"), "raw", "videos/a.mp4", "v7", 11),
                      ingest.Video(video_id_for("raw", "videos/b.avi", "etag:e2:"), "raw", "videos/b.avi", None, 22)]


def test_frames_done_reads_the_manifest_and_tolerates_only_a_missing_one():
    video = ingest.Video("0123456789abcdef0123", "raw", "videos/a.mp4", "v1")
    s3 = FakeS3(body=json.dumps({"video_id": video.video_id}).encode())
    assert not ingest.frames_done(s3, video, CONFIG)  # no "extraction" record
    assert s3.calls == [("get_object", {"Bucket": "surgical-frames-processed",
                                        "Key": "frames/0123456789abcdef0123/frames.json"})]
    for code in ("NoSuchKey", "404"):
        assert not ingest.frames_done(FakeS3(errors={"get_object": client_error(code, "GetObject")}), video, CONFIG)
    with pytest.raises(ClientError, match="AccessDenied"):
        ingest.frames_done(FakeS3(errors={"get_object": client_error("AccessDenied", "GetObject")}), video, CONFIG)


def test_staging_an_unversioned_object_copies_its_key():
    s3 = FakeS3()
    ingest.stage(s3, ingest.Video("0123456789abcdef0123", "raw", "videos/a.MP4", None))  # pragma: allowlist secret
    assert s3.calls == [("copy_object", {"Bucket": "raw", "Key": "staging/0123456789abcdef0123.mp4",
                                         "CopySource": {"Bucket": "raw", "Key": "videos/a.MP4"}})]


# -- quarantine_object: the exact calls ----------------------------------------------------------------------------
def test_quarantine_copies_the_version_with_its_reason_then_deletes_it(monkeypatch):
    s3 = FakeS3()
    reason = "r" * 1500
    target = quarantine_object(s3, bucket="raw", key="videos/Bad.MP4", version_id="v3", video_id="vid",
                               reason=reason, stage="extract", prefix="held/")
    assert target == "held/vid.mp4"
    [copy, put, delete] = s3.calls
    assert copy == ("copy_object", {"Bucket": "raw", "Key": "held/vid.mp4",
                                    "CopySource": {"Bucket": "raw", "Key": "videos/Bad.MP4", "VersionId": "v3"},
                                    "MetadataDirective": "REPLACE",
                                    "Metadata": {"quarantine-reason": "r" * 1024, "video-id": "vid"}})
    name, kwargs = put
    document = json.loads(kwargs.pop("Body"))
    assert (name, kwargs) == ("put_object", {"Bucket": "raw", "Key": "held/vid.reason.json",
                                             "ContentType": "application/json"})
    at = document.pop("quarantined_at")
    assert document == {"schema": "surgical-mlops/quarantine/v1", "video_id": "vid", "reason": reason,
                        "stage": "extract", "source": {"bucket": "raw", "key": "videos/Bad.MP4", "version_id": "v3"},
                        "quarantined_object": "held/vid.mp4"}
    assert at.endswith("+00:00")
    assert abs((datetime.now(UTC) - datetime.fromisoformat(at)).total_seconds()) < 60
    assert delete == ("delete_object", {"Bucket": "raw", "Key": "videos/Bad.MP4", "VersionId": "v3"})


def test_the_reason_document_is_indented_json():
    s3 = FakeS3()
    quarantine_object(s3, bucket="raw", key="videos/a.mp4", version_id=None, video_id="vid", reason="empty",
                      stage="ingest")
    body = s3.calls[1][1]["Body"]
    assert body == json.dumps(json.loads(body), indent=2).encode()


def test_quarantine_of_an_unversioned_object_names_no_version():
    s3 = FakeS3()
    assert quarantine_object(s3, bucket="raw", key="videos/a.avi", version_id=None, video_id="vid",
                             reason="empty", stage="ingest") == "quarantine/vid.avi"
    assert s3.calls[0][1]["CopySource"] == {"Bucket": "raw", "Key": "videos/a.avi"}
    assert json.loads(s3.calls[1][1]["Body"])["source"] == {"bucket": "raw", "key": "videos/a.avi", "version_id": None}
    assert s3.calls[2] == ("delete_object", {"Bucket": "raw", "Key": "videos/a.avi"})


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchVersion", "404"])
def test_quarantine_of_a_version_already_gone_checks_the_target(code):
    s3 = FakeS3(errors={"copy_object": client_error(code)})
    assert quarantine_object(s3, bucket="raw", key="videos/a.mp4", version_id="v1", video_id="vid", reason="x",
                             stage="extract") == "quarantine/vid.mp4"
    assert [c[0] for c in s3.calls] == ["copy_object", "head_object"]
    assert s3.calls[1] == ("head_object", {"Bucket": "raw", "Key": "quarantine/vid.mp4"})


def test_quarantine_raises_any_other_copy_error():
    s3 = FakeS3(errors={"copy_object": client_error("AccessDenied")})
    with pytest.raises(ClientError, match="AccessDenied"):
        quarantine_object(s3, bucket="raw", key="videos/a.mp4", version_id="v1", video_id="vid", reason="x",
                          stage="extract")
    assert [c[0] for c in s3.calls] == ["copy_object"]


def test_quarantine_moves_the_exact_version_and_replaces_its_metadata(s3):
    first = s3.put_object(Bucket="raw", Key="videos/a.mp4", Body=b"first", Metadata={"uploader": "jane"})
    s3.put_object(Bucket="raw", Key="videos/a.mp4", Body=b"second")
    quarantine_object(s3, bucket="raw", key="videos/a.mp4", version_id=first["VersionId"], video_id="vid",
                      reason="bad", stage="extract")
    held = s3.get_object(Bucket="raw", Key="quarantine/vid.mp4")
    assert held["Body"].read() == b"first" and held["Metadata"] == {"quarantine-reason": "bad", "video-id": "vid"}
    assert s3.head_object(Bucket="raw", Key="quarantine/vid.reason.json")["ContentType"] == "application/json"
    assert s3.get_object(Bucket="raw", Key="videos/a.mp4")["Body"].read() == b"second"


# -- latest_job and settle -----------------------------------------------------------------------------------------
class FakeSageMaker:
    """Processing jobs by name (newest first), each described by its dict; records the calls. Lists every job: the
    name filter is SageMaker's, the choice among what it lists is latest_job's."""

    def __init__(self, jobs: dict[str, dict]) -> None:
        self.jobs, self.calls = jobs, []

    def list_processing_jobs(self, **kwargs):
        self.calls.append(("list_processing_jobs", kwargs))
        return {"ProcessingJobSummaries": [{"ProcessingJobName": n} for n in self.jobs]}

    def describe_processing_job(self, **kwargs):
        self.calls.append(("describe_processing_job", kwargs))
        return {"ProcessingJobName": kwargs["ProcessingJobName"], **self.jobs[kwargs["ProcessingJobName"]]}


def test_latest_job_is_the_newest_of_the_name_or_its_retries():
    name = "frames-" + "a" * 50 + "-1234abcd"  # longer than 52: retries keep its first 52 characters
    retry = name[:52] + "-20261125"
    sagemaker = FakeSageMaker({"x" + name: {}, retry: {"ProcessingJobStatus": "Failed"},
                               name: {"ProcessingJobStatus": "Stopped"}})
    assert ingest.latest_job(sagemaker, name) == {"ProcessingJobName": retry, "ProcessingJobStatus": "Failed"}
    assert sagemaker.calls == [
        ("list_processing_jobs", {"NameContains": name, "SortBy": "CreationTime", "SortOrder": "Descending",
                                  "MaxResults": 10}),
        ("describe_processing_job", {"ProcessingJobName": retry})]
    assert ingest.latest_job(FakeSageMaker({"x" + name: {}}), name) is None
    short = FakeSageMaker({"x-frames-1": {}, "frames-1": {"ProcessingJobStatus": "Completed"}})
    assert ingest.latest_job(short, "frames-1")["ProcessingJobName"] == "frames-1"


def test_settle_decides_each_video_and_cleans_what_is_settled(s3, caplog):
    def video(name: str) -> ingest.Video:
        put = s3.put_object(Bucket="raw", Key=f"videos/{name}.mp4", Body=name.encode())
        v = ingest.Video(video_id_for("raw", f"videos/{name}.mp4", put["VersionId"]), "raw", f"videos/{name}.mp4",
                         put["VersionId"])
        ingest.stage(s3, v)
        return v

    extracted, done, failed, algorithm, unexplained, platform, running, missing = (video(n) for n in (
        "extracted", "done", "failed", "algorithm", "unexplained", "platform", "running", "missing"))
    for v in (extracted, done):
        manifest = {"video_id": v.video_id, "extraction": {"fps": 5.0, "jpeg_quality": 90, "max_side": 1280}}
        s3.put_object(Bucket=CONFIG.frames_bucket, Key=f"frames/{v.video_id}/frames.json",
                      Body=json.dumps(manifest).encode())
    sagemaker = FakeSageMaker({
        ingest.job_name(extracted, CONFIG): {"ProcessingJobStatus": "Completed"},
        ingest.job_name(failed, CONFIG): {"ProcessingJobStatus": "Failed", "FailureReason": "no video stream"},
        ingest.job_name(algorithm, CONFIG): {"ProcessingJobStatus": "Failed",
                                             "FailureReason": "AlgorithmError: not a video: text"},
        ingest.job_name(unexplained, CONFIG): {"ProcessingJobStatus": "Failed"},
        ingest.job_name(platform, CONFIG): {"ProcessingJobStatus": "Failed",
                                            "FailureReason": "InternalServerError: We encountered an internal error."},
        ingest.job_name(running, CONFIG): {"ProcessingJobStatus": "InProgress"},
    })
    caplog.set_level(logging.INFO, logger="include.ingest")
    outcome = ingest.settle(s3, sagemaker, [extracted, done, failed, algorithm, unexplained, platform, running,
                                            missing], CONFIG)
    not_the_video = "job Failed, not because of the video: "
    assert outcome.summary() == {
        "extracted": [extracted.video_id], "already_done": [done.video_id],
        "quarantined": {failed.video_id: "no video stream", algorithm.video_id: "AlgorithmError: not a video: text"},
        "pending": {unexplained.video_id: not_the_video + "no reason given",
                    platform.video_id: not_the_video + "InternalServerError: We encountered an internal error.",
                    running.video_id: "job InProgress", missing.video_id: "job missing"}}
    assert outcome.quarantined == [(failed, "no video stream"), (algorithm, "AlgorithmError: not a video: text")]
    assert [v for v, _ in outcome.pending] == [unexplained, platform, running, missing]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "include.ingest"] == [
        ("WARNING", f"video_id={failed.video_id} quarantined: no video stream"),
        ("WARNING", f"video_id={algorithm.video_id} quarantined: AlgorithmError: not a video: text"),
        ("WARNING", f"video_id={unexplained.video_id}: job failed, not because of the video (no reason given): not "
                    "quarantined, its message stays for a retry"),
        ("WARNING", f"video_id={platform.video_id}: job failed, not because of the video (InternalServerError: We "
                    "encountered an internal error.): not quarantined, its message stays for a retry")]
    document = json.loads(s3.get_object(Bucket="raw", Key=f"quarantine/{failed.video_id}.reason.json")["Body"].read())
    assert (document["reason"], document["stage"]) == ("frame extraction failed: no video stream", "extract")
    assert document["source"] == {"bucket": "raw", "key": "videos/failed.mp4", "version_id": failed.version_id}
    assert s3.get_object(Bucket="raw", Key=f"quarantine/{failed.video_id}.mp4")["Body"].read() == b"failed"
    # A platform failure leaves the upload where it is, staged for the retry.
    assert s3.get_object(Bucket="raw", Key="videos/platform.mp4")["Body"].read() == b"platform"
    assert "Contents" not in s3.list_objects_v2(Bucket="raw", Prefix=f"quarantine/{platform.video_id}")
    staged = {o["Key"] for o in s3.list_objects_v2(Bucket="raw", Prefix="staging/").get("Contents", [])}
    assert staged == {ingest.staging_key(v) for v in (unexplained, platform, running, missing)}


@pytest.mark.parametrize("reason", [f"{p}: detail" for p in ingest.INPUT_FAILURES] + [
    "empty file: 0 bytes", "AlgorithmError: truncated or corrupt video: FFmpeg exited 1",
    "ClientError: zero frames decoded", "  not a video: text\n"])
def test_the_extractors_input_reasons_are_the_videos_fault(reason):
    assert ingest.input_failure(reason) is True


@pytest.mark.parametrize("reason", [
    "", "InternalServerError: We encountered an internal error. Please try again.",
    "CapacityError: Unable to provision requested ML compute capacity.", "internal error: OSError: No space left",
    "no input file: the input folder is empty", "more than one input file: the input folder holds 2 files",
    "bad arguments: --fps must be positive", "AccessDenied: not authorized to perform s3:GetObject",
    "ThrottlingException: Rate exceeded", "AlgorithmError: See job logs for more information",
    "ResourceLimitExceeded: not a video", "AlgorithmError: AlgorithmError: not a video"])
def test_any_other_failure_is_not_the_videos_fault(reason):
    assert ingest.input_failure(reason) is False


def test_an_empty_outcome_summarises_to_empty_collections():
    assert ingest.Outcome().summary() == {"extracted": [], "already_done": [], "quarantined": {}, "pending": {}}


def test_settle_quarantines_under_the_configured_prefix(s3):
    config = build_config("local", {"kms_key_arn": TEST_KEY_ARN, "quarantine_prefix": "held/"})
    put = s3.put_object(Bucket="raw", Key="videos/bad.avi", Body=b"junk")
    video = ingest.Video(video_id_for("raw", "videos/bad.avi", put["VersionId"]), "raw", "videos/bad.avi",
                         put["VersionId"])
    sagemaker = FakeSageMaker({ingest.job_name(video, config): {"ProcessingJobStatus": "Failed",
                                                                "FailureReason": "not a video: codec"}})
    assert ingest.settle(s3, sagemaker, [video], config).summary()["quarantined"] == {
        video.video_id: "not a video: codec"}
    assert s3.get_object(Bucket="raw", Key=f"held/{video.video_id}.avi")["Body"].read() == b"junk"
    assert "Contents" not in s3.list_objects_v2(Bucket="raw", Prefix="quarantine/")


def test_settle_counts_as_extracted_only_the_jobs_planned_in_this_run(s3):
    """A duplicate message of a video extracted by an earlier run is already done: no new frames, no Asset event."""
    put = s3.put_object(Bucket="raw", Key="videos/again.mp4", Body=b"again")
    video = ingest.Video(video_id_for("raw", "videos/again.mp4", put["VersionId"]), "raw", "videos/again.mp4",
                         put["VersionId"])
    manifest = {"video_id": video.video_id, "extraction": {"fps": 5.0, "jpeg_quality": 90, "max_side": 1280}}
    s3.put_object(Bucket=CONFIG.frames_bucket, Key=f"frames/{video.video_id}/frames.json",
                  Body=json.dumps(manifest).encode())
    name = ingest.job_name(video, CONFIG)
    sagemaker = FakeSageMaker({name: {"ProcessingJobStatus": "Completed"}})
    assert ingest.settle(s3, sagemaker, [video], CONFIG, planned=set()).already_done == [video]
    assert ingest.settle(s3, sagemaker, [video], CONFIG, planned={"frames-other"}).extracted == []
    assert ingest.settle(s3, sagemaker, [video], CONFIG, planned={name}).extracted == [video]
    assert ingest.settle(s3, sagemaker, [video], CONFIG).extracted == [video]  # no plan given: any job counts
    assert ingest.settle(s3, FakeSageMaker({}), [video], CONFIG, planned={name}).already_done == [video]
