"""infra/ templates: cfn-lint clean, and the security properties the design promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from local_aws.bootstrap import _load_template
from local_aws.settings import REPO_ROOT

TEMPLATES = sorted((REPO_ROOT / "infra").glob("*.yaml"))


def test_cfn_lint_is_clean():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_buckets_are_versioned_encrypted_and_private(path: Path):
    for name, resource in _load_template(path)["Resources"].items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        props = resource["Properties"]
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms", name
        assert all(props["PublicAccessBlockConfiguration"].values()), name


# IAM's service authorization reference lists no resource type for these: "*" is the only valid Resource.
UNSCOPED_ACTIONS = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "logs:DescribeLogGroups",
                    "s3:GetAccountPublicAccessBlock", "sagemaker:ListProcessingJobs", "sagemaker:ListTrainingJobs",
                    "sagemaker:ListLabelingJobs", "sagemaker:ListEndpoints"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_role_policies_name_their_actions(path: Path):
    for name, resource in _load_template(path)["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all("*" not in action for action in actions), (name, statement)
                if statement["Resource"] == "*":  # only actions that have no resource-level permissions
                    assert all(action in UNSCOPED_ACTIONS for action in actions), (name, statement)
