"""IAM for the local SageMaker (``LOCAL_AWS_IAM=enforce``): who signed a request, and may they do it.

SageMaker is not moto, so the checks moto makes for its services are made here, on moto's own policy engine
(``POST /local/iam/authorize`` on the stack's moto, ``local_aws.iam``) rather than a second one:

- the caller is the access key of the SigV4 ``Authorization`` header (``Credential=AKID/...``) and its
  ``X-Amz-Security-Token``; the signature itself is not verified here (moto verifies it for its own services);
- ``sagemaker:<Operation>`` on the ARN of the resource the request names (``TrainingJobName`` ->
  ``arn:aws:sagemaker:...:training-job/<name>``; ``ResourceArn`` for tags), ``"*"`` for List and other operations;
- ``iam:PassRole`` on every role the request hands to SageMaker (``RoleArn``, nested ones such as
  ``MonitoringScheduleConfig.MonitoringJobDefinition.RoleArn``, ``ExecutionRoleArn`` of CreateModel);
- and that SageMaker can assume each of those roles: the role exists and its trust policy allows
  ``sagemaker.amazonaws.com`` (else AWS's ``ValidationException`` "Could not assume role ...").

Jobs and endpoints then run with their role's temporary credentials (``role_credentials``), as SageMaker runs them
with the execution role. With ``LOCAL_AWS_IAM=off`` (a debugging switch; enforcement is the default) nothing here runs.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

from local_aws.sagemaker.exceptions import (
    AccessDeniedException,
    MissingAuthenticationToken,
    SageMakerError,
    UnrecognizedClientException,
    ValidationException,
)
from local_aws.sagemaker.resources import KINDS
from local_aws.settings import iam_enforced

SERVICE = "sagemaker.amazonaws.com"
ROLE_MEMBERS = ("RoleArn", "ExecutionRoleArn")
_VERBS = ("Create", "Describe", "Delete", "Stop", "Start", "Update")
_TAG_OPERATIONS = ("AddTags", "DeleteTags", "ListTags")


class RoleAssumptionError(Exception):
    """SageMaker cannot assume the role (missing, or its trust policy does not allow the service)."""


def caller(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(access key id, session token) of a SigV4-signed request; (None, None) when it is not signed."""
    match = re.search(r"Credential=([^/,\s]+)/", headers.get("Authorization") or "")
    return (match.group(1) if match else None), (headers.get("X-Amz-Security-Token") or None)


def resource_arn(operation: str, body: Mapping[str, Any]) -> str:
    """The ARN IAM authorises ``operation`` on: the named resource's, or ``"*"`` (List and other operations)."""
    if operation in _TAG_OPERATIONS:
        return str(body.get("ResourceArn") or "*")
    for verb in _VERBS:
        if operation.startswith(verb) and operation[len(verb):] in KINDS:
            spec = KINDS[operation[len(verb):]]
            name = body.get(spec.name_member) or body.get(spec.arn_member)
            if spec.name == "ModelPackage" and not name and body.get("ModelPackageGroupName"):
                # a new version of a group: authorised on the group's versions, model-package/<group>/* (the ARNs
                # versions get, as AWS's model-registry resource policies name them)
                name = f"{body['ModelPackageGroupName']}/*"
            if isinstance(name, str) and name:
                return name if name.startswith("arn:") else spec.arn(name)
    return "*"


def role_arns(body: Any) -> list[str]:
    """Every role the request hands to SageMaker (``RoleArn``/``ExecutionRoleArn`` at any depth), in order."""
    found: list[str] = []

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ROLE_MEMBERS and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    for arn in walk(body):
        if arn not in found:
            found.append(arn)
    return found


def _moto(path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
    if not url:
        raise SageMakerError("LOCAL_AWS_IAM=enforce needs AWS_ENDPOINT_URL (the stack's moto) to check IAM")
    request = urllib.request.Request(url + path, data=json.dumps(payload).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the stack's moto on loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError as exc:
        raise SageMakerError(f"cannot reach the stack's IAM at {url}: {exc}") from exc


def _check(key: str, token: str | None, action: str, resource: str, service: str | None = None) -> None:
    status, answer = _moto("/local/iam/authorize", {"access_key_id": key, "session_token": token, "action": action,
                                                    "resource": resource, "service_principal": service})
    if status != 200:
        raise SageMakerError(f"the stack's IAM failed: {answer.get('message', answer)}")
    if answer.get("error") == "UnrecognizedClientException":
        raise UnrecognizedClientException(answer["message"])
    if not answer.get("allowed"):
        raise AccessDeniedException(answer.get("message") or f"not authorized to perform: {action}")


def can_assume(role_arn: str) -> None:
    """ValidationException unless the role exists and trusts sagemaker.amazonaws.com (AWS's text)."""
    status, _ = _moto("/local/iam/assume-role-as-service", {"role_arn": role_arn, "service": SERVICE,
                                                            "session_name": "SageMaker", "check_only": True})
    if status in (403, 404):
        raise ValidationException(f"Could not assume role {role_arn}. Please ensure that the role exists and allows "
                                  f"principal '{SERVICE}' to assume the role.")
    if status != 200:
        raise SageMakerError(f"the stack's IAM failed to check role {role_arn}")


def authorize(operation: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Enforce mode: refuse the request as AWS would (no-op when ``LOCAL_AWS_IAM`` is off)."""
    if not iam_enforced():
        return
    key, token = caller(headers)
    if not key:
        raise MissingAuthenticationToken("Missing Authentication Token: the local stack enforces IAM "
                                         "(LOCAL_AWS_IAM=enforce); sign the request with SigV4")
    _check(key, token, f"sagemaker:{operation}", resource_arn(operation, body))
    roles = role_arns(body)
    for role in roles:
        _check(key, token, "iam:PassRole", role, SERVICE)
    for role in roles:
        can_assume(role)


def role_credentials(role_arn: str, session_name: str = "SageMaker", service: str = SERVICE) -> dict[str, str]:
    """The role's temporary credentials as ``AWS_*`` variables, as the service assumes it for a job or endpoint;
    raises :class:`RoleAssumptionError` with the reason."""
    status, answer = _moto("/local/iam/assume-role-as-service", {"role_arn": role_arn, "service": service,
                                                                 "session_name": session_name})
    if status != 200:
        raise RoleAssumptionError(answer.get("message") or f"could not assume role {role_arn}")
    return {"AWS_ACCESS_KEY_ID": answer["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
            "AWS_SESSION_TOKEN": answer["SessionToken"]}


def s3_client(credentials: Mapping[str, str]) -> Any:
    """A boto3 S3 client with the role's credentials (endpoint and region from the standard variables)."""
    import boto3

    return boto3.client("s3", aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=credentials["AWS_SESSION_TOKEN"])
