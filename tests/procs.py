"""Process helpers shared by the tests and the benchmarks (standard library only: used from every environment)."""

from __future__ import annotations

from pathlib import Path


def children(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (gunicorn's workers are its master's children), from ``/proc``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return sorted(found)
