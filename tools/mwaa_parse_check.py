"""Parse the DAGs of an MWAA layout the way MWAA's DAG processor does, and print what it found as JSON.

Run with the Python of a clean environment that has only the bundle's requirements installed, and with
``AIRFLOW__CORE__DAGS_FOLDER`` / ``AIRFLOW__CORE__PLUGINS_FOLDER`` pointing at the laid-out bundle (Airflow puts both
folders on ``sys.path`` itself, as on MWAA). Uses only the standard library and Airflow: nothing of the repository
is importable there. Any AWS API call at parse time is refused and reported (it would be a bug on MWAA).
The checks mirror tests/dags/test_dag_integrity.py; tests/integration/test_mwaa_bundle.py reads the output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    import botocore.client

    calls: list[str] = []

    def refuse(self, operation_name, api_params):
        calls.append(operation_name)
        raise RuntimeError(f"AWS call {operation_name} at DAG parse time")

    botocore.client.BaseClient._make_api_call = refuse  # type: ignore[method-assign]

    from airflow.dag_processing.dagbag import BundleDagBag

    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])

    def parse(target: Path) -> BundleDagBag:
        # What Airflow 3's DAG processor runs per file: the dags-folder bundle's path goes on sys.path.
        return BundleDagBag(dag_folder=str(target), bundle_path=dags_folder, bundle_name="dags-folder",
                            load_op_links=False)

    bag = parse(dags_folder)
    parse_seconds = {}
    for path in sorted(dags_folder.glob("*.py")):
        parse(path)  # warm: Airflow's and the provider's imports are paid once per parsing process
        timings = []
        for _ in range(3):  # the best of three: a busy CPU only adds noise to a parse
            started = time.perf_counter()
            parse(path)
            timings.append(time.perf_counter() - started)
        parse_seconds[path.name] = min(timings)
    report = {
        "import_errors": {str(k): v for k, v in bag.import_errors.items()},
        "aws_calls": calls,
        "dag_files": sorted({Path(d.fileloc).name for d in bag.dags.values()}),
        "dag_file_paths": sorted({d.fileloc for d in bag.dags.values()}),
        "dags": {
            dag_id: {"tags": sorted(dag.tags), "doc_md": len(dag.doc_md or ""),
                     "owners": sorted({t.owner for t in dag.tasks}),
                     "retries_unset": [t.task_id for t in dag.tasks if t.retries is None]}
            for dag_id, dag in bag.dags.items()
        },
        "parse_seconds": parse_seconds,
        "sys_path_has_dags_folder": str(dags_folder) in sys.path,
        "modules": {name: getattr(sys.modules[name], "__file__", None)
                    for name in ("include.config", "surgical_mlops", "airflow") if name in sys.modules},
    }
    print("MWAA-PARSE-REPORT " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
