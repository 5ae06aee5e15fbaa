"""The local SageMaker's pieces on their own: request validation, tuning search spaces, Dockerfiles, metrics."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from local_aws.sagemaker.backend import tuning_candidates
from local_aws.sagemaker.containers import parse_dockerfile
from local_aws.sagemaker.exceptions import ValidationException
from local_aws.sagemaker.runners import MetricCollector, local_path, training_environment
from local_aws.sagemaker.validation import service_model, validate
from local_aws.settings import REPO_ROOT


def op(name: str):
    return service_model().operation_model(name)


def test_a_valid_request_passes():
    validate(op("DescribeTrainingJob"), {"TrainingJobName": "job-1"})


def test_every_violation_is_reported_with_its_member_path():
    request = {"EndpointConfigName": "x" * 64,
               "ProductionVariants": [{"VariantName": "v", "ModelName": "m", "InstanceType": "ml.nope"}]}
    with pytest.raises(ValidationException) as info:
        validate(op("CreateEndpointConfig"), request)
    message = info.value.message
    assert message.startswith("3 validation errors detected:")  # length, pattern and enum
    assert "at 'endpointConfigName' failed to satisfy constraint: Member must have length less than or equal " \
           "to 63" in message
    assert "Value 'ml.nope' at 'productionVariants.1.member.instanceType' failed to satisfy constraint: Member " \
           "must satisfy enum value set" in message


def test_types_and_ranges_are_checked():
    with pytest.raises(ValidationException, match="'maxResults' failed to satisfy constraint: Member must have "
                                                  "value less than or equal to 100"):
        validate(op("ListTrainingJobs"), {"MaxResults": 1000})
    with pytest.raises(ValidationException, match="Member must be an integer"):
        validate(op("ListTrainingJobs"), {"MaxResults": "ten"})


@given(st.from_regex(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,40}", fullmatch=True).filter(lambda s: len(s) <= 63))
def test_any_name_the_pattern_allows_is_accepted(name):
    validate(op("DescribeTrainingJob"), {"TrainingJobName": name})


@given(st.text(min_size=1, max_size=63).filter(lambda s: not s[0].isalnum() or "_" in s or " " in s))
def test_names_the_pattern_refuses_are_rejected(name):
    with pytest.raises(ValidationException, match="trainingJobName"):
        validate(op("DescribeTrainingJob"), {"TrainingJobName": name})


def _config(strategy: str, **ranges) -> dict:
    return {"Strategy": strategy, "ResourceLimits": {"MaxNumberOfTrainingJobs": 5, "MaxParallelTrainingJobs": 1},
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "m"}, "ParameterRanges": ranges}


def test_grid_search_is_the_full_product():
    grid = tuning_candidates(_config("Grid", CategoricalParameterRanges=[{"Name": "a", "Values": ["1", "2"]}],
                                     IntegerParameterRanges=[{"Name": "b", "MinValue": "3", "MaxValue": "5"}]))
    assert len(grid) == 6 and {"b": "3", "a": "1"} in grid


@given(st.floats(0.0001, 1.0), st.floats(1.0, 10.0), st.integers(1, 50), st.integers(51, 100))
def test_random_search_stays_inside_the_ranges(low, high, int_low, int_high):
    draws = tuning_candidates(_config(
        "Random",
        ContinuousParameterRanges=[{"Name": "lr", "MinValue": str(low), "MaxValue": str(high),
                                    "ScalingType": "Logarithmic"}],
        IntegerParameterRanges=[{"Name": "epochs", "MinValue": str(int_low), "MaxValue": str(int_high)}]))
    assert len(draws) == 5
    for draw in draws:
        assert low * 0.999999 <= float(draw["lr"]) <= high * 1.000001
        assert int_low <= int(draw["epochs"]) <= int_high


def test_dockerfile_entrypoint_runs_from_the_container_folder():
    image = parse_dockerfile("test/toy", REPO_ROOT / "tests" / "containers" / "toy")
    command = image.command(None, ["train"])
    assert command[1] == str(REPO_ROOT / "tests" / "containers" / "toy" / "entrypoint.py")
    assert command[-1] == "train" and image.env == {"TOY_GREETING": "hello"}


def test_contract_paths_map_under_the_job_root(tmp_path):
    assert local_path(tmp_path, "/opt/ml/processing/input/video") == tmp_path / "processing/input/video"
    env = training_environment(tmp_path, "job", {"TrainingJobArn": "arn", "HyperParameters": {
        "learning-rate": "0.1", "classes": '["a", "b"]'}}, ["train", "val"], tmp_path / "checkpoints")
    assert env["SM_CHANNEL_TRAIN"] == str(tmp_path / "input/data/train")
    assert env["SM_HP_LEARNING-RATE"] == "0.1" and env["SM_CHANNELS"] == '["train", "val"]'
    assert env["SM_HPS"] == '{"learning-rate": 0.1, "classes": ["a", "b"]}'


def test_metric_definitions_keep_the_last_value():
    collector = MetricCollector([{"Name": "loss", "Regex": r"loss=([0-9.]+)"},
                                 {"Name": "map", "Regex": r"mAP: ([0-9.]+)"}])
    for line in ("epoch 1 loss=0.9", "epoch 2 loss=0.5 mAP: 0.31", "no metric here", "epoch 3 loss=0.25"):
        collector.feed(line)
    assert {m["MetricName"]: m["Value"] for m in collector.final()} == {"loss": 0.25, "map": 0.31}


def test_the_concurrent_job_quota_is_resource_limit_exceeded(tmp_path, monkeypatch):
    from local_aws.sagemaker.backend import SageMakerBackend
    from local_aws.sagemaker.exceptions import ResourceLimitExceeded
    from local_aws.settings import load_settings

    monkeypatch.setenv("LOCAL_SAGEMAKER_MAX_JOBS", "0")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = load_settings(home=tmp_path, base_port=1)
    backend = SageMakerBackend(settings)
    backend.registry.register("test/toy", REPO_ROOT / "tests" / "containers" / "toy")
    request = {"TrainingJobName": "t", "RoleArn": "arn:aws:iam::123456789012:role/r",
               "AlgorithmSpecification": {"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/test/toy",
                                          "TrainingInputMode": "File"},
               "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
               "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5}}
    with pytest.raises(ResourceLimitExceeded, match=r"'ml\.m5\.large for training job usage' is 0 Instances"):
        backend.dispatch("CreateTrainingJob", request)
    with pytest.raises(ValidationException, match="Requested resource not found"):
        backend.dispatch("DescribeTrainingJob", {"TrainingJobName": "t"})  # nothing was created


@pytest.mark.parametrize(("operation", "service", "opt_in"), [
    ("CreateLabelingJob", "Amazon SageMaker Ground Truth", "ground_truth"),
    ("CreateMonitoringSchedule", "Amazon SageMaker Model Monitor", "model_monitor"),
])
def test_an_account_opened_today_is_refused_the_closed_services(tmp_path, monkeypatch, operation, service, opt_in):
    from local_aws.sagemaker.backend import SageMakerBackend
    from local_aws.sagemaker.exceptions import AccessDeniedException
    from local_aws.settings import load_settings

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("LOCAL_SAGEMAKER_OPT_INS", raising=False)
    backend = SageMakerBackend(load_settings(home=tmp_path, base_port=1))
    with pytest.raises(AccessDeniedException, match=f"{service} is no longer open to new customers") as caught:
        backend.dispatch(operation, {})
    assert caught.value.body()["__type"] == "AccessDeniedException" and operation in caught.value.message
    assert backend.resources.store is not None and not backend.dispatch(
        "ListLabelingJobs" if opt_in == "ground_truth" else "ListMonitoringSchedules", {}).get(
        "LabelingJobSummaryList" if opt_in == "ground_truth" else "MonitoringScheduleSummaries")
    # An existing customer (the setting) gets past the gate to the operation itself.
    monkeypatch.setenv("LOCAL_SAGEMAKER_OPT_INS", f" {opt_in} ")
    with pytest.raises(KeyError):
        backend.dispatch(operation, {})
    monkeypatch.setenv("LOCAL_SAGEMAKER_OPT_INS", "mechanical_turk")
    with pytest.raises(ValueError, match="unknown service"):
        backend.dispatch(operation, {})


def test_throttling_is_a_token_bucket_per_operation():
    from local_aws.sagemaker.server import RateLimiter

    limiter = RateLimiter(rate=2.0, burst=2.0)
    assert [limiter.allow("DescribeTrainingJob", now=0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("ListTrainingJobs", now=0.0)  # another operation has its own bucket
    assert limiter.allow("DescribeTrainingJob", now=0.5)  # one token back after 1 / rate seconds
    assert RateLimiter(rate=0).allow("anything")


def test_throttling_exception_has_aws_shape():
    from local_aws.sagemaker.exceptions import ThrottlingException

    error = ThrottlingException("Rate exceeded")
    assert error.status == 400 and error.body() == {"__type": "ThrottlingException", "message": "Rate exceeded"}


def _manifest(s3, key: str, body) -> str:
    s3.put_object(Bucket="frames", Key=key, Body=body if isinstance(body, bytes) else json.dumps(body).encode())
    return f"s3://frames/{key}"


def test_a_manifest_input_downloads_each_listed_object_at_its_relative_key(in_process_aws, tmp_path):
    import boto3

    from local_aws.sagemaker.runners import download_manifest

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="frames")
    for key in ("frames/v1/000000.jpg", "frames/v1/000001.jpg", "frames/v2/000000.jpg"):
        s3.put_object(Bucket="frames", Key=key, Body=key.encode())
    uri = _manifest(s3, "manifests/m.json", [{"prefix": "s3://frames/frames/"}, "v1/000001.jpg", "v2/000000.jpg"])
    assert download_manifest(s3, uri, tmp_path / "in") == 2
    assert sorted(p.relative_to(tmp_path / "in").as_posix() for p in (tmp_path / "in").rglob("*.jpg")) == [
        "v1/000001.jpg", "v2/000000.jpg"]  # only what the manifest lists
    assert (tmp_path / "in" / "v2" / "000000.jpg").read_bytes() == b"frames/v2/000000.jpg"


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", r"^the manifest s3://frames/bad\.json is not JSON \(.+\): expected a JSON array whose first "
                  r"element is \{\"prefix\": \"s3://bucket/prefix/\"\} followed by object keys relative to that "
                  r"prefix$"),
    ({"prefix": "s3://frames/frames/"}, r"^the manifest s3://frames/bad\.json does not start with a prefix: "
                                        r"expected a JSON array"),
    (["v1/000000.jpg"], r"does not start with a prefix"),
    ([{"prefix": "frames/"}, "v1/000000.jpg"], r"does not start with a prefix"),
    ([{"prefix": "s3://frames/frames/"}, "v1/000000.jpg", 7], r"^the manifest s3://frames/bad\.json: element 3 \(7\) "
                                                              r"is not an object key relative to the prefix"),
    ([{"prefix": "s3://frames/frames/"}, "../secret"], r"element 2 \(\"\.\./secret\"\) is not an object key"),
    ([{"prefix": "s3://frames/frames/"}, "v1/000000.jpg", "v9/000000.jpg"],
     r"^the manifest s3://frames/bad\.json names s3://frames/frames/v9/000000\.jpg, which cannot be downloaded "
     r"\(NoSuchKey\)$"),
])
def test_a_bad_manifest_is_refused_with_the_reason(in_process_aws, tmp_path, body, reason):
    import boto3

    from local_aws.sagemaker.runners import InputError, download_manifest

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="frames")
    s3.put_object(Bucket="frames", Key="frames/v1/000000.jpg", Body=b"jpg")
    uri = _manifest(s3, "bad.json", body)
    with pytest.raises(InputError, match=reason):
        download_manifest(s3, uri, tmp_path / "in")
    with pytest.raises(InputError, match=r"^cannot read the manifest s3://frames/nothing\.json: NoSuchKey$"):
        download_manifest(s3, "s3://frames/nothing.json", tmp_path / "in")


def test_a_processing_job_with_a_manifest_input_runs_or_fails_with_the_reason(in_process_aws, tmp_path):
    import boto3

    from local_aws.sagemaker.backend import SageMakerBackend
    from local_aws.settings import load_settings

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="frames")
    s3.put_object(Bucket="frames", Key="frames/v1/a.txt", Body=b"one")
    s3.put_object(Bucket="frames", Key="frames/v1/b.txt", Body=b"two")
    backend = SageMakerBackend(load_settings(home=tmp_path, base_port=1))
    backend.registry.register("test/toy", REPO_ROOT / "tests" / "containers" / "toy")

    def job(name: str, keys: list[str]) -> dict:
        uri = _manifest(s3, f"manifests/{name}.json", [{"prefix": "s3://frames/frames/"}, *keys])
        backend.dispatch("CreateProcessingJob", {
            "ProcessingJobName": name, "RoleArn": "arn:aws:iam::123456789012:role/r",
            "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/test/toy",
                                 "ContainerArguments": ["process", "--input", "/opt/ml/processing/input/frames",
                                                        "--output", "/opt/ml/processing/output"]},
            "ProcessingInputs": [{"InputName": "frames", "S3Input": {
                "S3Uri": uri, "LocalPath": "/opt/ml/processing/input/frames", "S3DataType": "ManifestFile",
                "S3InputMode": "File"}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
                "S3Uri": f"s3://frames/out/{name}", "LocalPath": "/opt/ml/processing/output",
                "S3UploadMode": "EndOfJob"}}]},
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                      "VolumeSizeInGB": 5}}})
        deadline = time.monotonic() + 60
        while (described := backend.dispatch("DescribeProcessingJob", {"ProcessingJobName": name}))[
                "ProcessingJobStatus"] == "InProgress" and time.monotonic() < deadline:
            time.sleep(0.1)
        return described

    try:
        done = job("good", ["v1/b.txt"])
        assert done["ProcessingJobStatus"] == "Completed", done.get("FailureReason")
        listed = s3.list_objects_v2(Bucket="frames", Prefix="out/good/")["Contents"]
        assert [o["Key"] for o in listed] == ["out/good/b.txt.out"]
        failed = job("missing", ["v1/a.txt", "v1/gone.txt"])
        assert failed["ProcessingJobStatus"] == "Failed"
        assert failed["FailureReason"] == (
            "ClientError: ProcessingInput frames: the manifest s3://frames/manifests/missing.json names "
            "s3://frames/frames/v1/gone.txt, which cannot be downloaded (NoSuchKey)")
        assert "ProcessingEndTime" in failed
    finally:
        backend.shutdown()
