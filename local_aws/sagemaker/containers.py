"""Image URI -> container folder: how the local SageMaker finds the code an image would run.

On AWS an image URI names an ECR repository; here the stack keeps a registry (``<home>/sagemaker/images.json``)
from repository name to a folder with a Dockerfile (``containers/<name>/``, or a test's container). The command is
what the Dockerfile would run: its ``ENTRYPOINT`` (exec form), ``ENV`` and ``WORKDIR``, with the paths its ``COPY``
lines fill mapped back to the folder, and ``python`` meaning the container's own environment, ``<folder>/.venv``: its
``requirements.txt`` on its base image's Python (``local_aws.container_envs``, built by ``make setup``), never the
Airflow environment the stack runs in. Nothing in the container changes to run locally.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from local_aws.sagemaker.exceptions import ValidationException
from local_aws.settings import StackSettings

_ECR_URI = re.compile(r"^(?P<registry>[^/]+\.dkr\.ecr\.[^/]+\.amazonaws\.com(?:\.cn)?)/(?P<repo>[^:@]+)(?:[:@].*)?$")
_PYTHONS = {"python", "python3", "python3.11", "/usr/bin/python3", "/usr/local/bin/python", "/usr/local/bin/python3"}


@dataclass(frozen=True)
class ContainerImage:
    repository: str
    folder: Path
    entrypoint: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None

    def command(self, override: list[str] | None, arguments: list[str]) -> list[str]:
        """The argv of a run: the entrypoint (or the job's override) and the arguments, paths mapped."""
        return [self.map_path(a) for a in (override or self.entrypoint)] + list(arguments)

    def map_path(self, arg: str) -> str:
        if arg in _PYTHONS:
            return str(environment_python(self.repository, self.folder))
        for container_dir, local in self._copies():
            if arg == container_dir or arg.startswith(container_dir.rstrip("/") + "/"):
                return str(local / arg[len(container_dir):].lstrip("/"))
        return arg

    def _copies(self) -> list[tuple[str, Path]]:
        return _copy_targets(self.folder)


def environment_python(repository: str, folder: Path) -> Path:
    """The interpreter of the container's own environment; refused (as an image that cannot start) when missing."""
    from local_aws import container_envs

    python = container_envs.venv_python(folder)
    if not python.exists():
        raise ValidationException(
            f"image {repository}: the container has no environment of its own ({folder}/.venv, its requirements.txt "
            f"on its base image's Python): run 'make setup' (python -m local_aws.container_envs {folder})")
    if not container_envs.up_to_date(folder):
        raise ValidationException(
            f"image {repository}: {folder}/.venv is stale (its requirements.txt or base image's Python changed "
            f"since it was built): run 'make setup' (python -m local_aws.container_envs {folder})")
    return python


def _dockerfile_lines(folder: Path) -> list[str]:
    text = (folder / "Dockerfile").read_text()
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()
            and not line.strip().startswith("#")]


def _copy_targets(folder: Path) -> list[tuple[str, Path]]:
    """``COPY <src> <dest>`` lines whose source is in the folder: container path -> local path."""
    targets = []
    for line in _dockerfile_lines(folder):
        parts = shlex.split(line)
        if parts[0].upper() != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        sources, dest = [p for p in parts[1:-1] if not p.startswith("--")], parts[-1]
        if sources == ["."]:
            targets.append((dest, folder))
        elif len(sources) == 1 and not dest.endswith("/"):
            targets.append((dest, folder / sources[0]))
        else:
            targets += [(dest.rstrip("/") + "/" + Path(s).name, folder / s) for s in sources]
    return sorted(targets, key=lambda t: -len(t[0]))  # longest container path first


def parse_dockerfile(repository: str, folder: Path) -> ContainerImage:
    entrypoint: list[str] | None = None
    env: dict[str, str] = {}
    workdir = None
    for line in _dockerfile_lines(folder):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ENTRYPOINT":
            entrypoint = json.loads(rest) if rest.strip().startswith("[") else ["/bin/sh", "-c", rest]
        elif instruction == "ENV":
            if "=" in rest.split(" ", 1)[0]:
                for pair in shlex.split(rest):
                    key, _, value = pair.partition("=")
                    env[key] = value
            else:
                key, _, value = rest.partition(" ")
                env[key] = value.strip()
        elif instruction == "WORKDIR":
            workdir = rest.strip()
    if not entrypoint:
        raise ValidationException(f"image {repository}: {folder}/Dockerfile has no ENTRYPOINT")
    image = ContainerImage(repository, folder, entrypoint, env)
    mapped_workdir = Path(image.map_path(workdir)) if workdir else None
    return ContainerImage(repository, folder, entrypoint, env, mapped_workdir)


class ContainerRegistry:
    def __init__(self, settings: StackSettings) -> None:
        self.path = settings.home / "sagemaker" / "images.json"

    def _entries(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def register(self, repository: str, folder: Path) -> None:
        entries = self._entries()
        entries[repository] = str(Path(folder).resolve())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2, sort_keys=True))
        tmp.replace(self.path)

    def resolve(self, image_uri: str) -> ContainerImage:
        match = _ECR_URI.match(image_uri)
        repository = match.group("repo") if match else image_uri.split(":")[0].split("@")[0]
        folder = self._entries().get(repository)
        if folder is None:
            raise ValidationException(
                f"Image {image_uri} is not in the local registry: no container folder is registered for "
                f"repository {repository!r} (containers/<name>/ are registered by 'make up')")
        return parse_dockerfile(repository, Path(folder))
