"""IAM policy lint of the CloudFormation templates in infra/: every policy document, through parliament and our rules.

Policies are collected from roles (inline policies), managed policies, key policies, bucket and queue policies; the
intrinsics in them (``!Sub``, ``!GetAtt X.Arn``, ``!Ref``) are rendered to concrete, well-formed ARNs of a sample
account, so parliament can check actions against resources (RESOURCE_MISMATCH), flag ``Resource: "*"`` where the
action supports resource-level permissions (RESOURCE_STAR), unknown actions, privilege escalation, and so on.
Our rules on top: no wildcard in an action, and every ``Resource: "*"`` in the YAML carries a comment saying why.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTITION, REGION, ACCOUNT = "aws", "us-east-1", "123456789012"
# Resource types whose GetAtt .Arn / Ref we render; anything else is reported as unrenderable.
_ARN_FORMATS = {
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/0000aaaa-0000-0000-0000-{logical_hex}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:/aws/{name}:*",
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::ECR::Repository": "arn:aws:ecr:{region}:{account}:repository/surgical-mlops/{name}",
    "AWS::CodeBuild::Project": "arn:aws:codebuild:{region}:{account}:project/{name}",
    "AWS::Events::Rule": "arn:aws:events:{region}:{account}:rule/{name}",
    "AWS::CloudWatch::Alarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
    "AWS::SNS::Topic": "arn:aws:sns:{region}:{account}:{name}",
    "AWS::ApiGateway::RestApi": "a1b2c3d4e5",
}
# Sample values of parameters without a default, by name pattern (ARNs must be well formed for parliament).
_PARAMETER_SAMPLES = [
    (re.compile(r"KeyArn$"), "arn:aws:kms:us-east-1:123456789012:key/1111aaaa-0000-0000-0000-000000000000"),
    (re.compile(r"RoleArn$"), "arn:aws:iam::123456789012:role/sample-role"),
    (re.compile(r"^ConnectionArn$"),
     "arn:aws:codestar-connections:us-east-1:123456789012:connection/1111aaaa-0000-0000-0000-000000000000"),
    (re.compile(r"Arn$"), "arn:aws:sqs:us-east-1:123456789012:sample"),
]
_RESOURCE_STAR_LINE = re.compile(r"""^\s*(?:-\s*)?Resource:\s*["']\*["']\s*(#\s*\S.*)?$""")
_STAR_ITEM_LINE = re.compile(r"""^\s*-\s*["']\*["']\s*(#.*)?$""")


@dataclass(frozen=True)
class PolicyDocument:
    template: str
    resource: str
    where: str  # e.g. "Policies[mwaa-environment]" or "KeyPolicy"
    kind: str  # "identity" or "resource"
    document: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.template}:{self.resource}.{self.where}"


def _import_parliament() -> Any:
    """parliament 1.6.4 imports pkg_resources (gone from setuptools >= 81) for two data file paths only."""
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
            sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


def _load(path: Path) -> dict[str, Any]:
    from local_aws.bootstrap import _load_template  # the loader that keeps intrinsics as {"Fn": value}

    return _load_template(path)


class Renderer:
    """Renders intrinsics to concrete strings for one template."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.resources = template.get("Resources", {})
        self.parameters = {}
        for name, spec in template.get("Parameters", {}).items():
            default = spec.get("Default")
            if default in (None, ""):
                allowed = spec.get("AllowedValues")
                default = allowed[0] if allowed else next(
                    (v for pattern, v in _PARAMETER_SAMPLES if pattern.search(name)), f"sample-{name.lower()}")
            self.parameters[name] = str(default)
        self.pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                       "AWS::StackName": "sample-stack", "AWS::URLSuffix": "amazonaws.com"}

    def _arn(self, logical: str) -> str:
        kind = self.resources[logical]["Type"]
        if kind not in _ARN_FORMATS:
            raise ValueError(f"cannot render an ARN of {logical} ({kind}) for the IAM lint")
        name = re.sub(r"[^a-z0-9-]", "-", re.sub(r"(?<!^)(?=[A-Z])", "-", logical).lower())
        return _ARN_FORMATS[kind].format(region=REGION, account=ACCOUNT, name=name,
                                         logical_hex=f"{abs(hash(logical)) % 16**12:012x}")

    def _ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.resources[name]["Type"]
        if kind in ("AWS::S3::Bucket", "AWS::IAM::Role", "AWS::Lambda::Function", "AWS::Logs::LogGroup",
                    "AWS::DynamoDB::Table", "AWS::ECR::Repository", "AWS::CodeBuild::Project", "AWS::Events::Rule",
                    "AWS::CloudWatch::Alarm", "AWS::ApiGateway::RestApi"):
            return self._arn(name).rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        return self._arn(name)  # SQS URL, KMS key id, SNS topic ARN: the ARN is what policies use

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in variables:
                return self(variables[token])
            if "." in token:
                logical, attribute = token.split(".", 1)
                return self({"GetAtt": f"{logical}.{attribute}"})
            return self._ref(token)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "GetAtt":
                logical, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                if attribute != "Arn":
                    raise ValueError(f"cannot render GetAtt {logical}.{attribute} for the IAM lint")
                return self._arn(logical)
            if key == "Sub":
                return self._sub(arg, {}) if isinstance(arg, str) else self._sub(arg[0], arg[1])
            if key == "Join":
                return arg[0].join(str(self(v)) for v in arg[1])
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def policies(path: Path) -> Iterator[PolicyDocument]:
    template = _load(path)
    render = Renderer(template)
    for logical, resource in template.get("Resources", {}).items():
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield PolicyDocument(path.name, logical, f"Policies[{policy['PolicyName']}]", "identity",
                                     render(policy["PolicyDocument"]))
        elif kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::IAM::RolePolicy"):
            yield PolicyDocument(path.name, logical, "PolicyDocument", "identity", render(props["PolicyDocument"]))
        elif kind == "AWS::KMS::Key":
            document = render(props["KeyPolicy"])
            # In a key policy "Resource": "*" means this key: lint it as the key's own ARN.
            for statement in _as_list(document.get("Statement", [])):
                if statement.get("Resource") == "*":
                    statement["Resource"] = render({"GetAtt": f"{logical}.Arn"})
            yield PolicyDocument(path.name, logical, "KeyPolicy", "resource", document)
        elif kind in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
            yield PolicyDocument(path.name, logical, "PolicyDocument", "resource", render(props["PolicyDocument"]))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_account_root(principal: Any) -> bool:
    aws = principal.get("AWS") if isinstance(principal, dict) else None
    return any(str(p).endswith(":root") for p in _as_list(aws or []))


def own_findings(policy: PolicyDocument) -> list[str]:
    found = []
    for statement in _as_list(policy.document.get("Statement", [])):
        sid = statement.get("Sid", "?")
        for action in _as_list(statement.get("Action", [])) + _as_list(statement.get("NotAction", [])):
            if "*" in action and not (policy.where == "KeyPolicy" and action == "kms:*"
                                      and _is_account_root(statement.get("Principal"))):
                found.append(f"WILDCARD_ACTION {action} in statement {sid}")
        if "NotAction" in statement or "NotResource" in statement:
            found.append(f"NOT_ACTION_OR_RESOURCE in statement {sid}")
    return found


def parliament_findings(policy: PolicyDocument) -> list[str]:
    parliament = _import_parliament()
    document = dict(policy.document)
    if policy.kind == "resource":
        # parliament checks identity policies: the principal-less view of each statement is what it can judge.
        document["Statement"] = [{k: v for k, v in s.items() if k not in ("Principal",)}
                                 for s in _as_list(document["Statement"])]
    result = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=True)
    return [f"{f.issue} {json.dumps(f.detail, default=str)[:300]}" for f in result.findings]


def comment_findings(path: Path) -> list[str]:
    """Every ``Resource: "*"`` line says why in a comment; no bare "*" item in a list."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = _RESOURCE_STAR_LINE.match(line)
        if match and not match.group(1):
            found.append(f"{path.name}:{number}: Resource \"*\" without a comment saying why")
        item = _STAR_ITEM_LINE.match(line)
        if item and not item.group(1):
            found.append(f"{path.name}:{number}: \"*\" list item without a comment saying why")
    return found
