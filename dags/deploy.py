"""
### deploy

Approved model package -> SageMaker model -> endpoint config (data capture on, KMS) -> endpoint created, or updated
blue/green when it exists -> the endpoint really serves the new config -> smoke test (held-out frames: the endpoint
finds the boxes the package's evaluation recorded, latency within budget) -> the deployment is recorded. Any failure
after the endpoint changed rolls it back to the config it served before, and the run fails saying why.

Scheduled on the `approved_model` Asset; triggerable with a `model_package_arn` (default: the latest Approved
version). In `prod` a person approves the change in the Airflow UI first (`deploy_requires_approval`).
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointConfigOperator,
    SageMakerEndpointOperator,
    SageMakerModelOperator,
)
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, TaskGroup, task

from include.assets import APPROVED_MODEL
from include.config import build_config
from include.dag_defaults import DEFAULT_ARGS, MACROS, START_DATE

CONFIG = build_config()  # parse time: the preset only (no Variable, no AWS call)

with DAG(
    dag_id="deploy",
    description="approved_model Asset -> SageMaker endpoint (blue/green, data capture) -> smoke test -> record",
    schedule=[APPROVED_MODEL],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 0},  # a half-done deployment is rolled back, not retried blindly
    user_defined_macros=MACROS,
    params={"model_package_arn": Param(None, type=["null", "string"],
                                       description="Deploy this version (default: the Asset event's, or the latest "
                                                   "Approved)")},
    tags=["surgical-mlops", "deploy"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def plan(params: dict | None = None, triggering_asset_events=None, run_id: str | None = None) -> dict:
        from include.tasks.deploy import plan as run

        events = [e.extra for e in (triggering_asset_events or {}).get(APPROVED_MODEL, [])]
        return run(params or {}, events, run_id or "manual")

    planned = plan()

    @task.branch
    def gate() -> str:
        from include.config import load_config

        return "approve" if load_config().deploy_requires_approval else "no_approval_needed"

    approve = ApprovalOperator(task_id="approve", subject="Deploy {{ ti.xcom_pull(task_ids='plan', key='name') }}?",
                               body="Model package {{ ti.xcom_pull(task_ids='plan', key='package_arn') }} replaces "
                                    "{{ ti.xcom_pull(task_ids='plan', key='previous_config') }}.",
                               fail_on_reject=True)
    no_approval_needed = EmptyOperator(task_id="no_approval_needed")
    planned["name"] >> gate() >> [approve, no_approval_needed]

    with TaskGroup("deploy"):
        @task.branch(trigger_rule="none_failed_min_one_success")
        def what_to_create(planned: dict) -> list[str]:
            from include.tasks.deploy import to_create

            return to_create(planned)

        create_model = SageMakerModelOperator(task_id="create_model", config=planned["model"])
        create_config = SageMakerEndpointConfigOperator(task_id="create_endpoint_config",
                                                        config=planned["endpoint_config"],
                                                        trigger_rule="none_failed")
        update = SageMakerEndpointOperator(task_id="update_endpoint", config=planned["endpoint"], operation="create",
                                           wait_for_completion=True, check_interval=5, trigger_rule="none_failed")

        @task(trigger_rule="none_failed_min_one_success")
        def verify(planned: dict) -> dict:
            from include.tasks.deploy import verify as run

            return run(planned)

        what = what_to_create(planned)
        checked = verify(planned)
        [approve, no_approval_needed] >> what >> [create_model, create_config, update, checked]
        create_model >> create_config >> update >> checked

    @task
    def smoke_test(planned: dict) -> dict:
        from include.tasks.deploy import smoke_test as run

        return run(planned)

    smoke = smoke_test(planned)
    checked >> smoke

    @task(trigger_rule="one_failed")
    def rollback(planned: dict, ti=None, run_id: str | None = None) -> None:
        from include.tasks.deploy import rollback as run

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        run(planned, sorted(task for task, state in states.items() if state == "failed"))

    [update, checked, smoke] >> rollback(planned)

    @task
    def record(planned: dict, smoke: dict, run_id: str | None = None) -> dict:
        from include.tasks.deploy import record as run

        return run(planned, smoke, run_id or "manual")

    record(planned, smoke)
