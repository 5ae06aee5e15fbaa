"""The roles the pipeline runs as exist on the local stack as infra/ declares them (bootstrap's roles stack): the
SageMaker execution role of infra/platform.yaml and the MWAA execution role of infra/mwaa.yaml, with exactly the
templates' trust and inline policies rendered for the local stage (unsuffixed names), and they allow what the local
pipeline does (moto's policy engine, as tests/unit/test_iam_sufficiency.py evaluates them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from include.config import build_config
from local_aws import bootstrap
from local_aws.settings import ACCOUNT_ID, REGION
from tests.unit.test_iam_sufficiency import decision

pytestmark = pytest.mark.integration
MWAA_ROLE = "surgical-mwaa-execution-local"


def _declared(logical: str, data_key_arn: str) -> dict[str, Any]:
    """The role's properties as the template declares them, rendered with the local stack's parameters."""
    template, _ = bootstrap.roles_template()
    parameters = bootstrap.roles_parameters(data_key_arn)
    return json.loads(json.dumps(bootstrap.substitute(template["Resources"][logical]["Properties"], parameters)))


def _deployed(iam: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trust policy, inline policy name -> document) of a role, through the IAM API."""
    trust = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    names = iam.list_role_policies(RoleName=name)["PolicyNames"]
    return trust, {n: iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"] for n in names}


@pytest.fixture(scope="module")
def data_key_arn(aws) -> str:
    outputs = aws("cloudformation").describe_stacks(StackName=bootstrap.FOUNDATION_STACK)["Stacks"][0]["Outputs"]
    return {o["OutputKey"]: o["OutputValue"] for o in outputs}["DataKeyArn"]


@pytest.mark.parametrize(("logical", "name"), [
    ("SageMakerExecutionRole", build_config("local").sagemaker_role_name),
    ("AirflowExecutionRole", MWAA_ROLE),
])
def test_each_role_has_exactly_the_templates_trust_and_inline_policies(aws, data_key_arn, logical, name):
    declared = _declared(logical, data_key_arn)
    assert declared["RoleName"] == name
    trust, inline = _deployed(aws("iam"), name)
    assert trust == declared["AssumeRolePolicyDocument"]
    assert inline == {p["PolicyName"]: p["PolicyDocument"] for p in declared["Policies"]}
    assert aws("iam").list_attached_role_policies(RoleName=name)["AttachedPolicies"] == []


def test_the_roles_name_the_local_stacks_resources(aws, data_key_arn):
    config = build_config("local")
    trust, inline = _deployed(aws("iam"), config.sagemaker_role_name)
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "sagemaker.amazonaws.com"}]
    data_key = {s["Sid"]: s["Resource"] for s in inline["sagemaker-jobs-least-privilege"]["Statement"]}["UseDataKey"]
    assert data_key == data_key_arn == aws("kms").describe_key(KeyId=config.kms_key_alias)["KeyMetadata"]["Arn"]
    _, inline = _deployed(aws("iam"), MWAA_ROLE)
    statements = {s["Sid"]: s for s in inline["pipeline-tasks"]["Statement"]}
    endpoints = [r for r in statements["RegisterAndDeployModels"]["Resource"] if ":endpoint/" in r]
    assert endpoints == [f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{config.endpoint_name}"]
    assert config.endpoint_name == "surgical-detector"
    assert statements["PassSageMakerRole"]["Resource"] == config.sagemaker_role_arn
    assert statements["VideoQueue"]["Resource"].endswith(f":{config.video_queue}")
    assert statements["ReadDriftAlarms"]["Resource"].endswith(":alarm:surgical-*-local")


def test_the_mwaa_role_may_run_a_local_job_and_pass_the_local_sagemaker_role(aws):
    config = build_config("local")
    _, inline = _deployed(aws("iam"), MWAA_ROLE)
    policies = list(inline.values())
    job = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:processing-job/frames-x"
    assert decision(policies, "sagemaker:CreateProcessingJob", job)
    assert decision(policies, "iam:PassRole", config.sagemaker_role_arn,
                    {"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert not decision(policies, "iam:PassRole", f"arn:aws:iam::{ACCOUNT_ID}:role/another-role",
                        {"iam:PassedToService": "sagemaker.amazonaws.com"})
    assert not decision(policies, "sagemaker:CreateProcessingJob",
                        f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:processing-job/anything-else")


def test_deploying_the_roles_again_changes_nothing(local_stack, aws, data_key_arn, capsys):
    iam = aws("iam")
    before = {n: _deployed(iam, n) for n in (build_config("local").sagemaker_role_name, MWAA_ROLE)}
    count = len(iam.list_roles()["Roles"])
    bootstrap.deploy_roles(local_stack, {"DataKeyArn": data_key_arn})
    printed = capsys.readouterr().out
    assert f"stack    {bootstrap.ROLES_STACK} up to date" in printed
    assert "applied" not in printed and printed.count("  role     ") == 2, printed
    assert {n: _deployed(iam, n) for n in before} == before
    assert len(iam.list_roles()["Roles"]) == count


def test_a_role_that_drifted_from_the_template_is_put_back(local_stack, aws, data_key_arn, capsys):
    """What moto's CloudFormation does not deploy as declared (or a later hand edit) is applied through IAM."""
    iam = aws("iam")
    before = _deployed(iam, MWAA_ROLE)
    iam.delete_role_policy(RoleName=MWAA_ROLE, PolicyName="pipeline-tasks")
    iam.put_role_policy(RoleName=MWAA_ROLE, PolicyName="extra", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    iam.update_assume_role_policy(RoleName=MWAA_ROLE, PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    bootstrap.deploy_roles(local_stack, {"DataKeyArn": data_key_arn})
    printed = capsys.readouterr().out
    assert (f"applied  {MWAA_ROLE}: trust policy, inline policy pipeline-tasks, inline policy extra removed "
            "(not in the template)") in printed, printed
    assert _deployed(iam, MWAA_ROLE) == before
