"""infra/ templates: cfn-lint clean, and the security properties the design promises."""

from __future__ import annotations

import json
import re
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


def _template(name: str) -> dict:
    return _load_template(REPO_ROOT / "infra" / name)


def test_mwaa_reads_only_the_label_studio_connection_from_secrets_manager():
    from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

    mwaa, label_studio = _template("mwaa.yaml"), _template("label_studio.yaml")
    secret = label_studio["Parameters"]["ConnectionSecretName"]["Default"]
    parameter = mwaa["Parameters"]["ConnectionSecretName"]
    assert parameter["Default"] == secret and re.fullmatch(parameter["AllowedPattern"], secret)
    options = mwaa["Resources"]["Environment"]["Properties"]["AirflowConfigurationOptions"]
    assert options["secrets.backend"] == f"{SecretsManagerBackend.__module__}.{SecretsManagerBackend.__name__}"
    text, variables = options["secrets.backend_kwargs"]["Sub"]
    index, (separator, name) = variables["Prefix"]["Select"][0], variables["Prefix"]["Select"][1]["Split"]
    assert name == {"Ref": "ConnectionSecretName"}
    kwargs = json.loads(text.replace("${Prefix}", secret.split(separator)[index]))
    backend = SecretsManagerBackend(**kwargs)  # the installed provider takes exactly these options
    assert backend.kwargs == {} and backend.variables_prefix is None and backend.config_prefix is None
    assert f"{backend.connections_prefix}/label_studio_default" == secret
    # Only label_studio_default is looked up (the provider matches with re.match and IGNORECASE).
    pattern = backend.connections_lookup_pattern
    assert re.match(pattern, "label_studio_default", re.IGNORECASE)
    assert not any(re.match(pattern, c, re.IGNORECASE) for c in
                   ("aws_default", "label_studio_default_2", "http_default", "sagemaker_default"))
    statements = [s for p in mwaa["Resources"]["AirflowExecutionRole"]["Properties"]["Policies"]
                  for s in p["PolicyDocument"]["Statement"] if "secretsmanager" in str(s["Action"])]
    assert [(s["Action"], s["Resource"]) for s in statements] == [("secretsmanager:GetSecretValue", {
        "Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
               "${ConnectionSecretName}-??????"})]


def test_frames_bucket_allows_only_reads_from_the_label_studio_origin():
    foundation = _template("foundation.yaml")
    assert foundation["Parameters"]["LabelStudioOrigin"]["Default"] == ""
    assert foundation["Conditions"]["HasLabelStudioOrigin"] == {"Not": [{"Equals": [{"Ref": "LabelStudioOrigin"}, ""]}]}
    condition, cors, otherwise = foundation["Resources"]["FramesBucket"]["Properties"]["CorsConfiguration"]["If"]
    assert (condition, otherwise) == ("HasLabelStudioOrigin", {"Ref": "AWS::NoValue"})
    (rule,) = cors["CorsRules"]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD"]
    assert rule["AllowedOrigins"] == [{"Ref": "LabelStudioOrigin"}]
    others = [n for n, r in foundation["Resources"].items() if r["Type"] == "AWS::S3::Bucket" and n != "FramesBucket"]
    assert others and not any("CorsConfiguration" in foundation["Resources"][n]["Properties"] for n in others)
