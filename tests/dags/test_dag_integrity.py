"""Every DAG in dags/ parses like the DAG processor parses it: no import error, fast, no AWS call, conventions."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from local_aws.settings import REPO_ROOT

DAGS = REPO_ROOT / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py"))
SCHEDSTAT = Path("/proc/thread-self/schedstat")  # Linux: ns on a CPU, ns waiting in the run queue for one, slices


def _run_queue_wait_s() -> float:
    return int(SCHEDSTAT.read_text().split()[1]) / 1e9


def _seconds_on_an_idle_machine(action: Callable[[], object]) -> float:
    """The wall-clock seconds ``action`` takes in this thread, less the time the thread waited for a CPU that other
    processes held (the run-queue delay the kernel counts): computing, reading files and any blocking wait (a
    network call, a sleep) still count, the other xdist worker's training does not. Plain wall-clock time where the
    kernel does not count it."""
    waited = _run_queue_wait_s if SCHEDSTAT.exists() else (lambda: 0.0)
    started, waited_before = time.perf_counter(), waited()
    action()
    return (time.perf_counter() - started) - (waited() - waited_before)


@pytest.fixture(scope="module")
def dagbag(monkeypatch_module):
    import botocore.client
    from airflow.dag_processing.dagbag import DagBag

    calls: list[str] = []

    def refuse(self, operation_name, api_params):  # an AWS call at parse time is a bug on MWAA
        calls.append(operation_name)
        raise RuntimeError(f"AWS call {operation_name} at DAG parse time")

    monkeypatch_module.setattr(botocore.client.BaseClient, "_make_api_call", refuse)
    bag = DagBag(dag_folder=str(DAGS))
    bag.aws_calls = calls
    return bag


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_dag_file_imports_without_errors_or_aws_calls(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.aws_calls == []
    assert {Path(d.fileloc).name for d in dagbag.dags.values()} == {p.name for p in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_each_file_parses_fast(dagbag, path):
    from airflow.dag_processing.dagbag import DagBag

    DagBag(dag_folder=str(path))  # warm: Airflow and provider imports are paid once per parsing process
    # The best of three, each without the time spent waiting for a CPU: a parse is not slower than its fastest run,
    # and a CPU that the other test worker holds is no part of what the parse costs.
    timings = [_seconds_on_an_idle_machine(lambda: DagBag(dag_folder=str(path))) for _ in range(3)]
    assert min(timings) < 0.3, timings


def test_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id}: doc_md explains the DAG"
        assert "surgical-mlops" in dag.tags, dag_id
        assert dag.catchup is False or dag_id.endswith("backfill"), dag_id
        for task in dag.tasks:
            assert task.owner == "surgical-mlops", (dag_id, task.task_id)
            assert task.retries is not None, (dag_id, task.task_id)


def test_dag_files_only_wire_tasks():
    for path in DAG_FILES:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert len(lines) < 150, f"{path.name} is {len(lines)} lines: move logic to include/"
        assert "boto3" not in path.read_text(), f"{path.name}: AWS clients belong in include/ (through hooks)"
