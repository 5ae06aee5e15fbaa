"""Dockerfiles that would build and run on SageMaker, checked without a Docker engine: base images pinned by digest,
the base image's Python equal to the container environment's, every file the ENTRYPOINT and the code need copied,
requirements installed from the copied file, the root user only where SageMaker's contract asks for it, and
hadolint clean (``make lint`` runs it too)."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from local_aws import container_envs
from local_aws.sagemaker.containers import _copy_targets, _dockerfile_lines, parse_dockerfile
from local_aws.settings import REPO_ROOT

FOLDERS = container_envs.folders()
DIGEST = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")
STDLIB = set(sys.stdlib_module_names)


def _instructions(folder: Path) -> list[tuple[str, str]]:
    return [(line.split(" ", 1)[0].upper(), line.split(" ", 1)[1] if " " in line else "")
            for line in _dockerfile_lines(folder)]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_every_base_image_is_pinned_by_digest(folder):
    images = [rest.split()[0] for instruction, rest in _instructions(folder) if instruction == "FROM"]
    assert images and all(DIGEST.match(image) for image in images), images


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_the_base_images_python_is_the_environments(folder):
    version = subprocess.run([str(container_envs.venv_python(folder)), "-c",
                              "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert container_envs.base_python(folder) == version


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_the_entrypoint_and_every_module_it_imports_are_copied(folder):
    image = parse_dockerfile("test/image", folder)
    entry = next(rest for i, rest in _instructions(folder) if i == "ENTRYPOINT")
    assert entry.startswith("["), "exec form: SageMaker's SIGTERM must reach the process"
    script = Path(image.map_path(image.entrypoint[1]))
    assert script.is_file() and script.parent == folder, (image.entrypoint, script)
    copied = {local.resolve() for _, local in _copy_targets(folder)}

    def is_copied(path: Path) -> bool:
        return any(path.resolve() == c or path.resolve().is_relative_to(c) for c in copied)

    local_modules = {p.stem for p in folder.glob("*.py")}
    third_party = set()
    for source in folder.glob("*.py"):
        assert is_copied(source), f"{source.name} is not copied into the image"
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            third_party |= {n.split(".")[0] for n in names} - STDLIB - local_modules
    # what the code imports beyond the standard library and the folder, its requirements.txt must provide: the
    # container's own environment (exactly those requirements) finds every one
    found = subprocess.run([str(container_envs.venv_python(folder)), "-c",
                            "import importlib.util, json, sys; print(json.dumps({m: importlib.util.find_spec(m) is not "
                            "None for m in sys.argv[1:]}))", *sorted(third_party)],
                           capture_output=True, text=True, check=True, cwd="/").stdout
    assert json.loads(found) == dict.fromkeys(third_party, True), found


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_requirements_are_installed_from_the_copied_file(folder):
    requirements = [line for line in ((folder / "requirements.txt").read_text().splitlines()
                                      if (folder / "requirements.txt").exists() else [])
                    if line.split("#")[0].strip()]
    runs = " ".join(rest for i, rest in _instructions(folder) if i == "RUN")
    if not requirements:
        assert "pip install" not in runs
        return
    copies = [shlex.split(rest) for i, rest in _instructions(folder) if i == "COPY"]
    target = next(parts[-1] for parts in copies if parts[:-1] == ["requirements.txt"])
    assert "pip install --no-cache-dir" in runs and f"-r {target}" in runs, runs


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_root_only_where_sagemakers_contract_asks_for_it(folder):
    users = [rest.strip() for i, rest in _instructions(folder) if i == "USER"]
    text = (folder / "Dockerfile").read_text()
    if not users or users[-1] in ("root", "0"):
        assert "Runs as root on purpose" in text, "a container running as root says why"
    else:
        assert users[-1] not in ("root", "0")


def test_hadolint_finds_nothing():
    dockerfiles = [str(f / "Dockerfile") for f in FOLDERS]
    proc = subprocess.run([str(Path(sys.executable).with_name("hadolint")), "--config",
                           str(REPO_ROOT / ".hadolint.yaml"), "--format", "json", *dockerfiles],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout or "[]") == [], proc.stdout + proc.stderr
