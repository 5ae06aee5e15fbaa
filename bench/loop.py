"""Loop benchmark: the demo's whole loop under the real scheduler, stage by stage, with peak memory.

    .venv/bin/python bench/loop.py [--no-retrain] [--keep]

Runs ``local_aws.demo.Loop`` (the demo's own code, its default data: 6 videos of 6 s, 480x272, the demo's
``pipeline_config``) on a fresh stack and fresh Airflow services of its own (a temporary home, free ports), so a
running ``make demo`` is untouched. Printed: each stage's wall time, the whole loop's, the time from the upload to the
endpoint answering through the gateway, and memory: every ~0.5 s the resident set (``VmRSS``) of the stack's and the
Airflow services' processes and all their descendants (servers, task processes, jobs, endpoints, Lambda runs) is
summed; the peak of that sum is reported, with the peak per group. PASS/FAIL: upload -> endpoint answering <= 300 s
(issue 10's target on 2 cores). The baseline in the same run is the services' idle footprint (the same sum before the
upload). Exit status non-zero only when a stage fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local_aws import airflow_services, stack  # noqa: E402
from local_aws.demo import Loop, bring_up  # noqa: E402
from local_aws.settings import load_settings  # noqa: E402
from tests.conftest import free_port  # noqa: E402

TARGET_S = 300.0


class GroupMemory:
    """Polls /proc: the summed RSS of the service processes (pid files) and all their descendants."""

    def __init__(self, pid_dirs: list[Path], interval: float = 0.5) -> None:
        self.pid_dirs, self.interval = pid_dirs, interval
        self.peak_total = 0
        self.peak_by_group: dict[str, int] = {}
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _leaders(self) -> dict[int, str]:
        leaders = {}
        for folder in self.pid_dirs:
            for pid_file in folder.glob("*.pid"):
                try:
                    leaders[int(pid_file.read_text().strip())] = pid_file.stem
                except (OSError, ValueError):
                    pass
        return leaders

    def sample(self) -> int:
        """One sample: RSS summed over each leader's descendants (jobs and endpoints start sessions of their own,
        so the process tree is followed, not only the process group)."""
        leaders = self._leaders()
        parent: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                status = Path(f"/proc/{entry.name}/status").read_text()
            except OSError:
                continue
            pid = int(entry.name)
            parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
            rss[pid] = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        by_group: dict[str, int] = {}
        for pid, kb in rss.items():
            ancestor, hops = pid, 0
            while ancestor not in leaders and ancestor > 1 and hops < 64:
                ancestor, hops = parent.get(ancestor, 0), hops + 1
            if ancestor in leaders:
                by_group[leaders[ancestor]] = by_group.get(leaders[ancestor], 0) + kb
        total = sum(by_group.values())
        self.samples.append((time.time(), total))
        self.peak_total = max(self.peak_total, total)
        for group, kb in by_group.items():
            self.peak_by_group[group] = max(self.peak_by_group.get(group, 0), kb)
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> GroupMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-retrain", action="store_true", help="stop at the relabel run drift_retrain creates")
    parser.add_argument("--keep", action="store_true", help="leave the stack and the services running")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    stack_settings = load_settings(home=home, base_port=free_port())
    airflow = airflow_services.load_airflow_settings(stack_settings, home=home / "airflow", port=free_port(1))
    print(f"bench/loop.py: stack {stack_settings.moto_url} .. +2, Airflow {airflow.url}, home {home}; "
          f"{os.cpu_count()} CPU(s)")
    started = time.time()
    ok = False
    try:
        bring_up(stack_settings, airflow, quiet=True)
        up_s = time.time() - started
        memory = GroupMemory([stack_settings.pid_dir, airflow.pid_dir])
        time.sleep(5)
        idle_kb = max(memory.sample() for _ in range(3))
        loop = Loop(stack_settings, airflow, retrain=not args.no_retrain, say=lambda line: print(line, flush=True))
        with memory:
            ok = loop.run()
        print("\n== bench/loop.py: stage wall times (default demo data: "
              f"{loop.data.videos} x {loop.data.seconds:g} s {loop.data.width}x{loop.data.height})")
        print(f"{'set-up: stack + Airflow services up':<62} {'ok':<6} {up_s:>7.1f}")
        print(loop.table())
        print(f"\nmemory: peak summed RSS of the stack's and Airflow's processes (+ descendants) "
              f"{memory.peak_total / 1024:.0f} MiB (baseline: the same services idle before the upload "
              f"{idle_kb / 1024:.0f} MiB; "
              f"{len(memory.samples)} samples)")
        for group, kb in sorted(memory.peak_by_group.items(), key=lambda item: -item[1]):
            print(f"  {group:<14} peak {kb / 1024:>6.0f} MiB")
        if loop.uploaded_at and loop.answered_at:
            seconds = loop.answered_at - loop.uploaded_at
            print(f"\nupload -> endpoint answering: {seconds:.0f} s; target <= {TARGET_S:.0f} s: "
                  f"{'PASS' if seconds <= TARGET_S else 'FAIL'}")
        else:
            print("\nupload -> endpoint answering: not reached: FAIL")
    finally:
        if not args.keep:
            airflow_services.down(airflow)
            stack.down(stack_settings)
            shutil.rmtree(home, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
