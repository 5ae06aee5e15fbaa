"""The local Label Studio: the open-source annotation server as a process on loopback, beside the local AWS stack.

``python -m local_aws label-studio-up`` (``make label-studio-up``) installs Label Studio into a venv of its own
(``.venv-label-studio``: its pins clash with Airflow's), generates the admin's API token and password into
``<home>/label-studio/credentials.env`` (mode 0600, git-ignored, never printed), and starts
``label-studio start`` on ``127.0.0.1:<base port + 3>`` with its SQLite database and media under
``<home>/label-studio/data``. The Airflow connection ``label_studio_default`` (:func:`airflow_connection`) carries
the URL and the token. Label Studio reaches the local S3 with the endpoint and keys the DAG's S3 client has
(``surgical_mlops.label_studio``); on AWS it uses its task role.

Settings passed to Label Studio, and why:

- ``LABEL_STUDIO_USER_TOKEN`` + ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN``: a known token from the first start
  (legacy ``Authorization: Token <key>``; personal access tokens would need a refresh dance for every call);
- ``LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK``: nobody signs up uninvited;
- ``USE_DEFAULT_BANNED_SUBNETS=false`` with the private ranges banned again: Label Studio's SSRF guard refuses
  storage endpoints on loopback, where the local S3 lives; only loopback is let through.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from local_aws.settings import REPO_ROOT, StackSettings, load_settings
from local_aws.stack import StackError, _alive, _port_free, _read_pid, stop_process_group

VENV = REPO_ROOT / ".venv-label-studio"
HERE = Path(__file__).parent
ADMIN_EMAIL = "admin@surgical-mlops.local"
START_TIMEOUT_S = 180  # the first start migrates its database: about 40 s on 2 cores


def port(settings: StackSettings) -> int:
    return settings.base_port + 3


def url(settings: StackSettings) -> str:
    return f"http://{settings.host}:{port(settings)}"


def home(settings: StackSettings) -> Path:
    return settings.home / "label-studio"


def _pid_file(settings: StackSettings) -> Path:
    return settings.pid_dir / "label-studio.pid"


def executable() -> Path:
    return VENV / "bin" / "label-studio"


def install() -> Path:
    """The Label Studio venv, created and pinned on first use (about 90 s from the package index)."""
    stamp = VENV / ".installed"
    pins = (HERE / "requirements.txt").read_text() + (HERE / "constraints.txt").read_text()
    if stamp.exists() and stamp.read_text() == pins and executable().exists():
        return executable()
    print(f"  installing Label Studio into {VENV} (once)")
    if not (VENV / "bin" / "python").exists():
        # Python 3.11, as its pins were resolved on (Label Studio is a service of its own, not part of MWAA's 3.12)
        from local_aws.container_envs import interpreter

        subprocess.run([str(interpreter("3.11")), "-m", "venv", str(VENV)], check=True)
    result = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", "-r", str(HERE / "requirements.txt"),
                             "-c", str(HERE / "constraints.txt")], capture_output=True, text=True)
    (VENV / "install.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise StackError(f"installing Label Studio failed (pip exit {result.returncode}); see {VENV / 'install.log'}:"
                         f"\n{result.stderr[-3000:]}")
    stamp.write_text(pins)
    return executable()


def credentials(settings: StackSettings) -> dict[str, str]:
    """The admin's token and password: generated once per stack home, kept in a 0600 file outside the repo."""
    path = home(settings) / "credentials.env"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        values = {"LABEL_STUDIO_USERNAME": ADMIN_EMAIL, "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(18),
                  "LABEL_STUDIO_USER_TOKEN": secrets.token_hex(20)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{key}={value}\n" for key, value in values.items()))
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def token(settings: StackSettings) -> str:
    return credentials(settings)["LABEL_STUDIO_USER_TOKEN"]


def airflow_connection(settings: StackSettings) -> dict[str, Any]:
    """``label_studio_default`` for the local stack (``AIRFLOW_CONN_LABEL_STUDIO_DEFAULT`` takes its JSON)."""
    return {"conn_type": "http", "host": settings.host, "port": port(settings), "schema": "http",
            "password": token(settings)}


def airflow_environment(settings: StackSettings) -> dict[str, str]:
    """``AIRFLOW_CONN_LABEL_STUDIO_DEFAULT`` once this stack's Label Studio has credentials, else nothing."""
    if not (home(settings) / "credentials.env").exists():
        return {}
    return {"AIRFLOW_CONN_LABEL_STUDIO_DEFAULT": json.dumps(airflow_connection(settings))}


def healthy(settings: StackSettings, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url(settings)}/health", timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False


def up(settings: StackSettings | None = None) -> StackSettings:
    settings = settings or load_settings()
    pid_file = _pid_file(settings)
    pid = _read_pid(pid_file)
    if _alive(pid) and healthy(settings):
        print(f"  label-studio already running (pid {pid}) on {url(settings)}")
        return settings
    if _alive(pid):
        raise StackError(f"label-studio (pid {pid}) is running but not healthy; run 'make label-studio-down'")
    if not _port_free(settings.host, port(settings)):
        raise StackError(f"port {port(settings)} on {settings.host} is in use by a process that is not this "
                         f"stack's Label Studio; stop it or choose other ports with LOCAL_AWS_PORT=<base port>")
    binary = install()
    data = home(settings) / "data"
    data.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.pid_dir.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "AWS_"))}
    env.update(credentials(settings))
    env.update({"LABEL_STUDIO_BASE_DATA_DIR": str(data), "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "USE_DEFAULT_BANNED_SUBNETS": "false",
                "USER_ADDITIONAL_BANNED_SUBNETS": "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,"
                                                  "100.64.0.0/10,0.0.0.0/32",
                "PYTHONPATH": ""})
    log_file = settings.log_dir / "label-studio.log"
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [str(binary), "start", "--no-browser", "--host", url(settings), "--internal-host", settings.host,
             "--port", str(port(settings))],
            cwd=home(settings), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    pid_file.write_text(str(proc.pid))
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StackError(f"label-studio exited with status {proc.returncode} at start; see {log_file}")
        if healthy(settings, timeout=1.0):
            print(f"  label-studio started (pid {proc.pid}) on {url(settings)}  (login {ADMIN_EMAIL}, password "
                  f"in {home(settings) / 'credentials.env'})")
            return settings
        time.sleep(0.5)
    raise StackError(f"label-studio did not become healthy within {START_TIMEOUT_S} s; see {log_file}")


def down(settings: StackSettings | None = None) -> None:
    stop_process_group(_pid_file(settings or load_settings()), "label-studio", grace_s=10)


def status(settings: StackSettings | None = None) -> bool:
    settings = settings or load_settings()
    pid = _read_pid(_pid_file(settings))
    ok = _alive(pid) and healthy(settings)
    print(f"  label-studio {'healthy' if ok else 'stopped'} pid={pid or '-'} {url(settings)}")
    return ok
