"""Run the project's DAGs locally with ``dag.test()`` against the local stack (the demo and the tests use it).

Each run is a fresh process with the environment a local Airflow worker has: its own ``AIRFLOW_HOME`` with a migrated
SQLite metadata database, the ``aws_default`` connection without an endpoint or credentials (clients find the stack
through the standard ``AWS_ENDPOINT_URL_*`` variables), the MWAA execution role's credentials from boto3's default
chain as on MWAA (``local_aws.credentials``: no access key in the environment), and the DAGs and plugins folders on
``sys.path`` as on MWAA.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from local_aws import credentials
from local_aws.label_studio import server as label_studio
from local_aws.settings import AIRFLOW_SERVICE, REPO_ROOT, StackSettings

DAGS = REPO_ROOT / "dags"
PLUGINS = REPO_ROOT / "plugins"


def airflow_environment(settings: StackSettings, home: Path, role_arn: str | None = "") -> dict[str, str]:
    """The environment of an Airflow process using the stack; migrates ``home``'s metadata DB on first use.
    ``role_arn``: the role its processes run as (default: the local MWAA execution role; another stage's for that
    stage's Airflow); ``None``: the harness's admin keys, for test DAGs that are not the pipeline's."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.aws_environment(),
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW_CONN_AWS_DEFAULT": '{"conn_type": "aws"}', "PYTHONPATH": str(REPO_ROOT),
           **label_studio.airflow_environment(settings)}
    if role_arn is not None:
        env.update(worker_credentials(settings, home, role_arn or settings.airflow_role_arn))
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.pop(name, None)  # the harness signs as the local admin; Airflow runs as its role
    if not (home / "airflow.db").exists():
        subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                       capture_output=True)
    return env


def worker_credentials(settings: StackSettings, home: Path, role_arn: str) -> dict[str, str]:
    """The variables that make boto3's default chain give the MWAA execution role's session (an AWS config file
    whose default profile's ``credential_process`` assumes it as ``airflow-env.amazonaws.com``; no shared
    credentials file, so a developer's ``~/.aws`` cannot stand in)."""
    config = credentials.config_file(home / "aws-config", settings.moto_url, role_arn, AIRFLOW_SERVICE,
                                     "airflow-worker")
    return {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-none")}


def dag_test(env: dict[str, str], module: str, conf: dict | None = None, dags_folder: Path = DAGS,
             timeout: float = 900) -> tuple[dict[str, str], str]:
    """``dag.test()`` of ``module``'s ``dag``; returns ({task_id[map_index]: state}, the run's log)."""
    script = (f"import json\nfrom {module} import dag\n"
              f"run = dag.test(run_conf=json.loads({json.dumps(json.dumps(conf or {}))}))\n"
              "for ti in run.get_task_instances():\n"
              "    suffix = f'[{ti.map_index}]' if ti.map_index >= 0 else ''\n"
              "    print(f'TASK {ti.task_id}{suffix} {ti.state}')\n")
    path = os.pathsep.join([str(dags_folder), str(PLUGINS), env.get("PYTHONPATH", str(REPO_ROOT))])
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=timeout, env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                                                  "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS), "PYTHONPATH": path})
    output = result.stdout + result.stderr
    return dict(re.findall(r"^TASK (\S+) (\S+)$", result.stdout, flags=re.M)), output
