"""The local SageMaker as boto3 and the SageMaker SDK see it: validation, errors, state, jobs, endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local_aws import stack
from tests.conftest import ENDPOINT_WAITER, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SDK_PYTHON = REPO / ".venv-sagemaker-sdk" / "bin" / "python"  # make sagemaker-sdk
SDK_CLIENT = REPO / "tests" / "sdk" / "sagemaker_sdk_client.py"
ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"  # infra/platform.yaml (make up deploys it)
BUCKET = "surgical-models"
RESOURCES = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5}
MAX_RUNTIME_S = 120  # the jobs' StoppingCondition: the local SageMaker stops a job's container that runs longer
JOB_WAIT_S = MAX_RUNTIME_S + 120  # a job has ended (at MAX_RUNTIME_S at the latest) before a test stops waiting


@pytest.fixture(scope="module")
def sm(aws):
    return aws("sagemaker")


@pytest.fixture(scope="module")
def data(aws) -> str:
    prefix = f"s3://{BUCKET}/local-sm-{uuid.uuid4().hex[:6]}"
    for name, text in (("a.txt", "1 2 3"), ("b.txt", "4 5 6")):
        aws("s3").put_object(Bucket=BUCKET, Key=f"{prefix[len('s3://' + BUCKET) + 1:]}/in/{name}", Body=text.encode())
    return prefix


def training_request(name: str, image: str, data: str, **hyperparameters: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name, "RoleArn": ROLE, "HyperParameters": {"epochs": "2", **hyperparameters},
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File",
                                   "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"{data}/in"}}}],
        "OutputDataConfig": {"S3OutputPath": f"{data}/models"}, "ResourceConfig": RESOURCES,
        "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME_S},
        "CheckpointConfig": {"S3Uri": f"{data}/checkpoints/{name}"},
    }


def wait_job(sm, name: str, timeout: float = JOB_WAIT_S) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job = sm.describe_training_job(TrainingJobName=name)
        return job if job["TrainingJobStatus"] not in ("InProgress", "Stopping") else None

    return wait_for(ended, timeout, interval=0.3, message=f"{name} still running")


def wait_training(sm, name: str) -> None:
    """Until the job's container is starting or running (SecondaryStatus Training), so that what the test does next
    meets a running job (not one still queued or downloading)."""
    def training() -> bool:
        job = sm.describe_training_job(TrainingJobName=name)
        assert job["TrainingJobStatus"] == "InProgress", job  # a hanging job ends only when it is stopped
        return job["SecondaryStatus"] == "Training"

    wait_for(training, JOB_WAIT_S, interval=0.3, message=f"{name} never reached SecondaryStatus Training")


def error_of(call, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"], info.value.response["Error"]["Message"]


# -- wire protocol --------------------------------------------------------------------------------------------------
def test_missing_required_member_bad_enum_and_bad_name_are_named(aws, toy_image, data):
    request = training_request("bad_name!", toy_image, data)
    del request["RoleArn"]
    request["AlgorithmSpecification"]["TrainingInputMode"] = "Streaming"
    # A client that skips botocore's own checks, to see what the server says.
    unchecked = aws("sagemaker", parameter_validation=False)
    code, message = error_of(unchecked.create_training_job, **request)
    assert code == "ValidationException"
    assert message.startswith("3 validation errors detected:")
    assert "Value null at 'roleArn' failed to satisfy constraint: Member must not be null" in message
    assert "at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must satisfy " \
           "enum value set" in message
    assert "Value 'bad_name!' at 'trainingJobName' failed to satisfy constraint: Member must satisfy regular " \
           "expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" in message


def test_documented_rules_are_enforced_with_the_stacks_kms_keys(sm, aws, toy_image, data):
    # The stack's data key (infra/foundation.yaml, alias/surgical-mlops), by ARN as the pipeline names it.
    key_arn = aws("kms").describe_key(KeyId="alias/surgical-mlops")["KeyMetadata"]["Arn"]
    request = training_request(f"rules-{uuid.uuid4().hex[:6]}", toy_image, data)
    request["ResourceConfig"] = {**RESOURCES, "InstanceType": "ml.g4dn.xlarge", "VolumeKmsKeyId": key_arn}
    code, message = error_of(sm.create_training_job, **request)
    assert code == "ValidationException" and "resourceConfig.volumeKmsKeyId: KMS key is not supported for NVMe " \
                                              "instance storage (ml.g4dn.xlarge has local instance storage)" in message
    missing = key_arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    request["ResourceConfig"] = {**RESOURCES, "VolumeKmsKeyId": missing}
    request["OutputDataConfig"]["KmsKeyId"] = "alias/surgical-mlops"
    code, message = error_of(sm.create_training_job, **request)
    assert (code, message) == ("ValidationException", f"1 validation error detected: resourceConfig.volumeKmsKeyId: "
                               f"KMS key '{missing}' does not exist: kms:DescribeKey finds no such key (or alias) in "
                               "this account and Region.")
    request["ResourceConfig"]["VolumeKmsKeyId"] = key_arn
    sm.create_training_job(**request)
    assert wait_job(sm, request["TrainingJobName"])["TrainingJobStatus"] == "Completed"


def test_describe_of_missing_resources_uses_aws_error_codes(sm):
    assert error_of(sm.describe_training_job, TrainingJobName="nope") == (
        "ValidationException", "Requested resource not found.")
    assert error_of(sm.describe_endpoint, EndpointName="nope")[0] == "ValidationException"
    assert error_of(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName="nope")[0] == \
        "ResourceNotFound"


def test_duplicate_job_name_is_resource_in_use_and_list_paginates(sm, toy_image, data):
    names = [f"dup-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
    for name in names:
        sm.create_training_job(**training_request(name, toy_image, data))
    code, message = error_of(sm.create_training_job, **training_request(names[0], toy_image, data))
    assert code == "ResourceInUse" and "a training job with this name already exists" in message
    seen, token = [], None
    while True:
        page = sm.list_training_jobs(NameContains="dup-", MaxResults=2, **({"NextToken": token} if token else {}))
        seen += [s["TrainingJobName"] for s in page["TrainingJobSummaries"]]
        token = page.get("NextToken")
        if not token:
            break
    assert set(names) <= set(seen) and len(seen) == len(set(seen))
    for name in names:
        assert wait_job(sm, name)["TrainingJobStatus"] == "Completed"


# -- jobs -------------------------------------------------------------------------------------------------------------
def test_training_job_contract_metrics_artifacts_logs_and_tags(sm, aws, toy_image, data):
    name = f"contract-{uuid.uuid4().hex[:6]}"
    arn = sm.create_training_job(**training_request(name, toy_image, data, epochs="3"),
                                 Tags=[{"Key": "dataset_version", "Value": "v1"}])["TrainingJobArn"]
    job = wait_job(sm, name)
    assert job["TrainingJobStatus"] == "Completed"
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert job["FinalMetricDataList"][0]["MetricName"] == "loss"
    assert job["FinalMetricDataList"][0]["Value"] == pytest.approx(0.3333)
    artifacts = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifacts == f"{data}/models/{name}/output/model.tar.gz"
    assert aws("s3").head_object(Bucket=BUCKET, Key=artifacts.split(BUCKET + "/", 1)[1])["ContentLength"] > 0
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "dataset_version", "Value": "v1"}]
    logs = aws("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")
    [stream] = streams["logStreams"]
    assert stream["logStreamName"].startswith(f"{name}/algo-1-")
    lines = [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                        logStreamName=stream["logStreamName"])["events"]]
    assert "epoch=2 loss=0.3333" in lines


def test_stop_training_job_keeps_checkpoints(sm, aws, toy_image, data):
    name = f"stop-{uuid.uuid4().hex[:6]}"
    sm.create_training_job(**training_request(name, toy_image, data, mode="hang"))
    wait_training(sm, name)
    sm.stop_training_job(TrainingJobName=name)
    job = wait_job(sm, name)
    assert job["TrainingJobStatus"] == "Stopped" and job["SecondaryStatus"] == "Stopped"
    _, message = error_of(sm.stop_training_job, TrainingJobName=name)
    assert message == "The request was rejected because the training job is in status Stopped."


def test_state_survives_a_restart_and_running_jobs_fail_with_a_reason(sm, local_stack, toy_image, data):
    done, running = f"survive-{uuid.uuid4().hex[:6]}", f"killed-{uuid.uuid4().hex[:6]}"
    sm.create_training_job(**training_request(done, toy_image, data))
    assert wait_job(sm, done)["TrainingJobStatus"] == "Completed"
    sm.create_training_job(**training_request(running, toy_image, data, mode="hang"))
    wait_training(sm, running)
    stack.restart(local_stack, "sagemaker")
    assert sm.describe_training_job(TrainingJobName=done)["TrainingJobStatus"] == "Completed"
    killed = sm.describe_training_job(TrainingJobName=running)
    assert killed["TrainingJobStatus"] == "Failed"
    assert "restarted while this job was running" in killed["FailureReason"]


# -- endpoints ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_data(sm, toy_image, data) -> str:
    name = f"ep-train-{uuid.uuid4().hex[:6]}"
    sm.create_training_job(**training_request(name, toy_image, data))
    return wait_job(sm, name)["ModelArtifacts"]["S3ModelArtifacts"]


def _endpoint_config(sm, toy_image: str, model_data: str, version: str, **env: str) -> str:
    suffix = uuid.uuid4().hex[:6]
    sm.create_model(ModelName=f"m-{suffix}", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": toy_image, "ModelDataUrl": model_data, "Environment": {"TOY_VERSION": version, **env}})
    sm.create_endpoint_config(
        EndpointConfigName=f"c-{suffix}",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": f"m-{suffix}", "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                           "DestinationS3Uri": f"s3://{BUCKET}/capture-{suffix}",
                           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                           "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}})
    return f"c-{suffix}"


def _wait_in_service(sm, name: str) -> dict[str, Any]:
    # CreateEndpoint and UpdateEndpoint answer with the endpoint Creating/Updating already: no stale InService
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=ENDPOINT_WAITER)
    return sm.describe_endpoint(EndpointName=name)


def test_invocations_never_fail_during_updates_and_a_bad_model_leaves_the_old_serving(sm, aws, toy_image,
                                                                                      model_data):
    runtime = aws("sagemaker-runtime")
    name = f"ep-{uuid.uuid4().hex[:6]}"
    v1 = _endpoint_config(sm, toy_image, model_data, "v1")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=v1)
    assert _wait_in_service(sm, name)["EndpointStatus"] == "InService"

    seen: list[str] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def call_in_a_loop() -> None:
        while not stop.is_set():
            try:
                response = runtime.invoke_endpoint(EndpointName=name, Body=json.dumps({"x": 2}),
                                                   ContentType="application/json")
                seen.append(json.loads(response["Body"].read())["model"])
            except Exception as exc:  # any failed request fails the test
                failures.append(exc)

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    try:
        v2 = _endpoint_config(sm, toy_image, model_data, "v2")
        sm.update_endpoint(EndpointName=name, EndpointConfigName=v2)
        assert _wait_in_service(sm, name)["EndpointConfigName"] == v2
        broken = _endpoint_config(sm, toy_image, model_data, "v3", TOY_MODE="broken")
        sm.update_endpoint(EndpointName=name, EndpointConfigName=broken)
        after = _wait_in_service(sm, name)
        answered = len(seen)  # the failed update has ended: the calls from now on show what serves after it
        wait_for(lambda: len(seen) >= answered + 3 or failures, 60, interval=0.1,
                 message=lambda: f"no calls answered after the failed update (failures: {failures})")
    finally:
        stop.set()
        caller.join()
    assert failures == []
    assert "v1" in seen and "v2" in seen and "v3" not in seen
    assert seen[-1] == "v2"
    assert after["EndpointStatus"] == "InService" and after["EndpointConfigName"] == v2  # old config serving
    assert "did not pass the ping health check" in after["FailureReason"]


def test_model_errors_and_data_capture(sm, aws, toy_image, model_data):
    runtime = aws("sagemaker-runtime")
    name = f"cap-{uuid.uuid4().hex[:6]}"
    config = _endpoint_config(sm, toy_image, model_data, "v1")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    _wait_in_service(sm, name)
    code, message = error_of(runtime.invoke_endpoint, EndpointName=name, Body=b"{}", ContentType="application/json")
    assert code == "ModelError" and "Received client error (400) from primary" in message
    for x in range(3):
        runtime.invoke_endpoint(EndpointName=name, Body=json.dumps({"x": x}), ContentType="application/json")
    sm.delete_endpoint(EndpointName=name)  # flushes the capture buffer
    capture = sm.describe_endpoint_config(EndpointConfigName=config)["DataCaptureConfig"]["DestinationS3Uri"]
    bucket, prefix = capture[5:].split("/", 1)
    keys = [o["Key"] for o in aws("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert keys and all(k.startswith(f"{prefix}/{name}/AllTraffic/") and k.endswith(".jsonl") for k in keys)
    records = [json.loads(line) for k in keys
               for line in aws("s3").get_object(Bucket=bucket, Key=k)["Body"].read().decode().splitlines()]
    assert len(records) == 3
    record = records[0]
    assert record["eventVersion"] == "0" and "eventId" in record["eventMetadata"]
    assert record["captureData"]["endpointInput"]["encoding"] == "JSON"
    assert record["captureData"]["endpointInput"]["mode"] == "INPUT"
    assert json.loads(record["captureData"]["endpointOutput"]["data"])["model"] == "v1"
    assert error_of(sm.describe_endpoint, EndpointName=name)[0] == "ValidationException"


def test_sagemaker_sdk_describes_jobs_and_invokes_endpoints(sm, toy_image, model_data, local_stack):
    """The SageMaker Python SDK (v3, from its own venv: it needs a boto3 newer than MWAA's) finds the stack like any
    AWS client and reads the local SageMaker's answers."""
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    sm.create_endpoint(EndpointName=name, EndpointConfigName=_endpoint_config(sm, toy_image, model_data, "sdk"))
    _wait_in_service(sm, name)
    training = model_data.split("/models/")[1].split("/")[0]
    assert SDK_PYTHON.exists(), f"{SDK_PYTHON} is missing: run 'make setup' (make sagemaker-sdk)"
    result = subprocess.run([str(SDK_PYTHON), str(SDK_CLIENT), training, name], capture_output=True, text=True,
                            timeout=300, env={**os.environ, **local_stack.aws_environment()})
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"training_job_status": "Completed", "body": seen["body"]}
    assert seen["body"]["model"] == "sdk"
