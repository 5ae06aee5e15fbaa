"""The pure parts of the local stack's IAM enforcement: action names, headers, resources, trust, messages."""

from __future__ import annotations

import json

import pytest

from local_aws import credentials, iam
from local_aws.sagemaker import authz
from local_aws.settings import iam_mode


@pytest.mark.parametrize(("moto_action", "query", "expected"), [
    ("monitoring:PutMetricData", "", "cloudwatch:PutMetricData"),
    ("lambda:Invoke", "", "lambda:InvokeFunction"),
    ("lambda:GetFunction", "", "lambda:GetFunction"),
    ("sqs:SendMessageBatch", "", "sqs:SendMessage"),
    ("sqs:DeleteMessageBatch", "", "sqs:DeleteMessage"),
    ("sqs:ChangeMessageVisibilityBatch", "", "sqs:ChangeMessageVisibility"),
    ("sqs:ReceiveMessage", "", "sqs:ReceiveMessage"),
    ("s3:HeadBucket", "", "s3:ListBucket"),
    ("s3:DeleteObjects", "", "s3:DeleteObject"),
    ("s3:GetPublicAccessBlock", "publicAccessBlock", "s3:GetBucketPublicAccessBlock"),
    ("s3:ListBucket", "encryption", "s3:GetEncryptionConfiguration"),
    ("s3:CreateBucket", "encryption=", "s3:PutEncryptionConfiguration"),
    ("s3:DeleteBucket", "ownershipControls", "s3:PutBucketOwnershipControls"),
    ("s3:ListBucket", "list-type=2&prefix=a", "s3:ListBucket"),
    ("s3:GetObject", "versionId=3", "s3:GetObjectVersion"),
    ("s3:GetObject", "", "s3:GetObject"),
    ("iam:CreateRole", "", "iam:CreateRole"),
])
def test_moto_actions_become_iam_actions(moto_action, query, expected):
    assert iam.iam_action(moto_action, query) == expected


def test_credential_scope_and_caller_come_from_the_sigv4_header():
    header = ("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE123/20260101/us-east-1/sagemaker/aws4_request, "
              "SignedHeaders=host;x-amz-date, Signature=abc")
    assert iam.credential_scope(header) == ["ASIAEXAMPLE123", "20260101", "us-east-1", "sagemaker", "aws4_request"]
    assert iam.credential_scope("") == []
    assert authz.caller({"Authorization": header, "X-Amz-Security-Token": "tok"}) == ("ASIAEXAMPLE123", "tok")
    assert authz.caller({}) == (None, None)


def test_json_requests_are_told_apart_from_query_ones():
    assert iam.is_json_request({"X-Amz-Target": "AmazonSQS.SendMessage"}, "sqs")
    assert iam.is_json_request({"Content-Type": "application/x-amz-json-1.1"}, "logs")
    assert iam.is_json_request({}, "lambda")  # rest-json
    assert not iam.is_json_request({"Content-Type": "application/x-www-form-urlencoded"}, "iam")


def test_denial_messages_name_the_action_as_aws_does():
    user, role = "arn:aws:iam::123456789012:user/u", "arn:aws:iam::123456789012:role/r"
    assert iam.denial_message(user, "iam:PassRole", role) == (
        f"User: {user} is not authorized to perform: iam:PassRole on resource: {role} because no identity-based "
        "policy allows the iam:PassRole action")
    assert iam.denial_message(user, "kms:ListKeys") == (
        f"User: {user} is not authorized to perform: kms:ListKeys because no identity-based policy allows the "
        "kms:ListKeys action")
    assert iam.denial_message(user, "s3:GetObject", "arn:aws:s3:::b/k", "explicit").endswith(
        "with an explicit deny in an identity-based policy")
    assert iam.could_not_assume(role, "sagemaker.amazonaws.com") == (
        f"Could not assume role {role}. Please ensure that the role exists and allows principal "
        "'sagemaker.amazonaws.com' to assume the role.")


@pytest.mark.parametrize(("pattern", "value", "ignore_case", "expected"), [
    ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b", False, True),
    ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket2/a", False, False),
    ("arn:aws:secretsmanager:us-east-1:1:secret:conn-??????", "arn:aws:secretsmanager:us-east-1:1:secret:conn-AbC123",
     False, True),
    ("arn:aws:secretsmanager:us-east-1:1:secret:conn-??????", "arn:aws:secretsmanager:us-east-1:1:secret:conn-AbC",
     False, False),
    ("arn:aws:sqs:us-east-1:*:airflow-celery-*", "arn:aws:sqs:us-east-1:999:airflow-celery-x", False, True),
    ("s3:get*", "s3:GetObject", True, True),
    ("s3:get*", "s3:GetObject", False, False),
    ("a.b", "axb", False, False),  # a dot is literal
])
def test_iam_wildcards(pattern, value, ignore_case, expected):
    assert iam.glob_match(pattern, value, ignore_case) is expected


def test_trust_policies_are_read_for_service_principals():
    def trust(*statements):
        return {"Version": "2012-10-17", "Statement": list(statements)}

    allow = {"Effect": "Allow", "Principal": {"Service": ["sagemaker.amazonaws.com"]}, "Action": "sts:AssumeRole"}
    assert iam.trusts(trust(allow), "sagemaker.amazonaws.com")
    assert not iam.trusts(trust(allow), "lambda.amazonaws.com")
    assert iam.trusts(trust({**allow, "Action": ["sts:AssumeRole", "sts:TagSession"]}), "sagemaker.amazonaws.com")
    assert not iam.trusts(trust({**allow, "Action": "sts:TagSession"}), "sagemaker.amazonaws.com")
    deny = {**allow, "Effect": "Deny"}
    assert not iam.trusts(trust(allow, deny), "sagemaker.amazonaws.com")
    assert iam.trusts('{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "sts:*"}}', "x.amazonaws.com")
    assert not iam.trusts(trust({**allow, "Principal": {"AWS": "arn:aws:iam::1:root"}}), "sagemaker.amazonaws.com")


def test_a_principal_is_named_by_itself_its_role_and_its_account():
    names = iam.principal_names("arn:aws:sts::123456789012:assumed-role/jobs/SageMaker")
    assert {"arn:aws:iam::123456789012:role/jobs", "arn:aws:iam::123456789012:root", "123456789012"} <= names
    assert "arn:aws:iam::123456789012:user/u" in iam.principal_names("arn:aws:iam::123456789012:user/u")


@pytest.mark.parametrize(("operation", "body", "expected"), [
    ("CreateProcessingJob", {"ProcessingJobName": "Frames-1"},
     "arn:aws:sagemaker:us-east-1:123456789012:processing-job/frames-1"),
    ("DescribeTrainingJob", {"TrainingJobName": "t"}, "arn:aws:sagemaker:us-east-1:123456789012:training-job/t"),
    ("UpdateEndpoint", {"EndpointName": "surgical-detector", "EndpointConfigName": "c"},
     "arn:aws:sagemaker:us-east-1:123456789012:endpoint/surgical-detector"),
    ("CreateModelPackage", {"ModelPackageGroupName": "surgical-detector"},
     "arn:aws:sagemaker:us-east-1:123456789012:model-package/surgical-detector/*"),
    ("UpdateModelPackage", {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/3"},
     "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/3"),
    ("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m", "Tags": []},
     "arn:aws:sagemaker:us-east-1:123456789012:model/m"),
    ("ListProcessingJobs", {}, "*"),
    ("DescribeWorkteam", {"WorkteamName": "w"}, "*"),
])
def test_sagemaker_requests_are_authorised_on_the_named_resource(operation, body, expected):
    assert authz.resource_arn(operation, body) == expected


def test_every_role_a_request_hands_to_sagemaker_is_found():
    body = {"RoleArn": "arn:r1", "MonitoringScheduleConfig": {"MonitoringJobDefinition": {"RoleArn": "arn:r2"}},
            "TrainingJobDefinitions": [{"RoleArn": "arn:r3"}, {"RoleArn": "arn:r1"}], "ExecutionRoleArn": "arn:r4",
            "Tags": [{"Key": "RoleArn", "Value": "not-a-role"}]}
    assert authz.role_arns(body) == ["arn:r1", "arn:r2", "arn:r3", "arn:r4"]
    assert authz.role_arns({"ProcessingJobName": "x"}) == []


def test_the_mode_defaults_to_enforce_and_refuses_unknown_values(monkeypatch):
    monkeypatch.delenv("LOCAL_AWS_IAM", raising=False)
    assert iam_mode() == "enforce"
    monkeypatch.setenv("LOCAL_AWS_IAM", " Off ")
    assert iam_mode() == "off"
    monkeypatch.setenv("LOCAL_AWS_IAM", "strict")
    with pytest.raises(ValueError, match="LOCAL_AWS_IAM='strict'"):
        iam_mode()


def test_the_banner_is_loud_when_enforcement_is_switched_off(monkeypatch):
    from local_aws.stack import iam_banner

    monkeypatch.delenv("LOCAL_AWS_IAM", raising=False)
    assert iam_banner().count("\n") == 0 and "IAM enforced" in iam_banner()
    monkeypatch.setenv("LOCAL_AWS_IAM", "off")
    assert "!! IAM NOT ENFORCED (LOCAL_AWS_IAM=off)" in iam_banner()


def test_off_mode_skips_the_sagemaker_checks(monkeypatch):
    monkeypatch.setenv("LOCAL_AWS_IAM", "off")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    authz.authorize("CreateProcessingJob", {"RoleArn": "arn:aws:iam::1:role/r"}, {})  # no IAM call, no error


def test_decisions_are_recorded_once_per_role_action_resource_and_outcome(tmp_path, monkeypatch):
    path = tmp_path / "iam" / "decisions.jsonl"
    monkeypatch.setattr(iam, "_decisions_path", path)
    monkeypatch.setattr(iam, "_decided", set())
    path.parent.mkdir()
    session = "arn:aws:sts::123456789012:assumed-role/surgical-sagemaker-execution/SageMaker"
    for _ in range(3):
        iam.record(session, "s3:GetObject", "arn:aws:s3:::b/k", True)
    iam.record(session, "s3:GetObject", "arn:aws:s3:::b/k", False)
    iam.record("arn:aws:iam::123456789012:user/local-admin", "s3:ListBucket", "", True)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"principal": "arn:aws:iam::123456789012:role/surgical-sagemaker-execution", "action": "s3:GetObject",
         "resource": "arn:aws:s3:::b/k", "allowed": True},
        {"principal": "arn:aws:iam::123456789012:role/surgical-sagemaker-execution", "action": "s3:GetObject",
         "resource": "arn:aws:s3:::b/k", "allowed": False},
        {"principal": "arn:aws:iam::123456789012:user/local-admin", "action": "s3:ListBucket", "resource": "*",
         "allowed": True}]


def test_the_credential_process_config_and_its_clear_error_when_the_stack_is_down(tmp_path):
    config = credentials.config_file(tmp_path / "aws-config", "http://127.0.0.1:9", "arn:aws:iam::1:role/r",
                                     "airflow-env.amazonaws.com", "airflow-worker")
    text = config.read_text()
    assert text.startswith("[default]\ncredential_process = ")
    assert "-m local_aws.credentials --endpoint http://127.0.0.1:9 --role-arn arn:aws:iam::1:role/r " \
           "--service airflow-env.amazonaws.com --session-name airflow-worker" in text
    with pytest.raises(RuntimeError, match=r"cannot reach the local stack's IAM at http://127\.0\.0\.1:9"):
        credentials.credentials("http://127.0.0.1:9", "arn:aws:iam::1:role/r", "airflow-env.amazonaws.com", "w")
