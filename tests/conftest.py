"""Shared fixtures: a private local AWS stack for the integration tests (own state folder, own free port)."""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_aws import bootstrap, stack
from local_aws.settings import StackSettings, load_settings

# The plugins folder is on sys.path in Airflow (and in plugins.zip on MWAA): the DAGs import from it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))
# Airflow reads its settings once, at import: point it at a scratch home before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "surgical-mlops-test-airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# The test stacks emulate an account that still has Ground Truth and Model Monitor (closed to new customers), so the
# opt-in backends stay tested; the refusal a new account gets is tested with the setting unset.
os.environ.setdefault("LOCAL_SAGEMAKER_OPT_INS", "ground_truth,model_monitor")


@pytest.fixture
def in_process_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in this process (no server): fast unit tests of code that calls AWS through boto3."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("LOCAL_AWS_IAM", "off")  # moto in-process has no IAM to assume roles from
    for name in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    with mock_aws():
        yield


def free_port(count: int = 4) -> int:
    """A base port with ``count`` free ports from it (the stack's services take consecutive ports)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free loopback ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    """The whole stack as 'make up' starts it, on a port of its own so a developer's running stack is untouched."""
    os.environ.setdefault("LOCAL_LAMBDA_RETRY_DELAYS", "0.2,0.2")  # Lambda's async retries, in fractions of s
    settings = load_settings(home=tmp_path_factory.mktemp("local-aws"), base_port=free_port())
    stack.up(settings, quiet=True)
    try:
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture(scope="session")
def aws(local_stack: StackSettings):
    """``aws("s3")``: a boto3 client of the test stack (keyword arguments: botocore Config options)."""
    return lambda service, **config: bootstrap.client(local_stack, service, **config)


@pytest.fixture(scope="session")
def toy_image(local_stack: StackSettings) -> str:
    """The tiny test container (tests/containers/toy) in the stack's image registry."""
    from pathlib import Path

    repository = bootstrap.register_containers(local_stack, [Path(__file__).parent / "containers" / "toy"])[0]
    return bootstrap.image_uri(repository)


@pytest.fixture(scope="session")
def airflow_home(local_stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of an Airflow process using the test stack (a migrated SQLite metadata DB of its own), running as
    the MWAA execution role as on MWAA (IAM is enforced)."""
    from local_aws.airflow_local import airflow_environment

    return airflow_environment(local_stack, tmp_path_factory.mktemp("airflow-home"))


@pytest.fixture(scope="session")
def harness_airflow_home(local_stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Like ``airflow_home`` but signing as the harness's admin: for DAG runs on resources of a test's own (a model
    group or endpoint named for the test, so the e2e tests can share one stack), which the MWAA execution role does
    not grant (its grants name the pipeline's resources only). The loop (tests/e2e/test_loop.py) runs every DAG as
    the role."""
    from local_aws.airflow_local import airflow_environment

    return airflow_environment(local_stack, tmp_path_factory.mktemp("airflow-harness"), role_arn=None)


def run_dag_test(env: dict[str, str], dags_folder: Path, module: str, conf: dict | None = None,
                 timeout: float = 600) -> tuple[dict[str, str], str]:
    """``dag.test()`` of ``module``'s ``dag`` in a fresh process; fails the test when no task ran."""
    from local_aws.airflow_local import dag_test

    states, output = dag_test(env, module, conf, dags_folder, timeout)
    assert states, output[-6000:]
    return states, output
