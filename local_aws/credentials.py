"""A botocore ``credential_process``: the temporary credentials of a role as an AWS service assumes it.

On MWAA every Airflow component and task runs as the environment's execution role: boto3's default credential chain
finds the role's credentials, and the ``aws_default`` connection carries none. Locally Airflow's processes get the
same: their environment has no access key, only ``AWS_CONFIG_FILE`` naming a profile whose ``credential_process``
is this module, which asks the stack's IAM (``POST /local/iam/assume-role-as-service`` on moto's port) for the role's
session exactly as the service would get it (the role's trust policy must name the service). botocore calls it again
before the session expires. Stdlib only: it runs once per boto3 session.

    python -m local_aws.credentials --endpoint http://127.0.0.1:4566 --role-arn ARN --service airflow-env.amazonaws.com
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path


def credentials(endpoint: str, role_arn: str, service: str, session_name: str) -> dict[str, object]:
    """The ``credential_process`` answer (``Version`` 1) for the role; raises ``RuntimeError`` with the stack's
    reason."""
    if not endpoint.startswith(("http://", "https://")):
        raise RuntimeError(f"the stack's endpoint must be an http(s) URL, not {endpoint!r}")
    request = urllib.request.Request(  # noqa: S310 - http(s) only (checked above): the stack's moto
        f"{endpoint.rstrip('/')}/local/iam/assume-role-as-service", method="POST",
        data=json.dumps({"role_arn": role_arn, "service": service, "session_name": session_name,
                         "reuse": True}).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http(s) only
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        raise RuntimeError(f"{service} could not assume {role_arn}: {body.get('message', body)}") from None
    except OSError as exc:
        raise RuntimeError(f"cannot reach the local stack's IAM at {endpoint}: {exc}") from None
    return {"Version": 1, "AccessKeyId": answer["AccessKeyId"], "SecretAccessKey": answer["SecretAccessKey"],
            "SessionToken": answer["SessionToken"], "Expiration": answer["Expiration"]}


def config_file(path: Path, endpoint: str, role_arn: str, service: str, session_name: str) -> Path:
    """Write an AWS config file whose default profile gets the role's credentials from this module."""
    command = " ".join([sys.executable, "-m", "local_aws.credentials", "--endpoint", endpoint, "--role-arn", role_arn,
                        "--service", service, "--session-name", session_name])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"[default]\ncredential_process = {command}\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the stack's moto URL")
    parser.add_argument("--role-arn", required=True)
    parser.add_argument("--service", required=True, help="the service principal that assumes the role")
    parser.add_argument("--session-name", default="local")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(credentials(args.endpoint, args.role_arn, args.service, args.session_name)))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
