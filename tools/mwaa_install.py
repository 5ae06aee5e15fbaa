"""Install an Airflow environment the way MWAA 3.3.1 installs its own, into the Python that runs this module.

MWAA's image (aws/amazon-mwaa-docker-images, copied unchanged into ``mwaa/3.3.1/``) installs in two steps, and so
does this (``make setup`` for ``.venv``, the bundle test for a fresh venv):

1. its required packages (``install-required-pip-packages.sh``: the Amazon provider with aiobotocore, Airflow with
   celery and statsd, psycopg2, pycurl, watchtower, ...), constrained by ``airflow_constraints.txt`` (Airflow's
   official constraints for 3.3.1 on Python 3.12);
2. the user's ``requirements.txt`` with ``safe-pip-install``'s command: the required packages again, plus
   ``-r requirements.txt``, under ``mwaa_essential_constraints.txt`` (the pins a user cannot override). The bundle's
   ``requirements.txt`` brings its own ``--constraint`` line (``constraints.txt``), which pip reads relative to it.

The list of required packages is read from MWAA's script, not copied, so a newer ``mwaa/<version>/`` changes it.

    python -m tools.mwaa_install requirements.txt [-r requirements-dev.txt ...]

Extra ``-r`` files (the dev tools) are installed after, in a third step, under the same essential constraints.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

MWAA = Path(__file__).resolve().parent.parent / "mwaa" / "3.3.1"
AIRFLOW_CONSTRAINTS = MWAA / "airflow_constraints.txt"
ESSENTIAL_CONSTRAINTS = MWAA / "mwaa_essential_constraints.txt"
REQUIRED_SCRIPT = MWAA / "install-required-pip-packages.sh"
PYTHON = (3, 12)  # MWAA 3.3.1 runs Python 3.12.13


def airflow_version() -> str:
    """The Airflow release MWAA pins (``apache-airflow==`` of its essential constraints)."""
    match = re.search(r"^apache-airflow==(\S+)$", ESSENTIAL_CONSTRAINTS.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{ESSENTIAL_CONSTRAINTS} pins no apache-airflow")
    return match.group(1)


def required_packages(script: Path = REQUIRED_SCRIPT) -> list[str]:
    """The ``REQUIRED_PACKAGES=( ... )`` array of MWAA's script, with ``${AIRFLOW_VERSION}`` filled in."""
    match = re.search(r"^REQUIRED_PACKAGES=\((.*?)^\)", script.read_text(), re.MULTILINE | re.DOTALL)
    if not match:
        raise ValueError(f"{script} has no REQUIRED_PACKAGES array")
    packages = [line.strip().strip('"') for line in match.group(1).splitlines()]
    return [p.replace("${AIRFLOW_VERSION}", airflow_version()) for p in packages if p and not p.startswith("#")]


def commands(python: str, requirements: Path, extra: list[Path]) -> list[list[str]]:
    """The pip commands, in order (what MWAA runs, then the dev tools)."""
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    required = required_packages()
    steps = [[*pip, "-c", str(AIRFLOW_CONSTRAINTS), *required],
             [*pip, "--constraint", str(ESSENTIAL_CONSTRAINTS), *required, "-r", str(requirements)]]
    for path in extra:
        steps.append([*pip, "--constraint", str(ESSENTIAL_CONSTRAINTS), "-r", str(path)])
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", type=Path, help="the bundle's requirements.txt")
    parser.add_argument("-r", dest="extra", type=Path, action="append", default=[],
                        help="further requirements installed after MWAA's steps (the dev tools)")
    args = parser.parse_args(argv)
    if sys.version_info[:2] != PYTHON:
        print(f"MWAA 3.3.1 runs Python {'.'.join(map(str, PYTHON))}; this is {sys.version.split()[0]}",
              file=sys.stderr)
        return 2
    names = ["MWAA's required packages with airflow_constraints.txt",
             f"safe-pip-install: the required packages and {args.requirements} under the essential constraints"]
    names += [f"{path} under the essential constraints" for path in args.extra]
    for number, command in enumerate(commands(sys.executable, args.requirements, args.extra), 1):
        start = time.monotonic()
        print(f"  pip step {number}: {names[number - 1]}", flush=True)
        if subprocess.run(command).returncode != 0:
            print(f"pip step {number} failed: {' '.join(command)}", file=sys.stderr)
            return 1
        print(f"  pip step {number} done in {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
