"""Flake watch: the whole suite N times, each from a fresh clone of HEAD, and which tests failed in which run.

    python3 tools/test_repeat.py [--runs 3] [--workdir /tmp/test-repeat] [--keep]

Each run clones the repository's HEAD into ``<workdir>/run-<i>`` and runs ``bash .ci/run`` there (what CI runs: set-up,
lint, every test), with pytest writing a JUnit report (``PYTEST_ADDOPTS=--junitxml=...``). The runs are sequential:
two suites at once on one machine would be a load test, not a flake watch. Prints per run its exit status, wall time
and counts, then every test that failed or errored in any run with the runs it failed in, and ends with

    RESULT runs=<n> green=<runs with exit 0> failed_tests=<distinct tests that failed at least once>

A test that fails in some runs and passes in others is a flake; one that fails in every run is a bug. Only the
standard library: it runs before any set-up. ``--keep`` keeps the clones (their ``.local/`` holds the stack's logs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def failures(report: Path) -> dict[str, str]:
    """test id -> the first line of its failure, from a JUnit XML report."""
    if not report.exists():
        return {}
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 (pytest's own report, written here)
        for outcome in ("failure", "error"):
            node = case.find(outcome)
            if node is not None:
                message = (node.get("message") or "").strip().splitlines()
                found[f"{case.get('classname', '')}::{case.get('name', '')}"] = \
                    f"{outcome}: {message[0][:160] if message else ''}"
    return found


def counts(report: Path) -> str:
    if not report.exists():
        return "no report (the run stopped before the tests)"
    root = ET.parse(report).getroot()  # noqa: S314 (pytest's own report, written here)
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return ", ".join(f"{key} {suite.get(key)}" for key in ("tests", "failures", "errors", "skipped"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "test-repeat")
    parser.add_argument("--keep", action="store_true", help="keep the clones")
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print("note: uncommitted changes are not tested: each run is a clone of HEAD", flush=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(1, args.runs + 1):
        clone = args.workdir / f"run-{i}"
        shutil.rmtree(clone, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        report, log = args.workdir / f"run-{i}.xml", args.workdir / f"run-{i}.log"
        report.unlink(missing_ok=True)
        print(f"run {i}/{args.runs}: {head} in {clone} (log: {log})", flush=True)
        started = time.monotonic()
        with log.open("w") as out:
            code = subprocess.run(["bash", ".ci/run"], cwd=clone, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTEST_ADDOPTS": f"--junitxml={report}"}).returncode
        wall = time.monotonic() - started
        runs.append((code, failures(report)))
        print(f"run {i}/{args.runs}: exit {code} in {wall / 60:.1f} min: {counts(report)}", flush=True)
        if not args.keep:
            subprocess.run(["make", "-C", str(clone), "down"], capture_output=True)
            shutil.rmtree(clone, ignore_errors=True)
    failed: dict[str, list[int]] = {}
    for i, (_, found) in enumerate(runs, start=1):
        for name in found:
            failed.setdefault(name, []).append(i)
    if failed:
        print("\nfailed tests (runs):")
        for name, which in sorted(failed.items()):
            kind = "fails every run" if len(which) == len(runs) else "FLAKY"
            first = next(found[name] for _, found in runs if name in found)
            print(f"  {name}: runs {which} ({kind}) - {first}")
    green = sum(1 for code, _ in runs if code == 0)
    print(f"\nRESULT runs={len(runs)} green={green} failed_tests={len(failed)}")
    return 0 if green == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
