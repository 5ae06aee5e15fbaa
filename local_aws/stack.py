"""Start, check and stop the local AWS stack: background processes on loopback with pid files and health checks.

``python -m local_aws up`` starts each service that is not already running and healthy, deploys the infrastructure
(``local_aws.bootstrap``) and writes ``<home>/aws.env``; ``down`` stops exactly the processes it started (by the
pid files, whole process groups); ``status`` reports each service. Starting twice is harmless; a port held by some
other process is a clear error.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from local_aws.settings import ADMIN_USER, REPO_ROOT, StackSettings, iam_mode, load_settings


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int
    health_path: str

    def health_url(self, host: str) -> str:
        return f"http://{host}:{self.port}{self.health_path}"


def services(settings: StackSettings) -> list[Service]:
    return [
        Service("moto", "local_aws.moto_server", settings.moto_port, "/moto-api/config"),
        Service("sagemaker", "local_aws.sagemaker.server", settings.sagemaker_port, "/ping"),
        Service("apigateway", "local_aws.api_gateway", settings.api_gateway_port, "/ping"),
    ]


def _pid_file(settings: StackSettings, service: Service) -> Path:
    return settings.pid_dir / f"{service.name}.pid"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _healthy(host: str, service: Service, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(service.health_url(host), timeout=timeout) as response:  # noqa: S310 - http:// loopback
            return 200 <= response.status < 300
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def code_fingerprint() -> str:
    """Hash of the stack's own code: a running service started from other code is restarted by 'up'."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "local_aws").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _run_fingerprint() -> str:
    """The code and the IAM mode a service runs with: a change of either restarts it."""
    return f"{code_fingerprint()} iam={iam_mode()}"


def iam_banner() -> str:
    """What 'up' prints about IAM: one line when enforced (the default), loud when switched off."""
    if iam_mode() == "enforce":
        return ("  IAM enforced (LOCAL_AWS_IAM=enforce, the default): Airflow runs as the MWAA execution role, jobs "
                f"and endpoints as their execution role, Lambdas as theirs; the harness signs as {ADMIN_USER}")
    rule = "  " + "!" * 100
    return "\n".join([
        rule,
        "  !! IAM NOT ENFORCED (LOCAL_AWS_IAM=off): the stack accepts any request, also what AWS would refuse;",
        "  !! for debugging only: unset LOCAL_AWS_IAM to check every request against its signer's policies again",
        rule])


def _start(settings: StackSettings, service: Service) -> int:
    pid_file = _pid_file(settings, service)
    code_file = pid_file.with_suffix(".code")
    pid = _read_pid(pid_file)
    stale = not code_file.exists() or code_file.read_text() != _run_fingerprint()
    if _alive(pid) and _healthy(settings.host, service) and not stale:
        print(f"  {service.name:<10} already running (pid {pid}) on {service.health_url(settings.host)}")
        return pid  # type: ignore[return-value]
    if _alive(pid) and stale:
        print(f"  {service.name:<10} runs older code or another IAM mode (pid {pid}): restarting it")
        _stop(settings, service)
    if _alive(pid):
        raise StackError(f"{service.name} (pid {pid}) is running but not healthy; run 'make down' and retry")
    if not _port_free(settings.host, service.port):
        raise StackError(
            f"port {service.port} on {settings.host} is in use by a process that is not this stack's {service.name}; "
            f"stop it or choose other ports with LOCAL_AWS_PORT=<base port>"
        )
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.pid_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.log_dir / f"{service.name}.log"
    env = dict(os.environ)
    env.update(settings.aws_environment())
    env.update({"LOCAL_AWS_HOME": str(settings.home), "LOCAL_AWS_PORT": str(settings.base_port),
                "PYTHONPATH": str(REPO_ROOT),
                # The venv's tools (ffmpeg among them) are what a container image carries.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])})
    if service.name == "apigateway":  # infra/api.yaml's function setting, until its Lambda is deployed locally
        from include.config import build_config

        env.setdefault("API_DETECT_ENDPOINT_NAME", build_config("local").endpoint_name)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", service.module, "--port", str(service.port)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: 'down' stops it and every child
        )
    pid_file.write_text(str(proc.pid))
    code_file.write_text(_run_fingerprint())
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{service.name} exited with status {proc.returncode} at start; see {log_file}")
        if _healthy(settings.host, service, timeout=1.0):
            print(f"  {service.name:<10} started (pid {proc.pid}) on {service.health_url(settings.host)}")
            return proc.pid
        time.sleep(0.2)
    raise StackError(f"{service.name} did not become healthy within 60 s; see {log_file}")


def stop_process_group(pid_file: Path, label: str, grace_s: float) -> None:
    """Stop the process group a pid file names (SIGTERM, then SIGKILL after ``grace_s``) and remove the file."""
    pid = _read_pid(pid_file)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass
        deadline = time.time() + grace_s
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]
        print(f"  {label} stopped (pid {pid})")
    pid_file.unlink(missing_ok=True)


def _stop(settings: StackSettings, service: Service) -> None:
    pid_file = _pid_file(settings, service)
    stop_process_group(pid_file, f"{service.name:<10}", grace_s=10)
    pid_file.with_suffix(".code").unlink(missing_ok=True)


def write_env_file(settings: StackSettings) -> Path:
    lines = ["# Written by 'make up': point AWS clients at the local stack. Usage: source .local/aws.env"]
    lines += [f"export {key}={value}" for key, value in settings.aws_environment().items()]
    lines.append(f"export API_GATEWAY_URL={settings.api_gateway_url}")  # POST $API_GATEWAY_URL/detect
    settings.env_file.parent.mkdir(parents=True, exist_ok=True)
    settings.env_file.write_text("\n".join(lines) + "\n")
    return settings.env_file


def up(settings: StackSettings | None = None, quiet: bool = False) -> StackSettings:
    from local_aws import bootstrap

    settings = settings or load_settings()
    print(f"local AWS stack in {settings.home}")
    print(iam_banner())  # also checks LOCAL_AWS_IAM before anything starts
    started = []
    try:
        for service in services(settings):
            _start(settings, service)
            started.append(service)
    except StackError:
        for service in started:
            _stop(settings, service)
        raise
    env_file = write_env_file(settings)
    bootstrap.deploy(settings)
    if not quiet:
        print(f"  detection API: POST {settings.api_gateway_url}/detect")
        print(f"  endpoints and the {ADMIN_USER} credentials: {env_file}  (source it in a shell)")
    return settings


def down(settings: StackSettings | None = None) -> None:
    settings = settings or load_settings()
    for service in reversed(services(settings)):
        _stop(settings, service)


def restart(settings: StackSettings, name: str) -> None:
    """Stop and start one service (its state must survive: tests use this)."""
    service = next(s for s in services(settings) if s.name == name)
    _stop(settings, service)
    _start(settings, service)


def status(settings: StackSettings | None = None) -> bool:
    settings = settings or load_settings()
    all_ok = True
    for service in services(settings):
        pid = _read_pid(_pid_file(settings, service))
        alive, healthy = _alive(pid), _alive(pid) and _healthy(settings.host, service)
        all_ok &= healthy
        state = "healthy" if healthy else ("unhealthy" if alive else "stopped")
        print(f"  {service.name:<10} {state:<9} pid={pid or '-'} {service.health_url(settings.host)}")
    return all_ok
