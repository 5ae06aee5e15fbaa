"""Security properties of the tree and of what the pipeline sends to AWS.

1. No secret in the tree: detect-secrets over every file git would commit; the only findings allowed are the
   audited false positives in tests/fixtures/secrets.baseline (matched by file, type and secret hash, not line).
2. Every SageMaker job request the project builds, with each environment's preset, is one the local SageMaker (and
   so AWS) accepts (its shape validation and documented rules), and encrypts what the job writes: for each structure
   of the request that has a KMS member (volume key, output key, data capture key...) the member is set, by key ARN,
   except a volume key on an instance type with local storage (the hardware encrypts it and SageMaker refuses a key
   there) and the endpoint config's key when every variant has local storage (it would encrypt nothing); network
   isolation / inter-container encryption are on where the request has them. Driven by botocore's model of each
   operation, so a new builder needs one line in JOB_REQUESTS.
3. A source file name never reaches an object key or a log line: only the opaque video id does.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest

from include import deploy, ingest, monitoring, training
from include.config import ENVIRONMENTS, build_config
from include.instances import has_local_storage
from include.lambdas import s3_to_sqs
from include.lambdas.quarantine import quarantine_object
from include.tasks import labeling as labeling_tasks
from local_aws.settings import REPO_ROOT
from tests.sagemaker_api import TEST_KEY_ARN, problems

SECRETS_BASELINE = REPO_ROOT / "tests" / "fixtures" / "secrets.baseline"
# Patient-like source file names: a name, a birth date, a medical record number, a theatre.
PATIENT_KEYS = [
    "videos/Doe, Jane 1970-01-01/theatre 3.mp4",
    "videos/MRN-00123456_SMITH_John_19800214_laparoscopy.avi",
    "videos/patient=García Lorca, Ana/2026-11-25 cholecystectomy.MP4",
]


def _identifiers(key: str) -> list[str]:
    """The parts of a source key that could identify a patient (every word of 3+ characters of its name)."""
    stem = key.removeprefix("videos/").rsplit(".", 1)[0]
    words = [w for w in __import__("re").split(r"[^0-9A-Za-zÀ-ÿ]+", stem) if len(w) >= 3]
    return [stem, *words]


# --- 1. secrets ---------------------------------------------------------------------------------------------------

def _tree_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    baseline = SECRETS_BASELINE.relative_to(REPO_ROOT).as_posix()  # hashes of audited findings, not secrets
    return sorted(f for f in listed if f and f != baseline and (REPO_ROOT / f).is_file())


def test_no_secrets_in_the_tree():
    from detect_secrets import SecretsCollection
    from detect_secrets.core import baseline
    from detect_secrets.settings import transient_settings

    audited = baseline.load_from_file(str(SECRETS_BASELINE))
    allowed = {(f, s["type"], s["hashed_secret"]) for f, found in audited["results"].items() for s in found
               if s.get("is_secret") is False}
    with transient_settings({"plugins_used": audited["plugins_used"], "filters_used": audited["filters_used"]}):
        secrets = SecretsCollection(root=str(REPO_ROOT))
        for path in _tree_files():
            secrets.scan_file(path)
    found = [(f, s.type, s.secret_hash, s.line_number) for f, s in secrets]
    new = [f"{f}:{line} {kind}" for f, kind, hashed, line in found if (f, kind, hashed) not in allowed]
    assert not new, ("possible secrets (if one is a false positive: detect-secrets scan --baseline "
                     f"{SECRETS_BASELINE.relative_to(REPO_ROOT)}, then detect-secrets audit it):\n" + "\n".join(new))


def test_secrets_scanner_catches_a_planted_key(tmp_path):
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    planted = tmp_path / "settings.py"
    # Assembled at run time so that this file itself holds no key-shaped string.
    planted.write_text(f'aws_access_key_id = "{"AKIA" + "IOSFODNN7" + "EXAMPLQ"}"\n')
    with default_settings():
        secrets = SecretsCollection(root=str(tmp_path))
        secrets.scan_file("settings.py")
    assert {s.type for _, s in secrets} >= {"AWS Access Key"}


# --- 2. SageMaker job requests ------------------------------------------------------------------------------------

_VIDEO = ingest.Video("0f3c2a9b8e7d6c5b4a39", "surgical-videos-raw", "videos/case.mp4", "v1", 1024)

# operation -> builder of a request as the project builds it (one config per environment preset).
# To cover a new builder, add a line, e.g.
#   ("CreateTrainingJob", lambda config: build_training_request(config, ...)),
_CHAMPION = {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/surgical-detector/3",
             "ModelPackageVersion": 3, "InferenceSpecification": {"Containers": [
                 {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/inference:latest",
                  "ModelDataUrl": "s3://surgical-models/training/j/output/model.tar.gz"}]}}
JOB_REQUESTS: list[tuple[str, Callable[[Any], dict[str, Any]]]] = [
    ("CreateProcessingJob", lambda config: ingest.processing_request(_VIDEO, config, "scheduled__2026-11-25")),
    ("CreateLabelingJob", lambda config: labeling_tasks._request(
        config, "label-0123456789abcdef0123", f"s3://{config.annotations_bucket}/labeling/x/input.manifest",
        config.label_attribute, False, "manual__1")),
    ("CreateLabelingJob", lambda config: labeling_tasks._request(
        config, "label-0123456789abcdef0123-review", f"s3://{config.annotations_bucket}/labeling/x/review.manifest",
        f"{config.label_attribute}-reviewed", True, "manual__1")),
    ("CreateTrainingJob", lambda config: training.training_job_request(
        config, "0123456789abcdef", training.hyperparameters(config, {}), "manual__1", "abc123")),
    ("CreateHyperParameterTuningJob", lambda config: training.tuning_job_request(
        config, "0123456789abcdef", training.hyperparameters(config, {}), "manual__1", "abc123")),
    ("CreateProcessingJob", lambda config: training.champion_evaluation_request(
        config, _CHAMPION, "0123456789abcdef", "manual__1")),
    ("CreateModel", lambda config: deploy.model_request(config, _CHAMPION, "surgical-detector-v3-0a1b2c3d", "m")),
    ("CreateEndpointConfig", lambda config: deploy.endpoint_config_request(
        config, _CHAMPION, "surgical-detector-v3-0a1b2c3d", "m")),
    ("CreateProcessingJob", lambda config: monitoring.baseline_request(
        config, "0123456789abcdef", "s3://surgical-models/evaluations/j/evaluation.json", "m")),
    ("CreateMonitoringSchedule", lambda config: monitoring.schedule_request(config, "0123456789abcdef")),
    ("CreateProcessingJob", lambda config: monitoring.processing_monitor_request(
        config, "0123456789abcdef", datetime(2026, 11, 26, 9, tzinfo=UTC), datetime(2026, 11, 26, 10, tzinfo=UTC),
        ["s3://surgical-models/data-capture/surgical-detector/AllTraffic/2026/11/26/09/"], "m")),
]
# Members that must be set wherever their structure is in the request.
KMS_MEMBERS = {"KmsKeyId", "VolumeKmsKeyId", "OutputKmsKeyId"}
ISOLATION_MEMBERS = {"EnableNetworkIsolation", "EnableInterContainerTrafficEncryption"}


def _instance_types(value: dict[str, Any]) -> list[str]:
    """The instance types a cluster structure asks for (its own, and its instance groups' or configs')."""
    groups = [*value.get("InstanceGroups", []), *value.get("InstanceConfigs", [])]
    return [t for t in (value.get("InstanceType"), *(g.get("InstanceType") for g in groups)) if t]


def _key_not_wanted(shape: Any, name: str, value: dict[str, Any]) -> bool:
    """A KMS member that is right to leave out: a volume key where every instance has local (NVMe) storage, which
    SageMaker refuses; the endpoint config's key where every variant has local storage, where it encrypts nothing."""
    if name == "VolumeKmsKeyId":
        types = _instance_types(value)
        return bool(types) and all(has_local_storage(t) for t in types)
    if name == "KmsKeyId" and shape.name == "CreateEndpointConfigInput":
        variants = value.get("ProductionVariants", [])
        return bool(variants) and all(has_local_storage(v.get("InstanceType", "")) for v in variants)
    return False


def _missing_protections(shape: Any, value: Any, path: str) -> list[str]:
    """Walk the request along its botocore input shape; list each KMS/isolation member left unset that should be."""
    missing = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in KMS_MEMBERS and not value.get(name) and not _key_not_wanted(shape, name, value):
                missing.append(f"{path}.{name}")
            if name in ISOLATION_MEMBERS and value.get(name) is not True:
                missing.append(f"{path}.{name}")
            if name in value:
                missing += _missing_protections(member, value[name], f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            missing += _missing_protections(shape.member, item, f"{path}[{index}]")
    return missing


def _kms_values(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for k, item in value.items() for v in ([item] if k in KMS_MEMBERS else _kms_values(item))]
    if isinstance(value, list):
        return [v for item in value for v in _kms_values(item)]
    return []


@pytest.fixture(scope="module")
def sagemaker_model():
    return botocore.session.get_session().get_service_model("sagemaker")


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize(("operation", "builder"), JOB_REQUESTS, ids=[f"{op}-{i}" for i, (op, _) in
                                                                       enumerate(JOB_REQUESTS)])
def test_job_requests_encrypt_and_isolate(sagemaker_model, operation, builder, env):
    # The key as load_config resolves it from the alias inside a task (tests/unit/test_config.py).
    request = builder(build_config(env, {"kms_key_arn": TEST_KEY_ARN}))
    # The local SageMaker accepts it (shapes with lengths, patterns and enums, then the documented rules), so the
    # walk below sees real members and the keys are where SageMaker takes them.
    assert problems(operation, request) is None, problems(operation, request)
    shape = sagemaker_model.operation_model(operation).input_shape
    assert _missing_protections(shape, request, operation) == []
    assert set(_kms_values(request)) <= {TEST_KEY_ARN}, "KMS members name the key by ARN, never by alias"


def test_the_walk_catches_an_unencrypted_request(sagemaker_model):
    request = ingest.processing_request(_VIDEO, build_config("prod", {"kms_key_arn": None}))
    request["NetworkConfig"]["EnableNetworkIsolation"] = False
    shape = sagemaker_model.operation_model("CreateProcessingJob").input_shape
    missing = _missing_protections(shape, request, "CreateProcessingJob")
    assert {"CreateProcessingJob.ProcessingOutputConfig.KmsKeyId",
            "CreateProcessingJob.ProcessingResources.ClusterConfig.VolumeKmsKeyId",
            "CreateProcessingJob.NetworkConfig.EnableNetworkIsolation"} <= set(missing)


def test_the_walk_excuses_only_keys_that_local_storage_refuses(sagemaker_model):
    # prod trains on ml.g5 and serves on ml.g4dn (local NVMe storage): no volume key, no endpoint config key, and
    # that is right; an output key left out there is still caught, and so is a volume key left out on EBS.
    config = build_config("prod", {"kms_key_arn": TEST_KEY_ARN})
    job = training.training_job_request(config, "0123456789abcdef", training.hyperparameters(config, {}), "m", "c")
    shape = sagemaker_model.operation_model("CreateTrainingJob").input_shape
    assert "VolumeKmsKeyId" not in job["ResourceConfig"] and _missing_protections(shape, job, "T") == []
    del job["OutputDataConfig"]["KmsKeyId"]
    job["ResourceConfig"]["InstanceType"] = "ml.c5.xlarge"
    assert set(_missing_protections(shape, job, "T")) == {"T.OutputDataConfig.KmsKeyId",
                                                         "T.ResourceConfig.VolumeKmsKeyId"}
    endpoint_config = deploy.endpoint_config_request(config, _CHAMPION, "surgical-detector-v3-0a1b2c3d", "m")
    shape = sagemaker_model.operation_model("CreateEndpointConfig").input_shape
    assert "KmsKeyId" not in endpoint_config and _missing_protections(shape, endpoint_config, "E") == []
    endpoint_config["ProductionVariants"].append({**endpoint_config["ProductionVariants"][0], "VariantName": "Cpu",
                                                  "InstanceType": "ml.m5.large"})
    assert _missing_protections(shape, endpoint_config, "E") == ["E.KmsKeyId"]


# --- 3. no patient identifier in object keys or log lines ---------------------------------------------------------

def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("key", PATIENT_KEYS)
def test_keys_uris_names_and_tags_use_only_the_opaque_video_id(key):
    config = build_config("prod")
    video_id = s3_to_sqs.video_id_for(config.raw_bucket, key, "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY")
    video = ingest.Video(video_id, config.raw_bucket, key, "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", 10)
    request = ingest.processing_request(video, config, "manual__1")
    written = [ingest.staging_key(video), ingest.frames_prefix(video), ingest.job_name(video, config),
               request["ProcessingJobName"], *request["ProcessingInputs"][0]["S3Input"]["S3Uri"].split("/"),
               request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"],
               *_strings(request["Tags"])]
    for text in written:
        for identifier in _identifiers(key):
            assert identifier.lower() not in text.lower(), (identifier, text)


@pytest.fixture
def ingest_aws(in_process_aws, monkeypatch):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="surgical-videos-raw")
    s3.put_bucket_versioning(Bucket="surgical-videos-raw", VersioningConfiguration={"Status": "Enabled"})
    queue = boto3.client("sqs").create_queue(QueueName="video-processing-queue")["QueueUrl"]
    boto3.client("dynamodb").create_table(
        TableName="video-ingest-idempotency", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    monkeypatch.setenv("QUEUE_URL", queue)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "video-ingest-idempotency")
    s3_to_sqs._client.cache_clear()
    yield s3
    s3_to_sqs._client.cache_clear()


def _event(key: str, version: str, size: int) -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-11-25T00:00:00.000Z",
                         "s3": {"bucket": {"name": "surgical-videos-raw"},
                                "object": {"key": quote_plus(key), "size": size, "versionId": version,
                                           "eTag": "e", "sequencer": "01"}}}]}


@pytest.mark.parametrize("key", PATIENT_KEYS)
def test_ingest_and_quarantine_never_log_or_store_the_file_name(ingest_aws, caplog, key):
    s3 = ingest_aws
    caplog.set_level(logging.INFO)
    queued_version = s3.put_object(Bucket="surgical-videos-raw", Key=key, Body=b"video")["VersionId"]
    s3_to_sqs.handler(_event(key, queued_version, 5), None)
    s3_to_sqs.handler(_event(key, queued_version, 5), None)  # a redelivery: logged as a duplicate
    empty = key.rsplit(".", 1)[0] + " (2)." + key.rsplit(".", 1)[1]
    empty_version = s3.put_object(Bucket="surgical-videos-raw", Key=empty, Body=b"")["VersionId"]
    s3_to_sqs.handler(_event(empty, empty_version, 0), None)  # zero bytes: quarantined by the Lambda
    video_id = s3_to_sqs.video_id_for("surgical-videos-raw", key, queued_version)
    quarantine_object(s3, bucket="surgical-videos-raw", key=key, version_id=queued_version, video_id=video_id,
                      reason="frame extraction failed: moov atom not found", stage="extract")
    keys = [v["Key"] for v in s3.list_object_versions(Bucket="surgical-videos-raw").get("Versions", [])]
    stored = [k for k in keys if not k.startswith("videos/")]
    assert stored and all(k.startswith("quarantine/") for k in stored)
    # The project's log lines (the SDKs' own debug logging is off in Lambda and on MWAA).
    lines = [record.getMessage() for record in caplog.records
             if not record.name.startswith(("botocore", "boto3", "urllib3", "moto"))]
    assert any(video_id in line for line in lines)
    for identifier in _identifiers(key):
        for text in stored + lines:
            assert identifier.lower() not in text.lower(), (identifier, text)


def test_quarantine_reason_document_keeps_the_source_for_the_data_owner(ingest_aws):
    # The key is kept inside the (encrypted, private) reason document, where the data owner needs it, not in names.
    s3 = ingest_aws
    version = s3.put_object(Bucket="surgical-videos-raw", Key=PATIENT_KEYS[0], Body=b"x")["VersionId"]
    target = quarantine_object(s3, bucket="surgical-videos-raw", key=PATIENT_KEYS[0], version_id=version,
                               video_id="0f3c2a9b8e7d6c5b4a39", reason="r", stage="extract")
    document = json.loads(s3.get_object(Bucket="surgical-videos-raw",
                                        Key="quarantine/0f3c2a9b8e7d6c5b4a39.reason.json")["Body"].read())
    assert target == "quarantine/0f3c2a9b8e7d6c5b4a39.mp4" and document["source"]["key"] == PATIENT_KEYS[0]


def test_video_ids_are_opaque():
    ids = {s3_to_sqs.video_id_for("b", key, "v") for key in PATIENT_KEYS}
    assert len(ids) == len(PATIENT_KEYS)
    assert all(len(i) == 20 and set(i) <= set("0123456789abcdef") for i in ids)


def test_logging_modules_log_video_ids_not_keys():
    # Log calls in the ingest path name the video by id; a key in a log call would be a leak.
    for path in [REPO_ROOT / "include" / "ingest.py", REPO_ROOT / "include" / "tasks" / "ingest.py",
                 REPO_ROOT / "include" / "lambdas" / "s3_to_sqs.py"]:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if "log" in line and ("(" in line) and ("key" in line.split("log", 1)[1]):
                assert "video_keys" not in line and ".key" not in line and "[\"key\"]" not in line, \
                    f"{path.name}:{number}: {line.strip()}"
