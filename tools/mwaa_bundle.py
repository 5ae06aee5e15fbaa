"""``make mwaa-bundle``: the S3 layout Amazon MWAA syncs, built from the repository into ``dist/mwaa/``.

MWAA reads four things from its source bucket, and this builds exactly those:

- ``dags/``: the DAG files, plus the ``include/`` package inside it (MWAA puts the dags folder on ``sys.path``, so
  ``from include.x import ...`` works there as it does locally), ``constraints.txt`` (what the requirements' pip
  run is constrained by) and an ``.airflowignore`` that keeps the DAG processor out of ``include/``;
- ``plugins.zip``: the contents of ``plugins/`` at the zip root (``surgical_mlops/__init__.py``), as MWAA unzips it
  into its plugins folder;
- ``requirements.txt``: the repository's, with its ``--constraint`` line pointing at the constraints file inside the
  dags folder on MWAA (``/usr/local/airflow/dags/constraints.txt``);
- ``startup.sh``: run by MWAA on every Airflow component before it starts (selects ``PIPELINE_ENV``).

The build is deterministic (sorted entries, fixed zip timestamps): the same sources give the same bytes, so an
unchanged bundle uploads as no new S3 object version and MWAA is not updated for nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MWAA_HOME = "/usr/local/airflow"  # MWAA's AIRFLOW_HOME: dags/ and plugins/ are synced below it
MWAA_CONSTRAINTS = f"{MWAA_HOME}/dags/constraints.txt"
# Packages shipped inside dags/ next to the DAG files (importable because the dags folder is on sys.path).
DAG_PACKAGES = ("include",)
# include/synthetic is the local video generator (OpenCV, not in the MWAA requirements): no DAG imports it.
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "synthetic"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_CONSTRAINT_LINE = re.compile(r"^\s*(--constraint|-c)[\s=]+(\S+)\s*$")

AIRFLOWIGNORE = """\
# Not DAG files: importable code shipped next to the DAGs (the DAG processor would otherwise parse them).
include/
"""

STARTUP_SH = """\
#!/bin/sh
# MWAA runs this on every Airflow component (scheduler, workers, web server, triggerer, dag processor) before
# Airflow starts. It only exports settings: packages come from requirements.txt, code from dags/ and plugins.zip.
# PIPELINE_ENV picks the pipeline config preset (include/config.py): the MWAA environment's name ends in -prod
# or -dev (infra/mwaa.yaml names it surgical-mlops-<stage>); anything else runs the dev preset.
case "${AIRFLOW_ENV_NAME:-}" in
  *-prod) export PIPELINE_ENV=prod ;;
  *) export PIPELINE_ENV=dev ;;
esac
"""


class BundleError(ValueError):
    """The repository cannot be bundled as it is (e.g. requirements.txt without a constraint line)."""


@dataclass(frozen=True)
class Bundle:
    root: Path

    @property
    def dags(self) -> Path:
        return self.root / "dags"

    @property
    def plugins_zip(self) -> Path:
        return self.root / "plugins.zip"

    @property
    def requirements(self) -> Path:
        return self.root / "requirements.txt"

    @property
    def startup(self) -> Path:
        return self.root / "startup.sh"

    def digests(self) -> dict[str, str]:
        """sha256 of every file of the bundle, by path relative to its root (CI compares builds with it)."""
        return {p.relative_to(self.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*")) if p.is_file()}


def _source_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in _SKIP_SUFFIXES
                  and not _SKIP_DIRS.intersection(p.relative_to(folder).parts))


def mwaa_requirements(text: str, constraint_path: str = MWAA_CONSTRAINTS) -> str:
    """requirements.txt with its one constraint line pointing at ``constraint_path``; MWAA requires that line."""
    lines, found = [], 0
    for line in text.splitlines():
        match = _CONSTRAINT_LINE.match(line)
        if match:
            found += 1
            line = f'--constraint "{constraint_path}"'
        lines.append(line)
    if found != 1:
        raise BundleError(f"requirements.txt must have exactly one --constraint line, found {found}")
    return "\n".join(lines) + "\n"


def constraints_file(requirements_text: str, repo: Path) -> Path:
    """The repository's constraints file named by requirements.txt (relative to the repository root)."""
    for line in requirements_text.splitlines():
        match = _CONSTRAINT_LINE.match(line)
        if match:
            return repo / match.group(2).strip("\"'")
    raise BundleError("requirements.txt has no --constraint line")


def plugins_zip(source: Path, target: Path) -> None:
    """The plugins folder's contents at the zip root, deterministic (MWAA unzips it into its plugins folder)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _source_files(source):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())


def _copy_tree(source: Path, target: Path) -> None:
    for path in _source_files(source):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def build(out: Path, repo: Path = REPO_ROOT) -> Bundle:
    """Build the bundle into ``out`` (replaced whole: a file removed from the repository leaves the bundle too)."""
    requirements_text = (repo / "requirements.txt").read_text()
    constraints = constraints_file(requirements_text, repo)
    if not constraints.is_file():
        raise BundleError(f"requirements.txt constrains to {constraints}, which does not exist")
    if out.exists():
        shutil.rmtree(out)
    bundle = Bundle(out)
    bundle.dags.mkdir(parents=True)
    for dag_file in sorted((repo / "dags").glob("*.py")):
        shutil.copyfile(dag_file, bundle.dags / dag_file.name)
    for package in DAG_PACKAGES:
        _copy_tree(repo / package, bundle.dags / package)
    (bundle.dags / ".airflowignore").write_text(AIRFLOWIGNORE)
    # Lineage: the model versions a deployed DAG registers name this commit (include/training.py code_commit).
    (bundle.dags / "include" / "build_info.json").write_text(json.dumps({"commit": source_commit(repo)}) + "\n")
    shutil.copyfile(constraints, bundle.dags / "constraints.txt")
    plugins_zip(repo / "plugins", bundle.plugins_zip)
    bundle.requirements.write_text(mwaa_requirements(requirements_text))
    bundle.startup.write_text(STARTUP_SH)
    bundle.startup.chmod(0o755)
    return bundle


def source_commit(repo: Path) -> str:
    """CodeBuild's resolved source version, else the checkout's HEAD, else ``unknown``."""
    if os.environ.get("CODEBUILD_RESOLVED_SOURCE_VERSION"):
        return os.environ["CODEBUILD_RESOLVED_SOURCE_VERSION"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mwaa_bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "mwaa")
    args = parser.parse_args(argv)
    try:
        bundle = build(args.out)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    digests = bundle.digests()
    print(f"MWAA bundle in {bundle.root}: {sum(k.startswith('dags/') for k in digests)} file(s) under dags/, "
          f"plugins.zip, requirements.txt (--constraint {MWAA_CONSTRAINTS}), startup.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
