"""Each container runs in an environment of its own (``local_aws.container_envs``): its requirements.txt on its base
image's Python, nothing of the project or of the Airflow environment; the local SageMaker starts its ``python`` with
that environment's interpreter and refuses an image whose environment is missing or stale. The tests of a container's
code run in its test environment (``tests/container_code/<name>/.venv``): the container's packages, not copies of
them, and the tests' own."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from local_aws import container_envs
from local_aws.sagemaker.containers import parse_dockerfile
from local_aws.sagemaker.exceptions import ValidationException
from local_aws.sagemaker.runners import base_environment
from local_aws.settings import REPO_ROOT

FOLDERS = container_envs.folders()
TESTED = container_envs.tests_env_folders()
# What each container's code imports beyond the standard library (its requirements.txt provides them)
OWN = {"trainer": ["torch", "torchvision", "pycocotools", "onnx"], "inference": ["onnxruntime", "torch", "gunicorn"],
       "drift_monitor": ["numpy", "scipy", "cv2"], "frame_extractor": [], "toy": [], "monitor_probe": []}
# The project's packages and the Airflow environment's: none is in any container's environment
FOREIGN = ["include", "local_aws", "dags", "airflow", "moto", "boto3", "sagemaker"]


def _python_in(folder: Path, code: str) -> dict:
    """Runs ``code`` (which prints JSON) with the container's own interpreter, in its folder, with no PYTHONPATH: what
    the local SageMaker gives a job (``runners.base_environment``)."""
    image = parse_dockerfile("test/probe", folder)
    env = base_environment(folder / ".probe", image, {})
    proc = subprocess.run([image.map_path("python"), "-c", code], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_every_container_folder_is_covered():
    assert sorted(f.name for f in FOLDERS) == sorted(OWN)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_a_container_runs_its_base_images_python_with_its_own_packages_only(folder):
    code = ("import importlib.util, json, sys; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
            "'prefix': sys.prefix, 'found': {m: importlib.util.find_spec(m) is not None for m in "
            f"{OWN[folder.name] + FOREIGN + ['entrypoint']!r}}}}}))")
    seen = _python_in(folder, code)
    assert seen["version"] == container_envs.base_python(folder), (folder, seen["version"])
    assert Path(seen["prefix"]) == folder / ".venv"
    assert seen["found"] == {**{m: True for m in OWN[folder.name]}, **{m: False for m in FOREIGN},
                             "entrypoint": True}, folder


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_the_local_sagemaker_starts_python_from_the_containers_environment(folder):
    image = parse_dockerfile("test/image", folder)
    argv = image.command(None, ["train"])
    assert argv[0] == str(folder / ".venv" / "bin" / "python") and argv[-1] == "train"


@pytest.mark.parametrize("folder", TESTED, ids=lambda f: f.name)
def test_a_test_environment_runs_the_containers_own_packages_and_entrypoint(folder):
    """In the container's folder with no PYTHONPATH, the test env's interpreter is the base image's Python, imports
    the container's entrypoint module and every package the container's code imports from the container's own
    environment (the files its jobs run), and the tests' runner from its own."""
    container = container_envs.container_of(folder)
    modules = [*OWN[container.name], "entrypoint", "pytest"]
    code = ("import importlib.util, json, sys; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
            f"'prefix': sys.prefix, 'origins': {{m: importlib.util.find_spec(m).origin for m in {modules!r}}}}}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(container_envs.venv_python(folder)), "-c", code], cwd=container, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["version"] == container_envs.base_python(container) and Path(seen["prefix"]) == folder / ".venv"
    origins = {m: Path(origin) for m, origin in seen["origins"].items()}
    assert origins.pop("entrypoint") == container / "entrypoint.py"
    assert origins.pop("pytest").is_relative_to(folder / ".venv")
    assert all(origin.is_relative_to(container / ".venv") for origin in origins.values()), origins


@pytest.mark.parametrize("folder", TESTED, ids=lambda f: f.name)
def test_a_test_environment_holds_no_copy_of_a_container_package(folder):
    """Its own site-packages has none of the container env's distributions (torch, numpy, pillow, ...) and nothing
    that would hide one of the container's modules: they come from the container's environment only."""
    container = container_envs.container_of(folder)
    version = container_envs.base_python(container)
    own = container_envs.site_packages(folder / ".venv", version)
    names = {container_envs._normalized(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(own)])}
    theirs = container_envs.provided(container)
    assert "pytest" in names and "pip" in theirs and not names & theirs
    theirs_site = container_envs.site_packages(container / ".venv", version)
    assert not container_envs._top_level(own) & container_envs._top_level(theirs_site)
    # torch, numpy, Pillow and pip come from the container where it has them (the frame extractor has none of them:
    # its tests' numpy is their own)
    assert not ({"torch", "numpy", "PIL", "pip"} & container_envs._top_level(theirs_site)
                & {p.name for p in own.iterdir()})


def test_a_test_environment_is_stale_when_its_container_env_or_the_tests_pins_change(tmp_path, monkeypatch):
    """Stamped like a container env: a change of the tests' requirements or constraints, or a rebuilt container env
    (another stamp), makes it stale; so does a stale container env."""
    container = _copy(REPO_ROOT / "tests" / "containers" / "toy", tmp_path / "containers" / "toy")
    code = tmp_path / "tests" / "container_code"
    (code / "toy").mkdir(parents=True)
    for name in ("requirements.txt", "constraints.txt"):
        shutil.copy(container_envs.CONTAINER_CODE / name, code / name)
    monkeypatch.setattr(container_envs, "REPO", tmp_path)
    monkeypatch.setattr(container_envs, "CONTAINER_CODE", code)
    assert container_envs.tests_env_folders() == [code / "toy"]
    assert container_envs.container_of(code / "toy") == container
    for folder, stamp in ((container, container_envs.stamp_text), (code / "toy", container_envs.tests_env_stamp_text)):
        (folder / ".venv" / "bin").mkdir(parents=True)
        (folder / ".venv" / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
        (folder / ".venv" / ".container-env").write_text(stamp(folder))
    assert container_envs.tests_env_up_to_date(code / "toy")
    pins = (code / "constraints.txt").read_text()
    (code / "constraints.txt").write_text(pins.replace("pytest==9.2.0", "pytest==9.1.0"))
    assert not container_envs.tests_env_up_to_date(code / "toy")
    (code / "constraints.txt").write_text(pins)
    assert container_envs.tests_env_up_to_date(code / "toy")
    (container / "requirements.txt").write_text("numpy==2.4.6\n")
    assert not container_envs.tests_env_up_to_date(code / "toy")  # its container env is stale
    (container / ".venv" / ".container-env").write_text(container_envs.stamp_text(container))
    assert not container_envs.tests_env_up_to_date(code / "toy")  # ... and rebuilt since: another stamp
    (code / "requirements.txt").write_text("pytest==9.1.0\n")
    with pytest.raises(container_envs.ContainerEnvError, match=r"is not in constraints\.txt as it is"):
        container_envs.tests_env_pins()


def test_base_python_is_read_from_the_images_tag(tmp_path):
    for image, version in (("python:3.11-slim", "3.11"), ("python:3.12.13-slim-bookworm@sha256:" + "a" * 64, "3.12"),
                           ("public.ecr.aws/docker/library/python:3.11-slim@sha256:" + "b" * 64, "3.11")):
        (tmp_path / "Dockerfile").write_text(f"FROM node:20 AS web\nFROM {image}\nENTRYPOINT [\"python\"]\n")
        assert container_envs.base_python(tmp_path) == version, image
    (tmp_path / "Dockerfile").write_text("FROM ubuntu:24.04\n")
    with pytest.raises(container_envs.ContainerEnvError, match=r"not a python:<3\.x> image"):
        container_envs.base_python(tmp_path)


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    return target


def test_an_image_without_its_environment_is_refused_with_what_to_run(tmp_path):
    folder = _copy(REPO_ROOT / "tests" / "containers" / "toy", tmp_path / "toy")
    image = parse_dockerfile("test/toy", folder)
    with pytest.raises(ValidationException, match=r"no environment of its own .*make setup"):
        image.command(None, ["train"])


def test_an_environment_older_than_its_requirements_is_refused(tmp_path):
    folder = _copy(REPO_ROOT / "tests" / "containers" / "toy", tmp_path / "toy")
    (folder / ".venv" / "bin").mkdir(parents=True)
    (folder / ".venv" / "bin" / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    (folder / ".venv" / ".container-env").write_text(container_envs.stamp_text(folder))
    assert parse_dockerfile("test/toy", folder).command(None, [])[0] == str(folder / ".venv" / "bin" / "python")
    (folder / "requirements.txt").write_text("numpy==2.4.6\n")
    with pytest.raises(ValidationException, match=r"\.venv is stale .*make setup"):
        parse_dockerfile("test/toy", folder).command(None, [])


@pytest.mark.integration
def test_a_line_removed_from_requirements_fails_that_container(tmp_path):
    """The drift monitor without opencv in its requirements.txt: its environment is built without it, and the
    container fails as its image would (the Airflow environment's OpenCV does not hide it); with the file as it is,
    the same run gets past its imports to the configuration check."""
    broken = _copy(REPO_ROOT / "containers" / "drift_monitor", tmp_path / "drift_monitor")
    requirements = broken / "requirements.txt"
    lines = requirements.read_text().splitlines()
    requirements.write_text("\n".join(line for line in lines if not line.startswith("opencv-python-headless")) + "\n")
    assert container_envs.build(broken, log=lambda *a, **k: None)

    def run(folder: Path) -> tuple[subprocess.CompletedProcess, str]:
        root = tmp_path / f"job-{folder.parent.name}"
        (root / "output").mkdir(parents=True)
        image = parse_dockerfile("surgical-mlops/drift-monitor", folder)
        proc = subprocess.run(image.command(None, []), cwd=image.workdir, env=base_environment(root, image, {}),
                              capture_output=True, text=True, timeout=120, check=False)
        failure = root / "output" / "failure"
        return proc, failure.read_text() if failure.exists() else ""

    proc, failure = run(broken)
    assert proc.returncode == 1 and "ModuleNotFoundError: No module named 'cv2'" in proc.stderr, proc.stderr[-2000:]
    proc, failure = run(REPO_ROOT / "containers" / "drift_monitor")
    assert proc.returncode == 1 and "No module named" not in proc.stderr, proc.stderr[-2000:]
    assert failure and "cv2" not in failure, failure
