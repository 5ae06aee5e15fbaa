"""Every IAM policy in infra/ passes the IAM lint (parliament + our rules); an over-broad fixture does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_aws.settings import REPO_ROOT
from tools import iam_lint

TEMPLATES = sorted((REPO_ROOT / "infra").glob("*.yaml"))
OVERBROAD = Path(__file__).resolve().parent.parent / "fixtures" / "iam" / "overbroad.yaml"

# Findings we accept, each with its reason: (template, resource, issue) -> why.
ACCEPTED = {
    **{(t, r, "PERMISSIONS_MANAGEMENT_ACTIONS"): "a key policy's statement for the account root delegates the key's "
       "administration (PutKeyPolicy, grants) to IAM, as AWS's default key policy does"
       for t, r in [("foundation.yaml", "DataKey"), ("platform.yaml", "MwaaKey"), ("cicd.yaml", "ArtifactKey")]},
    **{(t, r, "RESOURCE_MISMATCH"): "in a key policy every action is authorised on that key; parliament expects "
       "alias (and custom key store) ARNs for some of them"
       for t, r in [("foundation.yaml", "DataKey"), ("platform.yaml", "MwaaKey"), ("cicd.yaml", "ArtifactKey")]},
    ("cicd.yaml", "ImagesBuildRole", "CREDENTIALS_EXPOSURE"): "ecr:GetAuthorizationToken: docker login to push",
    ("platform.yaml", "SageMakerExecutionRole", "CREDENTIALS_EXPOSURE"): "ecr:GetAuthorizationToken: image pull",
    ("platform.yaml", "SageMakerExecutionRole", "PERMISSIONS_MANAGEMENT_ACTIONS"):
        "kms:CreateGrant on the data key only, and only for AWS resources (encrypted job volumes)",
    ("mwaa.yaml", "AirflowExecutionRole", "PERMISSIONS_MANAGEMENT_ACTIONS"):
        "iam:PassRole of the one SageMaker execution role, to sagemaker.amazonaws.com only",
    ("cicd.yaml", "PipelineRole", "PERMISSIONS_MANAGEMENT_ACTIONS"):
        "iam:PassRole of the one CloudFormation deploy role, to cloudformation.amazonaws.com only",
    ("cicd.yaml", "PipelineRole", "PRIVILEGE_ESCALATION"):
        "a deploy pipeline hands a deploy role to CloudFormation by design; the role is owned outside the pipeline",
}


def lint(path: Path) -> list[tuple[str, str, str, str]]:
    """(template, resource, issue, detail) of every finding in one template."""
    found = []
    for policy in iam_lint.policies(path):
        for finding in iam_lint.own_findings(policy) + iam_lint.parliament_findings(policy):
            issue, _, detail = finding.partition(" ")
            found.append((path.name, policy.resource, issue, f"{policy.where}: {detail}"))
    found += [(path.name, "-", "UNCOMMENTED_STAR", line) for line in iam_lint.comment_findings(path)]
    return found


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_policy_passes_the_iam_lint(path):
    unexpected = [f for f in lint(path) if f[:3] not in ACCEPTED]
    assert unexpected == [], "\n".join(" ".join(f) for f in unexpected)


def test_every_template_policy_is_linted():
    kinds = {p.where.split("[")[0] for path in TEMPLATES for p in iam_lint.policies(path)}
    assert {"Policies", "KeyPolicy", "PolicyDocument"} <= kinds
    assert sum(1 for path in TEMPLATES for _ in iam_lint.policies(path)) >= 15


def test_accepted_findings_still_occur():
    # An accepted finding that no longer occurs is a stale exception: remove it from ACCEPTED.
    occurring = {f[:3] for path in TEMPLATES for f in lint(path)}
    assert set(ACCEPTED) <= occurring, set(ACCEPTED) - occurring


def test_overbroad_policy_is_caught():
    issues = {(f[2], f[3].split(":")[0]) for f in lint(OVERBROAD)}
    kinds = {issue for issue, _ in issues}
    assert "WILDCARD_ACTION" in kinds  # s3:*
    assert "RESOURCE_STAR" in kinds  # s3:GetObject on every bucket
    assert "UNCOMMENTED_STAR" in kinds  # ... and no comment saying why
    assert {"PERMISSIONS_MANAGEMENT_ACTIONS", "PRIVILEGE_ESCALATION"} & kinds  # iam:PassRole on any role
    assert not any(f[:3] in ACCEPTED for f in lint(OVERBROAD))


def _statements(template: str, resource: str) -> list[dict]:
    return [s for p in iam_lint.policies(REPO_ROOT / "infra" / template) if p.resource == resource
            for s in p.document["Statement"]]


def _resources(statement: dict) -> list[str]:
    return iam_lint._as_list(statement["Resource"])


def test_sagemaker_role_reaches_only_project_resources():
    for statement in _statements("platform.yaml", "SageMakerExecutionRole"):
        for arn in _resources(statement):
            service = arn.split(":")[2] if arn != "*" else "*"
            if service == "s3":
                assert arn.startswith("arn:aws:s3:::surgical-"), arn
            elif service == "logs":
                assert ":log-group:/aws/sagemaker/" in arn, arn
            elif service == "ecr":
                assert arn.rsplit("/", 1)[1] in {"frame-extractor", "trainer", "inference", "drift-monitor"}, arn
            elif service == "kms":
                assert arn == iam_lint.Renderer(iam_lint._load(REPO_ROOT / "infra" / "platform.yaml")).parameters[
                    "DataKeyArn"], arn
            else:
                assert arn == "*" and statement["Action"] in ("ecr:GetAuthorizationToken", "cloudwatch:PutMetricData")


def test_detect_api_may_only_invoke_its_one_endpoint():
    actions = {a: _resources(s) for s in _statements("api.yaml", "DetectRole")
               for a in iam_lint._as_list(s["Action"])}
    endpoint = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/surgical-detector"
    assert actions["sagemaker:InvokeEndpoint"] == [endpoint]
    assert {a.split(":")[0] for a in actions} == {"logs", "sagemaker"}


def test_drift_trigger_may_only_call_the_mwaa_rest_api_as_user():
    actions = {a: _resources(s) for s in _statements("monitoring.yaml", "TriggerRole")
               for a in iam_lint._as_list(s["Action"])}
    assert actions["airflow:InvokeRestApi"] == [
        "arn:aws:airflow:us-east-1:123456789012:role/sample-mwaaenvironmentname/User"]
