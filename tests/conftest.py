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
    """Environment of an Airflow process using the test stack (a migrated SQLite metadata DB of its own)."""
    import subprocess
    import sys

    from local_aws.settings import REPO_ROOT

    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, **local_stack.aws_environment(),
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           # aws_default carries no endpoint: clients find the local stack through AWS_ENDPOINT_URL_*.
           "AIRFLOW_CONN_AWS_DEFAULT": '{"conn_type": "aws"}', "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    return env


def run_dag_test(env: dict[str, str], dags_folder: Path, module: str, conf: dict | None = None,
                 timeout: float = 600) -> tuple[dict[str, str], str]:
    """``dag.test()`` of ``module``'s ``dag`` in a fresh process; returns {task_id[map_index]: state} and the log."""
    import json
    import re
    import subprocess
    import sys

    from local_aws.settings import REPO_ROOT

    script = (f"import json\nfrom {module} import dag\n"
              f"run = dag.test(run_conf=json.loads({json.dumps(json.dumps(conf or {}))}))\n"
              "for ti in run.get_task_instances():\n"
              "    suffix = f'[{ti.map_index}]' if ti.map_index >= 0 else ''\n"
              "    print(f'TASK {ti.task_id}{suffix} {ti.state}')\n")
    # The DAGs folder is on sys.path, as on MWAA and in the DAG processor.
    path = os.pathsep.join([str(dags_folder), str(REPO_ROOT / "plugins"), env.get("PYTHONPATH", str(REPO_ROOT))])
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout, env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                                                  "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                                                  "PYTHONPATH": path})
    output = result.stdout + result.stderr
    states = dict(re.findall(r"^TASK (\S+) (\S+)$", result.stdout, flags=re.M))
    assert states, output[-6000:]
    return states, output
