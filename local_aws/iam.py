"""IAM enforced by the local stack (``LOCAL_AWS_IAM=enforce``), on moto's own policy engine.

On AWS every component runs with its own role and AWS refuses what the role does not allow. moto 5.2.5 can check
requests against IAM (``moto.settings.INITIAL_NO_AUTH_ACTION_COUNT``), but falls short of AWS in ways that would
refuse everything or crash; ``install`` (called in the moto process, ``local_aws.moto_server``) closes those gaps:

- action names: moto builds ``<signing name>:<operation>``; IAM's names differ for some (``monitoring:`` is
  ``cloudwatch:``, ``lambda:Invoke`` is ``lambda:InvokeFunction``, SQS batches are authorised as their single
  action, S3's ``HeadBucket`` is ``s3:ListBucket``, ...): ``iam_action``;
- resources: moto names the resource only for SQS (queue ARN), S3 (bucket/object ARN), IAM role operations and STS
  AssumeRole, and ``"*"`` for everything else. Where it does not know the resource, a statement's ``Resource`` is
  taken as matching (an action-level check): resource-level permissions are checked only where moto or the local
  SageMaker knows the ARN. ``NotResource`` is honoured; ``?`` and ``*`` are IAM's wildcards; actions match
  regardless of case;
- conditions of identity policies are not evaluated: an Allow with a Condition counts as an Allow, a Deny with a
  Condition is ignored (moto would deny every request an unmet Allow condition touches);
- trust policies whose principals are services (``{"Service": ...}``) no longer crash AssumeRole (500), and the
  account root (``arn:aws:iam::<account>:root`` or the account ID) as principal admits the account's principals;
- denials: JSON-protocol services (SQS, DynamoDB, Lambda, Events, Logs, KMS, CloudWatch, ECR) answer
  ``AccessDeniedException`` in their JSON shape (HTTP 400; Lambda 403); query services (IAM, STS, CloudFormation)
  keep the XML ``AccessDenied``; S3 keeps ``AccessDenied`` (403). Every message names the action, as AWS's do:
  ``User: <arn> is not authorized to perform: <action> on resource: <arn> because no identity-based policy allows
  the <action> action``;
- requests without a body (Lambda's GET/DELETE) no longer fail their signature check; an unsigned request is a
  clear 403 (``MissingAuthenticationToken``) instead of a 500;
- CloudFormation ``AWS::IAM::Role``: inline ``Policies`` are stored as JSON documents (moto stored the parsed
  template, which made every request signed by the role fail with a KeyError) and ``ManagedPolicyArns`` are
  attached (moto ignored them).

The harness's principal is the IAM user ``local-admin`` (allow-all) with the fixed key of ``local_aws.settings``.
Two local-only calls on moto's port let other processes reuse this engine instead of a second one:

- ``POST /local/iam/authorize`` ``{"access_key_id", "session_token", "action", "resource", "service_principal"?}``
  -> ``{"allowed", "principal", "message"}``: the caller's identity policies (user: inline, attached, groups; role
  session: the role's inline and attached policies) for one action on one resource (the local SageMaker);
- ``POST /local/iam/assume-role-as-service`` ``{"role_arn", "service", "session_name", "check_only"?}`` -> temporary
  credentials of the role, as an AWS service gets them (SageMaker for jobs, Lambda for functions): no caller
  permission is needed, only the role's trust policy naming that service principal.

Every decision (moto's own request checks and ``/local/iam/authorize``) is recorded once per principal, action,
resource and outcome in ``<LOCAL_AWS_HOME>/iam/decisions.jsonl`` (``{"principal", "action", "resource",
"allowed"}``): ``tools/iam_usage.py`` turns it into the least-privilege report (per role: used vs granted).

Not checked (moto does not model them): resource-based policies (bucket, queue, key policies), permission
boundaries, SCPs, session policies, conditions.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from local_aws.settings import ACCESS_KEY_ID, ACCOUNT_ID, ADMIN_USER, REGION, SECRET_ACCESS_KEY

log = logging.getLogger("local_aws.iam")
PARTITION = "aws"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
SESSION_SECONDS = 12 * 3600

# -- the decisions' record ------------------------------------------------------------------------------------------
_decisions_path: Path | None = None
_decided: set[tuple[str, str, str, bool]] = set()
_decisions_lock = threading.Lock()


def principal_name(principal_arn: str) -> str:
    """A role session's role ARN (``assumed-role/<role>/<session>`` -> ``role/<role>``), else the ARN itself."""
    match = re.match(r"arn:([^:]+):sts::(\d+):assumed-role/([^/]+)/", principal_arn or "")
    return f"arn:{match[1]}:iam::{match[2]}:role/{match[3]}" if match else principal_arn or "?"


def record(principal_arn: str, action: str, resource: str, allowed: bool) -> None:
    """Append a decision to the record (once per principal, action, resource and outcome)."""
    if _decisions_path is None:
        return
    entry = (principal_name(principal_arn), action, resource or "*", allowed)
    with _decisions_lock:
        if entry in _decided:
            return
        _decided.add(entry)
        with _decisions_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(dict(zip(("principal", "action", "resource", "allowed"), entry, strict=True)))
                      + "\n")


# -- action names ---------------------------------------------------------------------------------------------------
# SigV4 signing name -> IAM's service prefix, where they differ.
_SERVICE_PREFIXES = {"monitoring": "cloudwatch"}
# moto's action (operation or S3 ACTION_MAP name) -> the IAM action that authorises it.
_RENAMED = {
    "lambda:Invoke": "lambda:InvokeFunction",
    "lambda:InvokeAsync": "lambda:InvokeFunction",
    "lambda:InvokeWithResponseStream": "lambda:InvokeFunction",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:HeadObject": "s3:GetObject",
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:SelectObject": "s3:GetObject",
    "s3:SelectObjectContent": "s3:GetObject",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
}
# Bucket sub-resources moto's S3 ACTION_MAP does not know: it falls back to ListBucket (GET) or CreateBucket /
# DeleteBucket (PUT / DELETE). Sub-resource -> (IAM action to read it, IAM action to change or delete it).
_S3_SUBRESOURCES = {
    "encryption": ("s3:GetEncryptionConfiguration", "s3:PutEncryptionConfiguration"),
    "ownershipControls": ("s3:GetBucketOwnershipControls", "s3:PutBucketOwnershipControls"),
    "replication": ("s3:GetReplicationConfiguration", "s3:PutReplicationConfiguration"),
    "object-lock": ("s3:GetBucketObjectLockConfiguration", "s3:PutBucketObjectLockConfiguration"),
    "inventory": ("s3:GetInventoryConfiguration", "s3:PutInventoryConfiguration"),
    "intelligent-tiering": ("s3:GetIntelligentTieringConfiguration", "s3:PutIntelligentTieringConfiguration"),
    "metrics": ("s3:GetMetricsConfiguration", "s3:PutMetricsConfiguration"),
    "analytics": ("s3:GetAnalyticsConfiguration", "s3:PutAnalyticsConfiguration"),
}
_S3_BUCKET_DEFAULTS = {"s3:ListBucket": 0, "s3:CreateBucket": 1, "s3:DeleteBucket": 1}


def iam_action(action: str, query: str = "") -> str:
    """The IAM action for moto's ``<signing name>:<action>`` (``query``: the request's query string, for S3)."""
    service, _, name = action.partition(":")
    action = f"{_SERVICE_PREFIXES.get(service, service)}:{name}"
    if action.startswith("s3:") and query:
        keys = set(parse_qs(query, keep_blank_values=True))
        if action in _S3_BUCKET_DEFAULTS:
            for sub, names in _S3_SUBRESOURCES.items():
                if sub in keys:
                    return names[_S3_BUCKET_DEFAULTS[action]]
        if action == "s3:GetObject" and "versionId" in keys:
            return "s3:GetObjectVersion"
    return _RENAMED.get(action, action)


def denial_message(principal_arn: str, action: str, resource: str = "*", reason: str = "implicit") -> str:
    """AWS's AccessDenied text: ``reason`` is ``implicit`` (no Allow), ``explicit`` (a Deny) or ``trust``."""
    where = f" on resource: {resource}" if resource and resource != "*" else ""
    because = {"implicit": f" because no identity-based policy allows the {action} action",
               "explicit": " with an explicit deny in an identity-based policy"}.get(reason, "")
    return f"User: {principal_arn} is not authorized to perform: {action}{where}{because}"


def could_not_assume(role_arn: str, service: str) -> str:
    """SageMaker's text for a role it cannot assume (missing, or not trusting the service)."""
    return (f"Could not assume role {role_arn}. Please ensure that the role exists and allows principal "
            f"'{service}' to assume the role.")


# -- policy evaluation ----------------------------------------------------------------------------------------------
def as_list(value: Any) -> list[Any]:
    """A policy element as a list (IAM allows one value or a list: Action, Resource, Principal.Service, ...)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def glob_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character; everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in str(pattern))
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _policy_argument(policy: Any) -> Any:
    """What moto's ``IAMPolicy`` accepts: a parsed document (CloudFormation's shape) becomes its JSON text."""
    if isinstance(policy, dict) and "policy_document" not in policy:
        return json.dumps(policy)
    if isinstance(policy, dict) and not isinstance(policy["policy_document"], str):
        return json.dumps(policy["policy_document"])
    return policy


def evaluate(policies: Iterable[Any], action: str, resource: str = "*") -> str:
    """``allowed``, ``explicit`` (a Deny matched) or ``implicit`` (no Allow matched) for identity policies."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    allowed = False
    for policy in policies:
        result = IAMPolicy(_policy_argument(policy)).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            return "explicit"
        allowed = allowed or result == PermissionResult.PERMITTED
    return "allowed" if allowed else "implicit"


def trusts(trust_policy: Any, service: str, action: str = "sts:AssumeRole") -> bool:
    """Whether a role's trust policy lets the AWS service principal ``service`` assume it (conditions not checked)."""
    document = json.loads(trust_policy) if isinstance(trust_policy, str) else (trust_policy or {})
    allowed = False
    for statement in as_list(document.get("Statement")):
        if "NotAction" in statement:
            concerned = not any(glob_match(p, action, True) for p in as_list(statement["NotAction"]))
        else:
            concerned = any(glob_match(p, action, True) for p in as_list(statement.get("Action")))
        principal = statement.get("Principal")
        named = principal == "*" or (isinstance(principal, dict) and (
            service in as_list(principal.get("Service")) or "*" in as_list(principal.get("AWS"))))
        if not (concerned and named):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def principal_names(principal_arn: str) -> set[str]:
    """The ways a trust policy can name this principal: itself, its role (a role session), its account."""
    names = {principal_arn}
    parts = principal_arn.split(":", 5)
    if len(parts) == 6:
        account, resource = parts[4], parts[5]
        names |= {account, f"arn:{parts[1]}:iam::{account}:root"}
        if resource.startswith("assumed-role/"):
            names.add(f"arn:{parts[1]}:iam::{account}:role/{resource.split('/')[1]}")
    return names


# -- the moto patches -----------------------------------------------------------------------------------------------
_installed = False
_JSON_CODES = {"AccessDenied": "AccessDeniedException", "InvalidClientTokenId": "UnrecognizedClientException",
               "SignatureDoesNotMatch": "InvalidSignatureException",
               "MissingAuthenticationToken": "MissingAuthenticationTokenException"}
_REST_JSON_SERVICES = {"lambda"}  # rest-json: no X-Amz-Target; AWS answers 403 for these
_QUERY_COMPATIBLE = {"sqs", "monitoring"}  # JSON services botocore maps back to their query error codes


def credential_scope(authorization: str) -> list[str]:
    """``AKID/date/region/service/aws4_request`` of a SigV4 Authorization header, split (empty when unsigned)."""
    match = re.search(r"Credential=([^,\s]+)", authorization or "")
    return match.group(1).split("/") if match else []


def is_json_request(headers: Any, service: str) -> bool:
    content_type = str(headers.get("Content-Type") or "")
    return bool(headers.get("X-Amz-Target")) or content_type.startswith("application/x-amz-json") or \
        service in _REST_JSON_SERVICES


def _patch_evaluation() -> None:
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

    original = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self: Any, action: str, resource: str = "*", principal: str | None = None,
                            incoming_condition_values: dict[str, str] | None = None) -> Any:
        statement = self._statement
        if principal is None:  # an identity policy (a trust policy is evaluated with the caller as principal)
            if "Condition" in statement:
                if statement.get("Effect") == "Deny":
                    return PermissionResult.NEUTRAL
                statement = {k: v for k, v in statement.items() if k != "Condition"}
            if "NotResource" in statement:
                excluded = resource != "*" and any(glob_match(p, resource) for p in
                                                   as_list(statement["NotResource"]))
                if excluded:
                    return PermissionResult.NEUTRAL
                statement = {**{k: v for k, v in statement.items() if k != "NotResource"}, "Resource": "*"}
            elif resource == "*" and "Resource" in statement:
                statement = {**statement, "Resource": "*"}  # moto does not know the resource: action-level check
        return original(IAMPolicyStatement(statement), action, resource, principal, incoming_condition_values)

    def check_element_matches(self: Any, element: str, value: str) -> bool:
        ignore_case = element in ("Action", "NotAction")
        return any(glob_match(p, value, ignore_case) for p in as_list(self._statement[element]))

    def check_principal(self: Any, principal: str) -> bool:
        expected = self._statement.get("Principal")
        if not expected or expected == "*":
            return True
        aws = expected.get("AWS") if isinstance(expected, dict) else None
        names = principal_names(principal)
        return any(p == "*" or p in names for p in as_list(aws))

    IAMPolicyStatement.is_action_permitted = is_action_permitted
    IAMPolicyStatement._check_element_matches = check_element_matches
    IAMPolicyStatement._check_principal = check_principal


def _patch_requests() -> None:
    from moto.core.exceptions import AccessDeniedError, _RESTError
    from moto.iam.access_control import IAMRequest, IAMRequestBase, S3IAMRequest
    from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError

    class Denied(AccessDeniedError):
        def __init__(self, message: str) -> None:
            _RESTError.__init__(self, "AccessDenied", message)

    class MissingAuthenticationToken(_RESTError):
        code = 403

        def __init__(self) -> None:
            super().__init__("MissingAuthenticationToken", "Request is missing Authentication Token: the local "
                             "stack enforces IAM (LOCAL_AWS_IAM=enforce), sign the request with SigV4")

    original_init = IAMRequestBase.__init__
    original_create_request = IAMRequestBase._create_aws_request
    original_check_signature = IAMRequestBase.check_signature

    def init(self: Any, account_id: str, method: str, path: str, data: Any, body: bytes, headers: Any,
             action: str) -> None:
        query = parse_qs(path.partition("?")[2])
        credential = (query.get("X-Amz-Credential") or [""])[0] or (  # SigV4 query, else SigV2 (boto3's default)
            f"{query['AWSAccessKeyId'][0]}/19700101/{REGION}/s3/aws4_request" if "AWSAccessKeyId" in query else "")
        presigned = not credential_scope(headers.get("Authorization", "")) and bool(credential)
        if presigned:  # a presigned URL: the signer is in the query, not the headers
            headers = dict(headers)
            signature = (query.get("X-Amz-Signature") or query.get("Signature") or [""])[0]
            headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, "
                                        f"Signature={signature}")
            token = query.get("X-Amz-Security-Token") or query.get("x-amz-security-token")
            if token:
                headers["X-Amz-Security-Token"] = token[0]
        if not credential_scope(headers.get("Authorization", "")):
            if isinstance(self, S3IAMRequest):
                error = S3AccessDeniedError()
                error.message = "Anonymous access is refused: the local stack enforces IAM (LOCAL_AWS_IAM=enforce)"
                raise error
            raise MissingAuthenticationToken()
        original_init(self, account_id, method, path, data, body, headers, action)
        self._action = iam_action(self._action, path.partition("?")[2])
        self._presigned = presigned

    def check_signature(self: Any) -> None:
        if getattr(self, "_presigned", False):
            return  # not verified (moto checks header signatures only): the signer's policies still decide
        original_check_signature(self)

    def create_aws_request(self: Any) -> Any:
        request = original_create_request(self)
        if not self._body and self._method in ("GET", "HEAD", "DELETE"):
            request.data = b""  # moto signed its parsed parameters in place of the empty body: never matched
        return request

    def check_action_permitted(self: Any, resource: str) -> None:
        self._local_resource = resource
        if self._action == "sts:GetCallerIdentity":  # always allowed, even with an explicit Deny
            return
        outcome = evaluate(self._access_key.collect_policies(), self._action, resource)
        if outcome == "allowed" and self._is_assuming_role_operation(resource) and \
                not self._check_role_trust_relationship(resource):
            outcome = "trust"
        record(self._access_key.arn, self._action, resource, outcome == "allowed")
        if outcome != "allowed":
            self._local_reason = outcome
            self._raise_access_denied()

    def message(self: Any) -> str:
        return denial_message(self._access_key.arn, self._action, getattr(self, "_local_resource", "*"),
                              getattr(self, "_local_reason", "implicit"))

    def raise_denied(self: Any) -> None:
        raise Denied(message(self))

    def raise_s3_denied(self: Any) -> None:
        data = self._data if isinstance(self._data, dict) else {}
        error = BucketAccessDeniedError(bucket=data["BucketName"]) if "BucketName" in data else S3AccessDeniedError()
        error.message = message(self)
        raise error

    IAMRequestBase.__init__ = init
    IAMRequestBase.check_signature = check_signature
    IAMRequestBase._create_aws_request = create_aws_request
    IAMRequestBase.check_action_permitted = check_action_permitted
    IAMRequest._raise_access_denied = raise_denied
    S3IAMRequest._raise_access_denied = raise_s3_denied


def _patch_denial_shape() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from werkzeug.exceptions import HTTPException

    class JsonDenial(HTTPException):
        def __init__(self, status: int, body: str) -> None:
            super().__init__(description=body)
            self.code = status

    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def authenticate(self: Any, resource: str = "*") -> None:
        try:
            original(self, resource)
        except HTTPException as exc:
            error_type = getattr(exc, "error_type", None)
            scope = credential_scope(self.headers.get("Authorization", ""))
            service = scope[3] if len(scope) > 3 else ""
            if not error_type or not is_json_request(self.headers, service):
                raise
            code = _JSON_CODES.get(error_type, error_type)
            content_type = str(self.headers.get("Content-Type") or "")
            headers = {"Content-Type": content_type if content_type.startswith("application/x-amz-json")
                       else "application/json", "x-amzn-ErrorType": code}
            if service in _QUERY_COMPATIBLE:
                headers["x-amzn-query-error"] = f"{error_type};Sender"
            self.response_headers.update(headers)
            body: dict[str, str] = {"__type": code, "message": getattr(exc, "message", str(exc))}
            if service in _REST_JSON_SERVICES:
                body["Type"] = "User"
            raise JsonDenial(403 if service in _REST_JSON_SERVICES else 400, json.dumps(body)) from None

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authenticate


def _patch_cloudformation_roles() -> None:
    from moto.iam.models import Role, iam_backends

    original_put = Role.put_policy
    original_create = Role.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def put_policy(self: Any, policy_name: str, policy_json: Any) -> None:
        original_put(self, policy_name, policy_json if isinstance(policy_json, str) else json.dumps(policy_json))

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: dict[str, Any],
                                        account_id: str, region_name: str, **kwargs: Any) -> Any:
        role = original_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = iam_backends[account_id][PARTITION]
        for arn in cloudformation_json.get("Properties", {}).get("ManagedPolicyArns", []) or []:
            try:
                backend.attach_role_policy(arn, role.name)
            except Exception as exc:  # an AWS managed policy moto does not carry: say so, keep the role
                log.warning("role %s: managed policy %s not attached: %s", role.name, arn, exc)
        return role

    Role.put_policy = put_policy
    Role.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)


def ensure_admin() -> None:
    """The IAM user ``local-admin`` with an allow-all inline policy and the fixed access key of the settings."""
    from moto.iam.models import iam_backends

    backend = iam_backends[ACCOUNT_ID][PARTITION]
    if ADMIN_USER not in backend.users:
        backend.create_user(REGION, ADMIN_USER)
    backend.put_user_policy(ADMIN_USER, "allow-all", json.dumps(ADMIN_POLICY))
    if ACCESS_KEY_ID not in backend.access_keys:
        key = backend.create_access_key(ADMIN_USER)
        del backend.access_keys[key.access_key_id]  # the backend's index is by key ID: re-file it under the fixed one
        key.access_key_id, key.secret_access_key = ACCESS_KEY_ID, SECRET_ACCESS_KEY
        backend.access_keys[ACCESS_KEY_ID] = key


def install(enforce: bool, decisions: Path | None = None) -> None:
    """Patch moto (once) and create the admin principal; ``enforce`` turns moto's request checks on now;
    ``decisions``: the file every decision is appended to."""
    global _installed, _decisions_path
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    if not _installed:
        _patch_evaluation()
        _patch_requests()
        _patch_denial_shape()
        _patch_cloudformation_roles()
        _installed = True
    ensure_admin()
    if decisions is not None:
        decisions.parent.mkdir(parents=True, exist_ok=True)
        _decisions_path = decisions
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if enforce else float("inf")
    ActionAuthenticatorMixin.request_count = 0


# -- the local-only calls -------------------------------------------------------------------------------------------
class IamCallError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def authorize(access_key_id: str, session_token: str | None, action: str, resource: str = "*",
              service_principal: str | None = None) -> dict[str, Any]:
    """The caller's identity policies for ``action`` on ``resource`` (``service_principal`` is accepted for
    ``iam:PassRole``; conditions such as ``iam:PassedToService`` are not evaluated)."""
    from moto.iam.access_control import CreateAccessKeyFailure, create_access_key

    headers = {"X-Amz-Security-Token": session_token} if session_token else {}
    try:
        principal = create_access_key(account_id=ACCOUNT_ID, partition=PARTITION, access_key_id=access_key_id or "",
                                      headers=headers)
    except CreateAccessKeyFailure:
        return {"allowed": False, "principal": None, "error": "UnrecognizedClientException",
                "message": "The security token included in the request is invalid."}
    outcome = evaluate(principal.collect_policies(), action, resource or "*")
    allowed = outcome == "allowed"
    record(principal.arn, action, resource or "*", allowed)
    return {"allowed": allowed, "principal": principal.arn,
            "message": "" if allowed else denial_message(principal.arn, action, resource or "*", outcome)}


_sessions: dict[tuple[str, str, str], tuple[float, dict[str, str]]] = {}
_sessions_lock = threading.Lock()


def assume_role_as_service(role_arn: str, service: str, session_name: str, check_only: bool = False,
                           reuse: bool = False) -> dict[str, str]:
    """Temporary credentials of ``role_arn`` as the AWS service ``service`` gets them (only the role's trust policy
    decides); raises :class:`IamCallError` when the role does not exist or does not trust the service.
    ``reuse``: hand out the same session again while it has more than an hour left (the Lambda runner)."""
    from moto.iam.exceptions import NotFoundException
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    backend = iam_backends[ACCOUNT_ID][PARTITION]
    try:
        role = backend.get_role_by_arn(role_arn)
    except NotFoundException:
        raise IamCallError(404, "NoSuchEntity", f"{could_not_assume(role_arn, service)} (the role {role_arn} "
                                                "does not exist)") from None
    if not trusts(role.assume_role_policy_document, service):
        raise IamCallError(403, "AccessDenied", f"{could_not_assume(role_arn, service)} (its trust policy does not "
                                                f"allow {service} to sts:AssumeRole)")
    if check_only:
        return {"RoleArn": role_arn}
    key = (role_arn, service, session_name)
    with _sessions_lock:
        cached = _sessions.get(key)
        if reuse and cached and cached[0] - time.time() > 3600:
            return cached[1]
        assumed = sts_backends[ACCOUNT_ID][PARTITION].assume_role(
            region_name=REGION, role_session_name=session_name, role_arn=role_arn, policy="",
            duration=SESSION_SECONDS, external_id="")
        credentials = {"AccessKeyId": assumed.access_key_id, "SecretAccessKey": assumed.secret_access_key,
                       "SessionToken": assumed.session_token,
                       "Expiration": assumed.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "AssumedRoleArn": f"arn:{PARTITION}:sts::{ACCOUNT_ID}:assumed-role/{role.name}/{session_name}"}
        _sessions[key] = (time.time() + SESSION_SECONDS, credentials)
    return credentials


def handle(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The local-only routes (``/local/iam/...``): (HTTP status, JSON answer)."""
    try:
        if path == "/local/iam/authorize":
            return 200, authorize(body.get("access_key_id") or "", body.get("session_token"), body["action"],
                                  body.get("resource") or "*", body.get("service_principal"))
        if path == "/local/iam/assume-role-as-service":
            return 200, assume_role_as_service(body["role_arn"], body.get("service") or "sagemaker.amazonaws.com",
                                               body.get("session_name") or "local-service",
                                               bool(body.get("check_only")), bool(body.get("reuse")))
        return 404, {"error": "NotFound", "message": f"no local IAM route {path}"}
    except IamCallError as exc:
        return exc.status, {"error": exc.code, "message": exc.message}
    except KeyError as exc:
        return 400, {"error": "ValidationError", "message": f"missing member {exc}"}
