"""The MWAA bundle works on its own: installed as MWAA 3.3.1 installs it (a clean Python 3.12 venv, MWAA's required
packages with its airflow_constraints.txt, then the bundle's requirements.txt with safe-pip-install's command under
its essential constraints: tools/mwaa_install.py), every DAG parses there as MWAA's DAG processor parses it (dags/
and the unzipped plugins.zip as MWAA lays them out).

No repository path is on sys.path in the parsing process: only the bundle. One clean install takes ~2 minutes on 2
cores (pip's cache and the local index make it feasible); it runs once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools import mwaa_bundle
from tools.mwaa_bundle import MWAA_CONSTRAINTS, MWAA_HOME
from tools.mwaa_constraints import MWAA_CONSTRAINTS as AIRFLOW_CONSTRAINTS
from tools.mwaa_constraints import pins

pytestmark = pytest.mark.bundle
PARSE_CHECK = mwaa_bundle.REPO_ROOT / "tools" / "mwaa_parse_check.py"
MWAA_INSTALL = mwaa_bundle.REPO_ROOT / "tools" / "mwaa_install.py"
MAX_PARSE_SECONDS = 0.3  # as tests/dags/test_dag_integrity.py


def _lay_out(bundle: mwaa_bundle.Bundle, root: Path) -> Path:
    """The bundle where MWAA puts it: <AIRFLOW_HOME>/dags, <AIRFLOW_HOME>/plugins (unzipped), requirements/."""
    home = root / MWAA_HOME.lstrip("/")
    home.mkdir(parents=True)
    shutil.copytree(bundle.dags, home / "dags")
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        zf.extractall(home / "plugins")
    (home / "requirements").mkdir()
    # The constraint line names MWAA's absolute path: the same path below this root.
    text = bundle.requirements.read_text()
    assert f'--constraint "{MWAA_CONSTRAINTS}"' in text
    (home / "requirements" / "requirements.txt").write_text(text.replace(MWAA_HOME, str(home)))
    (home / "startup.sh").write_bytes(bundle.startup.read_bytes())
    return home


@pytest.fixture(scope="session")
def mwaa(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mwaa")
    home = _lay_out(mwaa_bundle.build(root / "bundle"), root / "fs")
    venv = root / "venv"
    # The base interpreter's venv module: no --system-site-packages, nothing of the dev venv leaks in.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; assert sys.version_info[:2] == (3, 12)"]
                          ).returncode == 0, "MWAA 3.3.1 runs Python 3.12"
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(MWAA_INSTALL), str(home / "requirements" / "requirements.txt")],
        capture_output=True, text=True, timeout=540, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return {"home": home, "python": venv / "bin" / "python", "venv": venv}


def _startup_environment(home: Path, environment_name: str) -> dict[str, str]:
    """The variables startup.sh exports on MWAA (it runs before every Airflow component)."""
    script = f'. "{home / "startup.sh"}" >/dev/null && env -0'
    out = subprocess.run(["sh", "-c", script], env={"AIRFLOW_ENV_NAME": environment_name, "PATH": "/usr/bin:/bin"},
                         capture_output=True, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item and item.startswith("PIPELINE_"))


def test_installed_set_is_consistent(mwaa):
    result = subprocess.run([str(mwaa["python"]), "-m", "pip", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (mwaa["venv"] / "pyvenv.cfg").read_text().count("include-system-site-packages = true")
    # MWAA's workers only orchestrate: no model, image or video code in the Airflow environment.
    for module in ("torch", "torchvision", "cv2", "onnxruntime", "sagemaker"):
        found = subprocess.run([str(mwaa["python"]), "-c", f"import {module}"], capture_output=True, text=True)
        assert found.returncode != 0 and "No module named" in found.stderr, module
    # Every version MWAA pins is the version installed: the bundle's constraints.txt is MWAA's own.
    frozen = subprocess.run([str(mwaa["python"]), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    mwaa_pins = pins(AIRFLOW_CONSTRAINTS.read_text())
    installed = pins(frozen)
    assert {n: v for n, v in installed.items() if n in mwaa_pins and mwaa_pins[n] != v} == {}


@pytest.mark.parametrize("environment_name", ["surgical-mlops-dev", "surgical-mlops-prod"])
def test_every_dag_parses_in_the_mwaa_layout(mwaa, tmp_path, environment_name):
    home = mwaa["home"]
    env = {
        "PATH": f"{mwaa['venv'] / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AWS_DEFAULT_REGION": "us-east-1",
        **_startup_environment(home, environment_name),
    }
    assert env["PIPELINE_ENV"] == environment_name.rsplit("-", 1)[1]
    result = subprocess.run([str(mwaa["python"]), str(PARSE_CHECK)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    line = next((x for x in result.stdout.splitlines() if x.startswith("MWAA-PARSE-REPORT ")), None)
    assert result.returncode == 0 and line, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(line.removeprefix("MWAA-PARSE-REPORT "))
    assert report["import_errors"] == {}
    assert report["aws_calls"] == []
    assert report["dag_files"] == sorted(p.name for p in (home / "dags").glob("*.py"))
    assert all(path.startswith(str(home / "dags")) for path in report["dag_file_paths"])
    # The code came from the bundle, not from the repository.
    assert report["modules"]["include.config"] == str(home / "dags" / "include" / "config.py")
    assert report["modules"]["surgical_mlops"] == str(home / "plugins" / "surgical_mlops" / "__init__.py")
    assert report["modules"]["airflow"].startswith(str(mwaa["venv"]))
    slow = {name: round(s, 3) for name, s in report["parse_seconds"].items() if s >= MAX_PARSE_SECONDS}
    assert not slow, f"DAG files parsing in {MAX_PARSE_SECONDS} s or more: {slow}"
    for dag_id, dag in report["dags"].items():
        assert "surgical-mlops" in dag["tags"] and dag["doc_md"] > 100, dag_id
        assert dag["owners"] == ["surgical-mlops"] and dag["retries_unset"] == [], dag_id
