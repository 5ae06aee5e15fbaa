"""Shared fixtures: a private local AWS stack for the integration tests (own state folder, own free port)."""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

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

collect_ignore = ["container_code"]  # run in each container's test env, by tests/unit/test_container_code.py
T = TypeVar("T")
# The local SageMaker gives a new variant's container LOCAL_SAGEMAKER_HEALTH_TIMEOUT seconds (default 120,
# local_aws/sagemaker/endpoints.py) to answer /ping, after the model's download: a test waits for an endpoint longer
# than that, so the emulator's own verdict (InService, or Failed with its reason) always comes first.
ENDPOINT_WAIT_S = float(os.environ.get("LOCAL_SAGEMAKER_HEALTH_TIMEOUT", "120")) + 120
ENDPOINT_WAITER = {"Delay": 1, "MaxAttempts": int(ENDPOINT_WAIT_S)}  # the endpoint_in_service waiter's WaiterConfig


def wait_for(condition: Callable[[], T], timeout: float, interval: float = 0.5,
             message: str | Callable[[], str] = "the condition was not met") -> T:
    """Polls ``condition`` until it returns something truthy, which is returned; fails the test with ``message`` (a
    text, or a function that describes what was seen) once ``timeout`` seconds have passed. Tests wait on conditions
    with generous deadlines, never on fixed sleeps: a loaded machine only makes them wait longer."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message() if callable(message) else message} (waited {timeout:.0f} s)")
        time.sleep(interval)


def clear_of_the_hour(needed_s: float, after_s: float = 30) -> None:
    """Returns once the next top of the hour (UTC) is at least ``needed_s`` away, sleeping past it if need be.

    Hourly things change at the top of the hour: a Model Monitor schedule's ``cron(0 * ? * * *)`` fires (an execution
    the test did not start), and a CloudWatch alarm with a 3600 s period reads the datapoints of the current clock
    hour only (local_aws/alarms.py aligns periods to multiples of Period). A test whose steps must all fall in one
    hour calls this first, with ``needed_s`` its steps' deadlines; when the hour is too close it starts ``after_s``
    after the hour has turned, and never sooner than that after it (the monitoring scheduler, ticking every
    LOCAL_MONITORING_TICK_S = 10 s, has then started the executions due at the hour)."""
    if needed_s >= 3600 - after_s:
        raise ValueError(f"steps of {needed_s:.0f} s cannot fit in one hour")
    while True:
        into = time.time() % 3600  # seconds since the top of the hour (UTC hours are whole multiples of 3600 s)
        if into >= after_s and 3600 - into >= needed_s:
            return
        time.sleep(after_s - into if into < after_s else 3600 - into + after_s)


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
