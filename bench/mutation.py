"""Mutation testing of the modules that decide (the gates): do their tests fail when the code is wrong?

    .venv/bin/python bench/mutation.py [--only promotion deploy ...] [--max-children 2] [--fresh] [--survivors]

For each gate below, mutmut (pinned in ``requirements-mutation.txt``; ``make mutation`` installs it) mutates the
gate's modules one small change at a time (``<`` -> ``<=``, a constant + 1, ``and`` -> ``or``, a call's argument
dropped, ...) and runs the gate's tests against every mutant: a mutant is *killed* when a test fails, *survived*
when every test still passes (the tests cannot tell the wrong code from the right one), *timeout* when the tests
hang (counted as killed: the mutant changed behaviour). Each gate runs in a workspace of its own under
``.local/mutation/<gate>/`` (a copy of the checkout; mutmut resumes there where it stopped, ``--fresh`` starts
over); ``mutmut results`` / ``mutmut show <mutant>`` in that folder show a survivor's diff.

Prints per gate and module: killed, survived, timeout, not run, score = (killed + timeout) / mutants; each survivor
with the reason it is equivalent (``bench/mutation_equivalents/<gate>.json``: a mutant no test can kill because the
program behaves the same) or ``NOT EXPLAINED``. Ends with

    RESULT mutation_score=<killed/total> modules=<n> survivors=<n>

where survivors counts the unexplained ones. Target: >= 90 % killed on every module, no unexplained survivor. Only a
broken run (mutmut failed, or the unmutated tests fail) makes the exit status non-zero.

mutmut was chosen over cosmic-ray because it runs each mutant in a fork of one warm pytest process, with only the
tests that reach the mutated function: minutes per module, where a fresh process per mutant takes hours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / ".local" / "mutation"
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents")  # <gate>.json: mutant -> why it is equivalent

# gate -> (modules mutated, the tests that guard them)
GATES: dict[str, tuple[list[str], list[str]]] = {
    "promotion": (["include/promotion.py"], ["tests/unit/test_promotion.py"]),
    "deploy": (["include/deploy.py", "include/tasks/deploy.py"],
               ["tests/unit/test_deploy.py", "tests/unit/test_deploy_tasks.py"]),
    "ingest": (["include/ingest.py", "include/lambdas/quarantine.py", "include/lambdas/s3_to_sqs.py"],
               ["tests/unit/test_ingest.py", "tests/unit/test_s3_to_sqs.py"]),
    "drift": (["include/monitoring.py", "containers/drift_monitor/drift.py"],
              ["tests/unit/test_monitoring.py", "tests/container_code/drift_monitor/test_drift_monitor.py",
               "tests/unit/test_trigger_drift_retrain.py"]),
    "consolidation": (["include/labeling/consolidation.py"],
                      ["tests/unit/test_labeling.py", "tests/unit/test_label_studio_format.py"]),
    "payloads": (["include/lambdas/api_detect.py", "containers/inference/payload.py"],
                 ["tests/unit/test_api_detect.py", "tests/container_code/inference/test_payload.py"]),
    "request_validator": (["local_aws/sagemaker/validation.py", "local_aws/sagemaker/rules.py"],
                          ["tests/unit/test_sagemaker_rules.py", "tests/unit/test_security.py"]),
}
# mutmut's exit codes (mutmut.stats.status_by_exit_code); "no tests" (no selected test reaches the mutated function)
# counts as a survivor
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", 24: "timeout",
          -24: "timeout", 152: "timeout", 255: "timeout"}


def workspace(gate: str, fresh: bool) -> Path:
    """A copy of the checkout (tracked and untracked, not ignored files) with mutmut's settings for this gate."""
    modules, tests = GATES[gate]
    folder = WORK / gate
    if fresh and folder.exists():
        shutil.rmtree(folder)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source, target = REPO / name, folder / name
        if source.is_file() and (not target.exists() or target.read_bytes() != source.read_bytes()):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    tops = sorted({Path(name).parts[0] for name in filter(None, files) if "/" in name})
    roots = sorted({Path(m).parts[0] for m in modules})
    settings = (REPO / "pyproject.toml").read_text() + "\n[tool.mutmut]\n" + "\n".join([
        f"source_paths = {json.dumps(roots)}",
        f"only_mutate = {json.dumps(modules)}",
        f"also_copy = {json.dumps([t for t in tops if t not in roots])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
        "timeout_multiplier = 4.0",
        "timeout_constant = 10.0",
    ]) + "\n"
    (folder / "pyproject.toml").write_text(settings)
    return folder


def statuses(folder: Path, modules: list[str]) -> dict[str, dict[str, str]]:
    """mutant -> status, per module, from mutmut's records in the workspace."""
    results = {}
    for module in modules:
        meta = folder / "mutants" / f"{module}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        results[module] = {name: ("not run" if code is None else STATUS.get(code, f"other ({code})"))
                           for name, code in codes.items()}
    return results


def run_gate(gate: str, max_children: int, fresh: bool, survivors: bool) -> dict[str, dict[str, str]]:
    """mutant -> status, per module."""
    folder = workspace(gate, fresh)
    log = folder / "mutmut.log"
    started = time.monotonic()
    again = [name for module in statuses(folder, GATES[gate][0]).values() for name, status in module.items()
             if status in ("survived", "no tests")] if survivors else []
    print(f"[{gate}] mutmut run in {folder} (log: {log})"
          + (f": the {len(again)} survivors of the last run only" if survivors else ""), flush=True)
    if survivors and not again:
        return statuses(folder, GATES[gate][0])
    with log.open("w") as out:
        proc = subprocess.run([str(Path(sys.executable).with_name("mutmut")), "run", "--max-children",
                               str(max_children), *again], cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"[{gate}] mutmut failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    print(f"[{gate}] done in {time.monotonic() - started:.0f} s", flush=True)
    return statuses(folder, GATES[gate][0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(GATES), help="these gates only")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="start each gate's workspace over")
    parser.add_argument("--survivors", action="store_true",
                        help="re-test only the last run's survivors, against the checkout's current tests")
    args = parser.parse_args()
    equivalents = {name: reason for path in sorted(EQUIVALENTS.glob("*.json"))
                   for name, reason in json.loads(path.read_text()).items()}
    report = {gate: run_gate(gate, args.max_children, args.fresh, args.survivors) for gate in (args.only or GATES)}
    (WORK / "report.json").write_text(json.dumps(report, indent=1))

    killed_all = total_all = unexplained = 0
    print(f"\n{'gate':<18} {'module':<40} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} "
          f"{'not run':>7} {'score':>6}")
    for gate, modules in report.items():
        for module, statuses in modules.items():
            counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("killed", "timeout", "survived",
                                                                              "not run")}
            total = len(statuses)
            killed = counts["killed"] + counts["timeout"]
            killed_all, total_all = killed_all + killed, total_all + total
            score = killed / total if total else 0.0
            print(f"{gate:<18} {module:<40} {total:>7} {counts['killed']:>6} {counts['timeout']:>7} "
                  f"{counts['survived']:>8} {counts['not run']:>7} {score:>6.1%}")
            for name, status in sorted(statuses.items()):
                if status in ("killed", "timeout"):
                    continue
                reason = equivalents.get(name)
                unexplained += reason is None
                print(f"    {status:<9} {name}: {reason or 'NOT EXPLAINED'}")
    score = killed_all / total_all if total_all else 0.0
    print(f"\nRESULT mutation_score={score:.3f} modules={sum(len(m) for m in report.values())} "
          f"survivors={unexplained}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
