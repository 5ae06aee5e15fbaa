"""Where the local stack keeps its state and which loopback ports it serves (one place, read by every piece)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
# The harness's principal: moto's IAM user ``local-admin`` (allow-all inline policy) with this fixed access key,
# created when moto starts (``local_aws.iam``). Every harness client (bootstrap, tests, the demo) signs as it; with
# LOCAL_AWS_IAM=enforce it is the only key moto knows besides the ones IAM/STS hand out. Not a secret: it exists
# only inside the local moto, and real AWS credentials must never be needed here.
ADMIN_USER = "local-admin"
ACCESS_KEY_ID = "AKIALOCALSTACKADMIN1"  # pragma: allowlist secret - the local stack's own key, not an AWS one
SECRET_ACCESS_KEY = "local-stack-admin-secret-not-an-aws-key0"  # noqa: S105  # pragma: allowlist secret
# LOCAL_AWS_IAM: "enforce" (the default: moto and the local SageMaker refuse what the caller's IAM policies do not
# allow; Airflow, jobs, endpoints and Lambdas run with their role's credentials) or "off" (debugging: moto accepts any
# request; 'up' says so loudly).
IAM_MODES = ("off", "enforce")
# The role Airflow's components and tasks run as: infra/mwaa.yaml's AirflowExecutionRole, deployed locally with Stage
# "local" (local_aws/bootstrap.py), assumed as MWAA assumes it (service airflow-env.amazonaws.com).
AIRFLOW_ROLE_NAME = "surgical-mwaa-execution-local"
AIRFLOW_SERVICE = "airflow-env.amazonaws.com"


def iam_mode() -> str:
    """The stack's IAM mode from ``LOCAL_AWS_IAM`` (``enforce`` when unset); an unknown value is an error."""
    value = os.environ.get("LOCAL_AWS_IAM", "").strip().lower() or "enforce"
    if value not in IAM_MODES:
        raise ValueError(f"LOCAL_AWS_IAM={value!r}: expected one of {', '.join(IAM_MODES)}")
    return value


def iam_enforced() -> bool:
    return iam_mode() == "enforce"


@dataclass(frozen=True)
class StackSettings:
    home: Path
    host: str
    base_port: int

    @property
    def moto_port(self) -> int:
        return self.base_port

    @property
    def moto_url(self) -> str:
        return f"http://{self.host}:{self.moto_port}"

    @property
    def sagemaker_port(self) -> int:
        return self.base_port + 1

    @property
    def sagemaker_url(self) -> str:
        return f"http://{self.host}:{self.sagemaker_port}"

    @property
    def api_gateway_port(self) -> int:
        return self.base_port + 2

    @property
    def api_gateway_url(self) -> str:
        return f"http://{self.host}:{self.api_gateway_port}"

    @property
    def pid_dir(self) -> Path:
        return self.home / "pids"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def env_file(self) -> Path:
        return self.home / "aws.env"

    @property
    def lambda_dir(self) -> Path:
        return self.home / "lambda"

    @property
    def iam_decisions(self) -> Path:
        """Every IAM decision of the stack, once per principal/action/resource/outcome (``local_aws.iam``)."""
        return self.home / "iam" / "decisions.jsonl"

    @property
    def airflow_role_arn(self) -> str:
        return f"arn:aws:iam::{ACCOUNT_ID}:role/{AIRFLOW_ROLE_NAME}"

    @property
    def truth_dir(self) -> Path:
        """Hidden ground truth of generated videos: read only by the local labeling workforce."""
        return self.home / "truth"

    def aws_environment(self) -> dict[str, str]:
        """The standard botocore variables that point every client at this stack."""
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            # SageMaker and its runtime are served by the local SageMaker, not moto (moto only records jobs).
            "AWS_ENDPOINT_URL_SAGEMAKER": self.sagemaker_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.sagemaker_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "PIPELINE_ENV": "local",
        }


def load_settings(home: str | os.PathLike[str] | None = None, base_port: int | None = None) -> StackSettings:
    home = Path(home or os.environ.get("LOCAL_AWS_HOME") or REPO_ROOT / ".local").resolve()
    port = base_port or int(os.environ.get("LOCAL_AWS_PORT", "4566"))
    # LOCAL_AWS_HOST: where clients reach the stack (loopback; a service name inside docker compose).
    return StackSettings(home=home, host=os.environ.get("LOCAL_AWS_HOST", "127.0.0.1"), base_port=port)
