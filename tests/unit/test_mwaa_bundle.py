"""make mwaa-bundle: the layout MWAA syncs (flat plugins.zip, include/ inside dags/, a constraint that resolves)."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from tools import mwaa_bundle
from tools.mwaa_bundle import MWAA_CONSTRAINTS, BundleError, build, mwaa_requirements

REPO = mwaa_bundle.REPO_ROOT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> mwaa_bundle.Bundle:
    return build(tmp_path_factory.mktemp("bundle") / "mwaa")


def test_plugins_zip_is_flat(bundle):
    names = zipfile.ZipFile(bundle.plugins_zip).namelist()
    assert "surgical_mlops/__init__.py" in names
    assert not any(n.startswith("plugins/") for n in names)
    expected = {p.relative_to(REPO / "plugins").as_posix() for p in (REPO / "plugins").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert set(names) == expected


def test_dags_folder_holds_the_dags_and_the_include_package(bundle):
    shipped = {p.name for p in bundle.dags.glob("*.py")}
    assert shipped == {p.name for p in (REPO / "dags").glob("*.py")}
    assert (bundle.dags / "include" / "config.py").read_bytes() == (REPO / "include" / "config.py").read_bytes()
    assert (bundle.dags / "include" / "lambdas" / "s3_to_sqs.py").is_file()
    assert not list(bundle.root.rglob("__pycache__")) and not list(bundle.root.rglob("*.pyc"))
    assert not (bundle.dags / "include" / "synthetic").exists()  # local data generator, not for MWAA


def test_the_dag_processor_skips_include(bundle):
    assert "include/" in (bundle.dags / ".airflowignore").read_text().splitlines()


def test_requirements_constraint_resolves_inside_the_bundle(bundle):
    lines = bundle.requirements.read_text().splitlines()
    assert f'--constraint "{MWAA_CONSTRAINTS}"' in lines
    # /usr/local/airflow/dags/ on MWAA is the bundle's dags/ folder.
    shipped = bundle.dags / Path(MWAA_CONSTRAINTS).relative_to("/usr/local/airflow/dags")
    assert shipped.read_bytes() == (REPO / "constraints.txt").read_bytes()
    pinned = [line for line in lines if line and not line.startswith(("#", "-"))]
    assert pinned and all("==" in line for line in pinned)


def test_requirements_need_exactly_one_constraint_line():
    assert mwaa_requirements('-c constraints.txt\nboto3==1\n').splitlines()[0] == f'--constraint "{MWAA_CONSTRAINTS}"'
    with pytest.raises(BundleError, match="found 0"):
        mwaa_requirements("boto3==1\n")
    with pytest.raises(BundleError, match="found 2"):
        mwaa_requirements("--constraint a.txt\n--constraint b.txt\n")


def test_build_is_deterministic_and_replaces_the_previous_bundle(tmp_path, bundle):
    out = tmp_path / "mwaa"
    (out / "dags").mkdir(parents=True)
    (out / "dags" / "removed_dag.py").write_text("stale")
    again = build(out)
    assert again.digests() == bundle.digests()
    assert not (out / "dags" / "removed_dag.py").exists()


@pytest.mark.parametrize(("environment", "expected"), [("surgical-mlops-prod", "prod"), ("surgical-mlops-dev", "dev"),
                                                       ("", "dev")])
def test_startup_script_selects_the_pipeline_preset(bundle, environment, expected):
    assert subprocess.run(["sh", "-n", str(bundle.startup)]).returncode == 0
    result = subprocess.run(["sh", "-c", f'. "{bundle.startup}" && printf %s "$PIPELINE_ENV"'],
                            env={"AIRFLOW_ENV_NAME": environment, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, check=True)
    assert result.stdout == expected


def test_make_target_writes_dist_mwaa():
    makefile = (REPO / "Makefile").read_text()
    assert "mwaa-bundle:" in makefile and "tools.mwaa_bundle" in makefile


def test_mwaa_environment_runs_the_airflow_the_constraints_pin():
    from local_aws.bootstrap import _load_template
    from tools.mwaa_install import airflow_version

    pinned = next(line.split("==", 1)[1] for line in (REPO / "requirements.txt").read_text().splitlines()
                  if line.startswith("apache-airflow=="))
    assert pinned == airflow_version()  # MWAA's essential constraints pin it: a requirements.txt cannot differ
    template = _load_template(REPO / "infra" / "mwaa.yaml")
    assert template["Parameters"]["AirflowVersion"]["Default"] == pinned
    environment = template["Resources"]["Environment"]["Properties"]
    assert (environment["DagS3Path"], environment["PluginsS3Path"], environment["RequirementsS3Path"],
            environment["StartupScriptS3Path"]) == ("dags", "plugins.zip", "requirements.txt", "startup.sh")
    assert template["Parameters"]["WebserverAccessMode"]["Default"] == "PRIVATE_ONLY"
