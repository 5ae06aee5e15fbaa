"""Least privilege, both ways: per role, the permissions a run used against the ones its policies grant.

The local stack records every IAM decision it makes under ``LOCAL_AWS_IAM=enforce`` (``local_aws/iam.py``: once per
principal, action, resource and outcome, in ``<LOCAL_AWS_HOME>/iam/decisions.jsonl``). After a run (``make demo``,
the e2e loop) this tool reads that record and the roles' policies from the stack's IAM and prints, per role:

- **used**: the distinct actions the role was allowed, with how many resources;
- **missing**: every action the role was refused, with the resources: a permission the pipeline needs and the role
  lacks (the exit status is 1 when there is one);
- **unused grants**: each Allow statement's action that no allowed decision matched (its ``Sid`` and action):
  candidates to remove, to be judged (a grant may serve a path the run did not take, such as a rollback or an
  opt-in backend).

Resource matching is action-level where the stack records ``*`` (moto does not know the resource of most non-S3/SQS
calls). Only the pipeline's roles are reported (``--prefix``, default ``surgical-``); the harness's user is not.

    .venv/bin/python tools/iam_usage.py [--decisions .local/iam/decisions.jsonl] [--json report.json]

Ends with ``RESULT iam_usage roles=<n> used=<actions> granted=<statement actions> missing=<n> unused=<n>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from local_aws.iam import as_list, glob_match  # the engine's own IAM wildcards


@dataclass
class Grant:
    policy: str
    sid: str
    action: str
    resources: list[str]
    used: bool = False


@dataclass
class RoleUsage:
    role: str
    used: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    missing: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    grants: list[Grant] = field(default_factory=list)

    @property
    def unused(self) -> list[Grant]:
        return [g for g in self.grants if not g.used]

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "used": {a: sorted(r) for a, r in sorted(self.used.items())},
                "missing": {a: sorted(r) for a, r in sorted(self.missing.items())},
                "granted": len(self.grants),
                "unused": [{"policy": g.policy, "sid": g.sid, "action": g.action} for g in self.unused]}


def grants(documents: dict[str, dict[str, Any]]) -> list[Grant]:
    """One grant per (Allow statement, action) of the role's policy documents ({policy name: document})."""
    found = []
    for policy, document in documents.items():
        for index, statement in enumerate(as_list(document.get("Statement"))):
            if statement.get("Effect") != "Allow" or "Action" not in statement:
                continue
            resources = [str(r) for r in as_list(statement.get("Resource"))] or ["*"]
            for action in as_list(statement["Action"]):
                found.append(Grant(policy, str(statement.get("Sid") or f"#{index}"), str(action), resources))
    return found


def analyse(decisions: list[dict[str, Any]], policies: dict[str, dict[str, dict[str, Any]]]) -> list[RoleUsage]:
    """Per role ARN in ``policies`` ({role ARN: {policy name: document}}): what the decisions used and missed."""
    usage = {role: RoleUsage(role, grants=grants(documents)) for role, documents in policies.items()}
    for decision in decisions:
        role = usage.get(decision["principal"])
        if role is None:
            continue
        action, resource = decision["action"], decision.get("resource") or "*"
        if not decision["allowed"]:
            role.missing[action].add(resource)
            continue
        role.used[action].add(resource)
        for grant in role.grants:
            if glob_match(grant.action, action, ignore_case=True) and (
                    resource == "*" or any(glob_match(r, resource) for r in grant.resources)):
                grant.used = True
    for role in usage.values():  # a refusal later allowed on the same resource (a retry after a fix) is not missing
        for action in list(role.missing):
            role.missing[action] -= role.used.get(action, set())
            if not role.missing[action]:
                del role.missing[action]
    return sorted(usage.values(), key=lambda u: u.role)


def read_decisions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise SystemExit(f"no IAM decisions at {path}: run the stack with LOCAL_AWS_IAM=enforce first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def role_policies(iam: Any, prefix: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{role ARN: {policy name: document}} of the stack's roles named ``prefix*`` (inline and attached)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            if not role["RoleName"].startswith(prefix):
                continue
            documents = {}
            for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
                document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
                documents[name] = json.loads(document) if isinstance(document, str) else document
            for attached in iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]:
                policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
                version = iam.get_policy_version(PolicyArn=attached["PolicyArn"],
                                                 VersionId=policy["DefaultVersionId"])["PolicyVersion"]
                document = version["Document"]
                documents[attached["PolicyName"]] = json.loads(document) if isinstance(document, str) else document
            found[role["Arn"]] = documents
    return found


def stack_usage(settings: Any, decisions: Path | None = None, prefix: str = "surgical-") -> list[RoleUsage]:
    """The usages of a stack's roles named ``prefix*``: its decision record (or ``decisions``) against their
    policies in its IAM."""
    from local_aws.bootstrap import client

    return analyse(read_decisions(decisions or settings.iam_decisions), role_policies(client(settings, "iam"), prefix))


def report(usages: list[RoleUsage]) -> str:
    lines = [f"{'role':<44} {'used':>5} {'granted':>8} {'missing':>8} {'unused':>7}", "-" * 76]
    for u in usages:
        lines.append(f"{u.role.rsplit('/', 1)[-1]:<44} {len(u.used):>5} {len(u.grants):>8} {len(u.missing):>8} "
                     f"{len(u.unused):>7}")
    for u in usages:
        name = u.role.rsplit("/", 1)[-1]
        for action, resources in sorted(u.missing.items()):
            lines.append(f"MISSING  {name}: {action} on {', '.join(sorted(resources)[:3])}"
                         f"{' ...' if len(resources) > 3 else ''}")
        for grant in u.unused:
            lines.append(f"unused   {name}: {grant.policy}/{grant.sid}: {grant.action}")
    used = sum(len(u.used) for u in usages)
    granted = sum(len(u.grants) for u in usages)
    missing = sum(len(u.missing) for u in usages)
    unused = sum(len(u.unused) for u in usages)
    lines.append(f"RESULT iam_usage roles={len(usages)} used={used} granted={granted} missing={missing} "
                 f"unused={unused}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from local_aws.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=Path, help="default: the stack's <LOCAL_AWS_HOME>/iam/decisions.jsonl")
    parser.add_argument("--prefix", default="surgical-", help="report the roles whose names start with this")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    usages = stack_usage(load_settings(), args.decisions, args.prefix)
    print(report(usages))
    if args.json:
        args.json.write_text(json.dumps([u.to_dict() for u in usages], indent=2), encoding="utf-8")
    return 1 if any(u.missing for u in usages) else 0


if __name__ == "__main__":
    sys.exit(main())
