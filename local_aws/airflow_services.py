"""Local Airflow 3 as real services: api-server (UI + REST API), scheduler, dag-processor and triggerer as processes.

``python -m local_aws airflow-up`` (``make airflow-up``) starts each component that is not already running, with one
``AIRFLOW_HOME`` (default ``.local/airflow``: ``airflow.cfg`` with its generated secrets, the SQLite metadata DB, task
logs; ``pids/`` and ``service-logs/`` of the components) and the environment of ``local_aws.airflow_local``: the
``aws_default`` connection without an endpoint, the local stack's ``AWS_ENDPOINT_URL_*``, ``dags/`` and ``plugins/``
of this repository. ``airflow-down`` stops the components by their pid files (whole process groups, as
``local_aws.stack`` does); ``airflow-status`` reads the api-server's ``/api/v2/monitor/health``, which reports the
metadata DB and the heartbeats of the scheduler, dag-processor and triggerer.

Settings (environment, with defaults):

- ``LOCAL_AIRFLOW_HOME`` (``<stack home>/airflow``), ``LOCAL_AIRFLOW_PORT`` (8080): the UI and REST API port;
- ``AIRFLOW_API_USERNAME`` (``admin``) and ``AIRFLOW_API_PASSWORD``: the simple auth manager's one (admin) user;
  without a password one is generated on first start into ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``
  (never committed) and printed; ``$AIRFLOW_HOME/airflow.env`` has the URL and login for shells and the
  ``trigger_drift_retrain`` Lambda (``AIRFLOW_API_URL``/``AIRFLOW_API_USERNAME``/``AIRFLOW_API_PASSWORD``).

Sized for a 2-core laptop or CI box (all settings below in :func:`airflow_service_environment`):

- LocalExecutor on SQLite (Airflow 3 allows it: tasks reach the DB only through the api-server's execution API, so
  the scheduler, dag-processor, triggerer and api-server are the only writers) with ``PARALLELISM=4``: mapped
  per-video jobs and the two fit branches run side by side; the SageMaker jobs themselves run in the local SageMaker;
- one api-server worker; scheduler and triggerer with ``--skip-serve-logs`` (all components share the log folder,
  so no log server processes and no fixed ports 8793/8794);
- one parsing process, each DAG file re-parsed at most every 60 s, the folder re-listed every 60 s;
- DAGs unpaused at creation, so Asset events schedule the downstream DAGs at once.

:class:`AirflowApi` is a small client of the REST API (JWT from ``POST /auth/token``): trigger runs, wait for them,
read task instances and XComs. The demo and the tests drive the pipeline with it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_aws.airflow_local import DAGS, PLUGINS, airflow_environment
from local_aws.settings import REPO_ROOT, StackSettings, load_settings
from local_aws.stack import StackError, _alive, _port_free, _read_pid, stop_process_group

# Start order: the api-server first (the others report to it and the executor's tasks call its execution API).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The health endpoint's name of each component (the api-server answers it: being healthy is its own health).
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"  # pragma: allowlist secret - a file name


@dataclass(frozen=True)
class AirflowSettings:
    stack: StackSettings
    home: Path
    port: int
    username: str = "admin"
    password_override: str | None = None

    @property
    def host(self) -> str:
        return self.stack.host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_dir(self) -> Path:
        return self.home / "pids"

    @property
    def log_dir(self) -> Path:
        return self.home / "service-logs"

    @property
    def passwords_file(self) -> Path:
        return self.home / PASSWORDS_FILE

    @property
    def env_file(self) -> Path:
        return self.home / "airflow.env"

    def password(self) -> str:
        """The user's password: the override, else the one in the passwords file, else a new one written there."""
        stored = {}
        if self.passwords_file.exists():
            stored = json.loads(self.passwords_file.read_text() or "{}")
        password = self.password_override or stored.get(self.username) or secrets.token_urlsafe(12)
        if stored.get(self.username) != password:
            self.home.mkdir(parents=True, exist_ok=True)
            self.passwords_file.write_text(json.dumps({**stored, self.username: password}) + "\n")
            self.passwords_file.chmod(0o600)
        return password


def load_airflow_settings(stack: StackSettings | None = None, home: str | os.PathLike[str] | None = None,
                          port: int | None = None) -> AirflowSettings:
    stack = stack or load_settings()
    home = Path(home or os.environ.get("LOCAL_AIRFLOW_HOME") or stack.home / "airflow").resolve()
    return AirflowSettings(stack=stack, home=home, port=port or int(os.environ.get("LOCAL_AIRFLOW_PORT", "8080")),
                           username=os.environ.get("AIRFLOW_API_USERNAME", "admin"),
                           password_override=os.environ.get("AIRFLOW_API_PASSWORD") or None)


def airflow_service_environment(settings: AirflowSettings) -> dict[str, str]:
    """``airflow_local``'s environment (migrated DB, connection, stack endpoints) plus the services' settings."""
    env = airflow_environment(settings.stack, settings.home)
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "PYTHONPATH": os.pathsep.join([str(DAGS), str(PLUGINS), str(REPO_ROOT)]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),  # 'airflow', ffmpeg
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.url}/execution/",
        "AIRFLOW__API__HOST": settings.host, "AIRFLOW__API__PORT": str(settings.port),
        "AIRFLOW__API__BASE_URL": f"{settings.url}/", "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        # The "Model report" extra link (plugins/surgical_mlops/links.py) opens reports through the local gateway.
        "MODEL_REPORTS_BASE_URL": settings.stack.api_gateway_url,
    })
    return env


def _command(component: str, settings: AirflowSettings) -> list[str]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    if component == "api-server":
        return [airflow, "api-server", "--host", settings.host, "--port", str(settings.port), "--workers", "1"]
    if component in ("scheduler", "triggerer"):
        return [airflow, component, "--skip-serve-logs"]
    return [airflow, component]


def health(settings: AirflowSettings, timeout: float = 2.0) -> dict[str, Any] | None:
    """The api-server's health document (no login needed), or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{settings.url}/api/v2/monitor/health", timeout=timeout) as response:  # noqa: S310 - http:// loopback
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _component_healthy(component: str, document: dict[str, Any] | None) -> bool:
    if document is None:
        return False
    if component == "api-server":
        return (document.get("metadatabase") or {}).get("status") == "healthy"
    return (document.get(HEALTH_KEYS[component]) or {}).get("status") == "healthy"


def _pid_file(settings: AirflowSettings, component: str) -> Path:
    return settings.pid_dir / f"{component}.pid"


def _spawn(settings: AirflowSettings, component: str, env: dict[str, str]) -> int:
    pid = _read_pid(_pid_file(settings, component))
    if _alive(pid):
        print(f"  {component:<14} already running (pid {pid})")
        return pid  # type: ignore[return-value]
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.pid_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.log_dir / f"{component}.log", "ab") as log:
        proc = subprocess.Popen(_command(component, settings), cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: 'down' stops it and its children
    _pid_file(settings, component).write_text(str(proc.pid))
    return proc.pid


def up(settings: AirflowSettings | None = None, timeout: float = 120.0, quiet: bool = False) -> AirflowSettings:
    """Start the components not running yet and wait until the api-server reports all four healthy."""
    settings = settings or load_airflow_settings()
    print(f"local Airflow in {settings.home}")
    api_pid = _read_pid(_pid_file(settings, "api-server"))
    if not _alive(api_pid) and not _port_free(settings.host, settings.port):
        raise StackError(f"port {settings.port} on {settings.host} is in use by a process that is not this "
                         "Airflow's api-server; stop it or choose another port with LOCAL_AIRFLOW_PORT=<port>")
    password = settings.password()
    env = airflow_service_environment(settings)
    pids = {component: _spawn(settings, component, env) for component in COMPONENTS}
    deadline = time.time() + timeout
    pending = list(COMPONENTS)
    while pending and time.time() < deadline:
        document = health(settings)
        for component in list(pending):
            if not _alive(pids[component]):
                log = settings.log_dir / f"{component}.log"
                down(settings)
                raise StackError(f"airflow {component} exited at start; see {log}")
            if _component_healthy(component, document):
                pending.remove(component)
                print(f"  {component:<14} healthy (pid {pids[component]})")
        time.sleep(0.5)
    if pending:
        down(settings)
        raise StackError(f"airflow {', '.join(pending)} not healthy within {timeout:.0f} s; see {settings.log_dir}")
    _write_env_file(settings, password)
    if not quiet:
        print(f"  UI and REST API: {settings.url}  (user {settings.username!r}, password {password!r})")
        print(f"  shell: source {settings.env_file}; logs: {settings.log_dir}")
    return settings


def _write_env_file(settings: AirflowSettings, password: str) -> None:
    settings.env_file.write_text(
        "# Written by 'make airflow-up': the local Airflow's REST API. Usage: source .local/airflow/airflow.env\n"
        f"export AIRFLOW_API_URL={settings.url}\nexport AIRFLOW_API_USERNAME={settings.username}\n"
        f"export AIRFLOW_API_PASSWORD={password}\n")
    settings.env_file.chmod(0o600)


def down(settings: AirflowSettings | None = None) -> None:
    """Stop the components (scheduler first, so no new task starts; the api-server last) and their children."""
    settings = settings or load_airflow_settings()
    for component in ("scheduler", "triggerer", "dag-processor", "api-server"):
        stop_process_group(_pid_file(settings, component), f"{component:<14}", grace_s=20)


def status(settings: AirflowSettings | None = None) -> bool:
    settings = settings or load_airflow_settings()
    document = health(settings)
    all_ok = True
    for component in COMPONENTS:
        pid = _read_pid(_pid_file(settings, component))
        healthy = _alive(pid) and _component_healthy(component, document)
        all_ok &= healthy
        state = "healthy" if healthy else ("unhealthy" if _alive(pid) else "stopped")
        print(f"  {component:<14} {state:<9} pid={pid or '-'}")
    print(f"  UI and REST API: {settings.url}")
    return all_ok


class AirflowApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status, self.body = status, body


class AirflowApi:
    """The REST API ``/api/v2`` of a local Airflow, logged in with a JWT from ``POST /auth/token``."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.url, self.username, self.password, self.timeout = url.rstrip("/"), username, password, timeout
        self._token: str | None = None

    @classmethod
    def for_settings(cls, settings: AirflowSettings) -> AirflowApi:
        return cls(settings.url, settings.username, settings.password())

    def token(self) -> str:
        answer = self._send("POST", "/auth/token", {"username": self.username, "password": self.password}, None)
        return answer["access_token"]

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """``method /api/v2<path>``; logs in (again, when the token expired) as needed."""
        for attempt in range(4):
            self._token = self._token or self.token()
            try:
                return self._send(method, f"/api/v2{path}", body, self._token)
            except AirflowApiError as exc:
                if exc.status == 401 and not attempt:
                    self._token = None
                elif exc.status == 500 and "Database error" in str(exc) and attempt < 3:
                    time.sleep(1 + attempt)  # SQLite is locked by the scheduler for a moment: try again
                else:
                    raise
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: Any, token: str | None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310 - http:// loopback
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http:// loopback
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw.decode(errors="replace")
            raise AirflowApiError(exc.code, method, path, detail) from None
        return json.loads(raw) if raw else None

    # --- what the demo and the tests need --------------------------------------------------------------------------
    def dags(self) -> list[dict[str, Any]]:
        return self.request("GET", "/dags?limit=100")["dags"]

    def import_errors(self) -> list[dict[str, Any]]:
        return self.request("GET", "/importErrors")["import_errors"]

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 120.0) -> list[dict[str, Any]]:
        """The DAGs, once the dag-processor has parsed them all (fails early on an import error)."""
        deadline = time.time() + timeout
        while True:
            dags = self.dags()
            if set(dag_ids) <= {d["dag_id"] for d in dags}:
                return dags
            if errors := self.import_errors():
                raise AirflowApiError(0, "GET", "/importErrors", errors)
            if time.time() > deadline:
                raise TimeoutError(f"DAGs {dag_ids} not parsed within {timeout:.0f} s: found "
                                   f"{sorted(d['dag_id'] for d in dags)}")
            time.sleep(1)

    def set_paused(self, dag_id: str, paused: bool = False) -> dict[str, Any]:
        return self.request("PATCH", f"/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/dags/{dag_id}/dagRuns", body)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns?order_by=-start_date&limit=100")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900.0, poll: float = 2.0) -> dict[str, Any]:
        """The run once it finished (success or failed)."""
        deadline = time.time() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            if time.time() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, str]:
        """``{task_id[map_index]: state}`` of a run (the same shape as ``airflow_local.dag_test``)."""
        answer = self.request("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances?limit=1000")
        return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
                for ti in answer["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}"
        return self.request("GET", f"{path}?deserialize=true&stringify=false")["value"]

    def set_xcom(self, dag_id: str, run_id: str, task_id: str, key: str, value: Any) -> dict[str, Any]:
        return self.request("POST", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries",
                            {"key": key, "value": value})

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/links")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
