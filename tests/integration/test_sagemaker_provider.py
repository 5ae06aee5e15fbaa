"""The Amazon provider's own operators and sensors run green against the local SageMaker, through dag.test()."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from local_aws.settings import REPO_ROOT, StackSettings

pytestmark = pytest.mark.integration
DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="module")
def airflow_env(local_stack: StackSettings, toy_image: str, tmp_path_factory: pytest.TempPathFactory,
                aws) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, **local_stack.aws_environment(),
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
           # aws_default carries no endpoint: the clients find the local stack through AWS_ENDPOINT_URL_*.
           "AIRFLOW_CONN_AWS_DEFAULT": '{"conn_type": "aws"}',
           "PYTHONPATH": str(REPO_ROOT), "TOY_IMAGE": toy_image}
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    return env


def dag_test(env: dict[str, str], dag_id: str, aws) -> tuple[dict[str, str], str]:
    run = uuid.uuid4().hex[:8]
    s3 = aws("s3")
    for name, text in (("a.txt", "1 2 3"), ("b.txt", "4 5 6")):
        s3.put_object(Bucket="surgical-models", Key=f"toy-{run}/in/{name}", Body=text.encode())
    script = (f"from tests.integration.dags.{dag_id} import dag\n"
              "run = dag.test()\n"
              "for ti in run.get_task_instances():\n"
              "    print(f'TASK {ti.task_id} {ti.state}')\n")
    result = subprocess.run([sys.executable, "-c", script], env={**env, "TOY_RUN": run}, capture_output=True,
                            text=True, timeout=420, cwd=REPO_ROOT)
    output = result.stdout + result.stderr
    states = dict(re.findall(r"^TASK (\S+) (\S+)$", result.stdout, flags=re.M))
    assert states, output[-5000:]
    return states, output


def test_provider_operators_and_sensors_run_green(airflow_env, aws):
    states, output = dag_test(airflow_env, "provider_green", aws)
    assert set(states.values()) == {"success"}, {k: v for k, v in states.items() if v != "success"} or output[-4000:]
    assert len(states) == 16
    # The training job's own log lines reach the task log through the provider's CloudWatch tailing.
    assert re.search(r"epoch=2 loss=0\.3333", output), output[-4000:]


def test_failing_jobs_fail_their_tasks_with_the_reason(airflow_env, aws):
    states, output = dag_test(airflow_env, "provider_failures", aws)
    assert states == {"process_fails": "failed", "train_times_out": "success", "train_sensor": "failed"}
    assert "SageMaker resource failed because AlgorithmError: toy processing failed on purpose" in output
    assert "Sagemaker job failed for the following reason: MaxRuntimeExceeded" in output, output[-4000:]
