"""LOCAL_AWS_IAM=enforce: the local stack refuses what the signer's IAM policies do not allow, as AWS does.

A private stack started with enforcement on (its own home and ports); narrow principals are created through IAM and
denied what their policies leave out (S3, SQS, SageMaker, iam:PassRole), with AWS's error codes and messages naming
the action; the harness's admin is allowed; jobs and Lambdas run with their role's credentials. The same narrow
principal on a stack with enforcement off is allowed: the switch is what refuses.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_aws import bootstrap, stack
from local_aws.settings import ACCOUNT_ID, ADMIN_USER, REGION, StackSettings, load_settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration
TOY = Path(__file__).resolve().parent.parent / "containers" / "toy"
ALLOWED_BUCKET, DENIED_BUCKET = "surgical-models", "surgical-annotations"
QUEUE = "video-processing-queue"
CLUSTER = {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}}
SAGEMAKER_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def _private_stack(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[StackSettings]:
    """A private stack whose services were started with LOCAL_AWS_IAM=<mode> (this process keeps its own mode)."""
    settings = load_settings(home=tmp_path_factory.mktemp(f"iam-{mode}"), base_port=free_port())
    previous = os.environ.get("LOCAL_AWS_IAM")
    os.environ["LOCAL_AWS_IAM"] = mode
    try:
        stack.up(settings, quiet=True)
    finally:
        if previous is None:
            os.environ.pop("LOCAL_AWS_IAM", None)
        else:
            os.environ["LOCAL_AWS_IAM"] = previous
    try:
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    yield from _private_stack(tmp_path_factory, "enforce")


@pytest.fixture(scope="module")
def not_enforced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    yield from _private_stack(tmp_path_factory, "off")


def admin(settings: StackSettings, service: str) -> Any:
    return bootstrap.client(settings, service)


def as_principal(settings: StackSettings, service: str, credentials: dict[str, str]) -> Any:
    env = settings.aws_environment()
    endpoint = env.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}", env["AWS_ENDPOINT_URL"])
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, **credentials)


def narrow_user(settings: StackSettings, statements: list[dict[str, Any]]) -> dict[str, str]:
    """An IAM user with exactly these statements; its credentials as boto3 client arguments."""
    iam = admin(settings, "iam")
    name = f"narrow-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName="narrow",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def role(settings: StackSettings, trust: dict[str, Any], statements: list[dict[str, Any]]) -> str:
    iam = admin(settings, "iam")
    name = f"role-{uuid.uuid4().hex[:8]}"
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName="job",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    return arn


def user_arn(credentials: dict[str, str], settings: StackSettings) -> str:
    return as_principal(settings, "sts", credentials).get_caller_identity()["Arn"]


def error_of(call: Any, **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["HTTPStatusCode"]


def processing_request(name: str, role_arn: str, image: str, prefix: str = "iam-test") -> dict[str, Any]:
    return {
        "ProcessingJobName": name, "RoleArn": role_arn, "ProcessingResources": CLUSTER,
        "AppSpecification": {"ImageUri": image, "ContainerArguments": [
            "--input", "/opt/ml/processing/input", "--output", "/opt/ml/processing/output"]},
        "ProcessingInputs": [{"InputName": "in", "S3Input": {
            "S3Uri": f"s3://{ALLOWED_BUCKET}/{prefix}/in", "LocalPath": "/opt/ml/processing/input",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": f"s3://{ALLOWED_BUCKET}/{prefix}/out/{name}", "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}]},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
    }


def job_name() -> str:
    return f"iam-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def toy(enforced: StackSettings) -> str:
    repository = bootstrap.register_containers(enforced, [TOY])[0]
    for name, text in (("a.txt", "abc"), ("b.txt", "def")):
        admin(enforced, "s3").put_object(Bucket=ALLOWED_BUCKET, Key=f"iam-test/in/{name}", Body=text.encode())
    return bootstrap.image_uri(repository)


# -- the admin --------------------------------------------------------------------------------------------------------
def test_the_harness_signs_as_the_admin_and_is_allowed(enforced):
    assert admin(enforced, "sts").get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/{ADMIN_USER}"
    assert admin(enforced, "s3").list_objects_v2(Bucket=DENIED_BUCKET)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert admin(enforced, "sqs").get_queue_url(QueueName=QUEUE)["QueueUrl"]
    assert "ProcessingJobSummaries" in admin(enforced, "sagemaker").list_processing_jobs()
    assert admin(enforced, "lambda").get_function(FunctionName="surgical-s3-to-sqs")["Configuration"]


def test_unknown_and_unsigned_callers_are_refused(enforced):
    unknown_key = "AKIAUNKNOWNKEY000000"  # pragma: allowlist secret - no such key anywhere
    stranger = {"aws_access_key_id": unknown_key, "aws_secret_access_key": "x" * 40}
    code, _, _ = error_of(as_principal(enforced, "sqs", stranger).list_queues)
    assert code == "InvalidClientTokenId"
    code, message, _ = error_of(as_principal(enforced, "sagemaker", stranger).list_processing_jobs)
    assert code == "UnrecognizedClientException", message
    import urllib.error
    import urllib.request

    unsigned = urllib.request.Request(enforced.sagemaker_url, data=b"{}", method="POST", headers={
        "X-Amz-Target": "SageMaker.ListProcessingJobs", "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(unsigned, timeout=10)
    assert json.loads(info.value.read())["__type"] == "MissingAuthenticationTokenException"


# -- moto's services ----------------------------------------------------------------------------------------------
def test_s3_get_outside_the_granted_bucket_is_denied_naming_the_action(enforced):
    admin(enforced, "s3").put_object(Bucket=DENIED_BUCKET, Key="iam/secret.txt", Body=b"no")
    admin(enforced, "s3").put_object(Bucket=ALLOWED_BUCKET, Key="iam/open.txt", Body=b"yes")
    user = narrow_user(enforced, [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                   "Resource": [f"arn:aws:s3:::{ALLOWED_BUCKET}", f"arn:aws:s3:::{ALLOWED_BUCKET}/*"]}])
    s3 = as_principal(enforced, "s3", user)
    assert s3.get_object(Bucket=ALLOWED_BUCKET, Key="iam/open.txt")["Body"].read() == b"yes"
    s3.head_bucket(Bucket=ALLOWED_BUCKET)  # HeadBucket is authorised as s3:ListBucket
    code, message, status = error_of(s3.get_object, Bucket=DENIED_BUCKET, Key="iam/secret.txt")
    assert (code, status) == ("AccessDenied", 403)
    assert message == (f"User: {user_arn(user, enforced)} is not authorized to perform: s3:GetObject on resource: "
                       f"arn:aws:s3:::{DENIED_BUCKET}/iam/secret.txt because no identity-based policy allows the "
                       "s3:GetObject action")
    code, message, _ = error_of(s3.put_object, Bucket=ALLOWED_BUCKET, Key="iam/new.txt", Body=b"x")
    assert code == "AccessDenied" and "s3:PutObject" in message


def test_presigned_urls_are_authorised_as_their_signer(enforced):
    """A presigned GET (Label Studio hands the browser these) is the signer's request: allowed where the signer may
    s3:GetObject, refused where not; an unsigned GET is refused."""
    admin(enforced, "s3").put_object(Bucket=DENIED_BUCKET, Key="iam/presigned.txt", Body=b"frame")
    url = admin(enforced, "s3").generate_presigned_url(
        "get_object", Params={"Bucket": DENIED_BUCKET, "Key": "iam/presigned.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"frame"
    user = narrow_user(enforced, [])
    denied = as_principal(enforced, "s3", user).generate_presigned_url(
        "get_object", Params={"Bucket": DENIED_BUCKET, "Key": "iam/presigned.txt"}, ExpiresIn=60)
    for unwanted in (denied, url.partition("?")[0]):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unwanted, timeout=10)
        assert refused.value.code == 403


def test_sqs_send_not_granted_is_denied_and_json_services_answer_in_json(enforced):
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{QUEUE}"
    user = narrow_user(enforced, [{"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:GetQueueUrl"],
                                   "Resource": queue_arn}])
    sqs = as_principal(enforced, "sqs", user)
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    code, message, status = error_of(sqs.send_message, QueueUrl=url, MessageBody="{}")
    assert (code, status) == ("AccessDenied", 400)  # SQS's JSON protocol, mapped back to its query code by botocore
    assert message == (f"User: {user_arn(user, enforced)} is not authorized to perform: sqs:SendMessage on "
                       f"resource: {queue_arn} because no identity-based policy allows the sqs:SendMessage action")
    code, message, _ = error_of(sqs.send_message_batch, QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "{}"}])
    assert code == "AccessDenied" and "sqs:SendMessage " in message  # a batch is authorised as its single action
    code, message, status = error_of(as_principal(enforced, "kms", user).list_keys)
    assert (code, status) == ("AccessDeniedException", 400) and "kms:ListKeys" in message
    code, message, status = error_of(as_principal(enforced, "lambda", user).list_functions)
    assert (code, status) == ("AccessDeniedException", 403) and "lambda:ListFunctions" in message


# -- the local SageMaker ------------------------------------------------------------------------------------------
def test_sagemaker_job_creation_not_granted_is_denied(enforced, toy):
    user = narrow_user(enforced, [{"Effect": "Allow", "Action": "sagemaker:DescribeProcessingJob", "Resource": "*"}])
    name = job_name()
    request = processing_request(name, role(enforced, SAGEMAKER_TRUST, []), toy)
    code, message, status = error_of(as_principal(enforced, "sagemaker", user).create_processing_job, **request)
    assert (code, status) == ("AccessDeniedException", 400)
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:processing-job/{name}"
    assert message == (f"User: {user_arn(user, enforced)} is not authorized to perform: sagemaker:CreateProcessingJob "
                       f"on resource: {arn} because no identity-based policy allows the sagemaker:CreateProcessingJob "
                       "action")


def test_creating_a_job_needs_pass_role_on_its_role(enforced, toy):
    role_arn = role(enforced, SAGEMAKER_TRUST, [])
    user = narrow_user(enforced, [{"Effect": "Allow", "Action": "sagemaker:CreateProcessingJob",
                                   "Resource": f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:processing-job/iam-*"}])
    code, message, _ = error_of(as_principal(enforced, "sagemaker", user).create_processing_job,
                                **processing_request(job_name(), role_arn, toy))
    assert code == "AccessDeniedException"
    assert message == (f"User: {user_arn(user, enforced)} is not authorized to perform: iam:PassRole on resource: "
                       f"{role_arn} because no identity-based policy allows the iam:PassRole action")


@pytest.mark.parametrize("trust", [None, {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}],
    ids=["unknown-role", "role-not-trusting-sagemaker"])
def test_a_role_sagemaker_cannot_assume_is_a_validation_error(enforced, toy, trust):
    role_arn = role(enforced, trust, []) if trust else f"arn:aws:iam::{ACCOUNT_ID}:role/no-such-role"
    code, message, _ = error_of(admin(enforced, "sagemaker").create_processing_job,
                                **processing_request(job_name(), role_arn, toy))
    assert code == "ValidationException"
    assert message == (f"Could not assume role {role_arn}. Please ensure that the role exists and allows principal "
                       "'sagemaker.amazonaws.com' to assume the role.")


def wait_for_job(settings: StackSettings, name: str, timeout: float = 90) -> dict[str, Any]:
    sagemaker = admin(settings, "sagemaker")
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = sagemaker.describe_processing_job(ProcessingJobName=name)
        if job["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"{name} still running")


def test_jobs_move_their_data_with_their_role_credentials(enforced, toy):
    read = {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{ALLOWED_BUCKET}", f"arn:aws:s3:::{ALLOWED_BUCKET}/iam-test/*"]}
    write = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{ALLOWED_BUCKET}/iam-test/out/*"}
    sagemaker = admin(enforced, "sagemaker")
    good, read_only = job_name(), job_name()
    sagemaker.create_processing_job(**processing_request(good, role(enforced, SAGEMAKER_TRUST, [read, write]), toy))
    sagemaker.create_processing_job(**processing_request(read_only, role(enforced, SAGEMAKER_TRUST, [read]), toy))
    job = wait_for_job(enforced, good)
    assert job["ProcessingJobStatus"] == "Completed", job.get("FailureReason")
    outputs = admin(enforced, "s3").list_objects_v2(Bucket=ALLOWED_BUCKET, Prefix=f"iam-test/out/{good}/")
    assert sorted(o["Key"].rsplit("/", 1)[-1] for o in outputs.get("Contents", [])) == ["a.txt.out", "b.txt.out"]
    job = wait_for_job(enforced, read_only)
    assert job["ProcessingJobStatus"] == "Failed"
    assert "AccessDenied" in job["FailureReason"] and "s3:PutObject" in job["FailureReason"], job["FailureReason"]


def test_the_ingest_lambda_runs_as_its_execution_role(enforced):
    """S3 -> Lambda -> SQS under enforcement: the function's role (infra/foundation.yaml, inline policies deployed
    by moto's CloudFormation) allows what the handler does, and nothing signs as the admin inside it."""
    key = f"videos/iam-{uuid.uuid4().hex[:8]}.mp4"
    admin(enforced, "s3").put_object(Bucket="surgical-videos-raw", Key=key,
                                     Body=b"\x00\x00\x00\x18ftypmp42" + b"x" * 500)
    sqs = admin(enforced, "sqs")
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    deadline, bodies = time.time() + 30, []
    while time.time() < deadline and not any(b.get("key") == key for b in bodies):
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert any(b.get("key") == key for b in bodies), bodies
    logs = admin(enforced, "logs").filter_log_events(logGroupName="/aws/lambda/surgical-s3-to-sqs")["events"]
    assert not any("AccessDenied" in e["message"] for e in logs), [e["message"] for e in logs][-20:]


# -- the switch ---------------------------------------------------------------------------------------------------
def test_with_enforcement_off_the_same_narrow_principal_is_allowed(not_enforced):
    toy_image = bootstrap.image_uri(bootstrap.register_containers(not_enforced, [TOY])[0])
    user = narrow_user(not_enforced, [])  # no policy at all
    key = f"iam-off-test/{uuid.uuid4().hex[:8]}.txt"
    admin(not_enforced, "s3").put_object(Bucket=DENIED_BUCKET, Key=key, Body=b"no")
    assert as_principal(not_enforced, "s3", user).get_object(Bucket=DENIED_BUCKET, Key=key)["Body"].read() == b"no"
    url = admin(not_enforced, "sqs").create_queue(QueueName=f"iam-off-test-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    as_principal(not_enforced, "sqs", user).send_message(QueueUrl=url, MessageBody="{}")
    name = job_name()
    request = processing_request(name, f"arn:aws:iam::{ACCOUNT_ID}:role/no-such-role", toy_image,
                                 prefix=f"iam-off-test/{name}")
    arn = as_principal(not_enforced, "sagemaker", user).create_processing_job(**request)["ProcessingJobArn"]
    assert arn.endswith(f"processing-job/{name}")
