"""Runs the tests of a container's code in that container's test environment.

    .venv/bin/python tests/container_code/run.py NAME [PYTEST ARGUMENTS ...]

(NAME: trainer, inference, drift_monitor, frame_extractor: each folder here named after its container.)

The container's code imports what only its own environment has (torch in the trainer and the inference container;
the Airflow environment, ``.venv``, has none on its Python) and runs on its image's Python (3.11), so its tests run
there, not in the repository's pytest process. They run with ``tests/container_code/NAME/.venv/bin/python`` (the
container environment's packages and the tests' own: ``local_aws.container_envs``, built by ``make setup``), the
repository root and ``plugins/`` on PYTHONPATH as in ``make test``, this folder's ``pytest.ini`` as their only
configuration (``-c``: the repository's ``tests/conftest.py`` starts the local AWS stack, whose packages are not
there) and no cache folder.
``tests/unit/test_container_code.py`` runs each folder this way inside the repository's own run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from local_aws import container_envs  # noqa: E402 - the repository root is on sys.path only from here on


def command(name: str, *arguments: str) -> list[str]:
    """The inner pytest's argv (run from the repository root, with ``environment()``)."""
    folder = HERE / name
    if not container_envs.tests_env_up_to_date(folder):
        raise RuntimeError(f"{folder.relative_to(REPO)}/.venv is missing or stale (or its container's is): run "
                           f"'make setup' (python -m local_aws.container_envs {folder.relative_to(REPO)})")
    return [str(container_envs.venv_python(folder)), "-m", "pytest", "-c", str(HERE / "pytest.ini"), "--rootdir",
            str(HERE), "-p", "no:cacheprovider", str(folder), *arguments]


def environment() -> dict[str, str]:
    """This process's environment with PYTHONPATH as ``make test`` sets it and no outer pytest's variables (an
    xdist worker's id, the current test) leaking into the inner run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "plugins")])
    return env


def main(argv: list[str]) -> int:
    names = [p.name for p in container_envs.tests_env_folders()]
    if not argv or argv[0] not in names:
        print(f"usage: run.py {{{','.join(names)}}} [pytest arguments ...]", file=sys.stderr)
        return 2
    return subprocess.run(command(argv[0], *argv[1:]), cwd=REPO, env=environment(), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
