"""
### drift_retrain

The deployed model's captured traffic against its training data: the monitor container (Model Monitor schedule, or
the same container as a Processing job: config `monitoring_backend`) -> violations, drift metrics in CloudWatch and
the alarms on them -> on drift: the cause is recorded, the videos behind the window's traffic go back to labeling,
and labeling -> train_and_register -> deploy follow through their Assets and the same gates (a new model reaches the
endpoint only if the promotion rule approves it).

Runs hourly (so a lost alarm event cannot hide drift) and when the alarm Lambda triggers it with `reason`
(which alarm, which metrics, when). `force` relabels the window's traffic without a verdict.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, TaskGroup, task
from surgical_mlops.monitoring import SageMakerMonitoringExecutionSensor, SageMakerMonitoringScheduleOperator

from include.config import build_config
from include.dag_defaults import DEFAULT_ARGS, MACROS, START_DATE

CONFIG = build_config()  # parse time: the preset only (no Variable, no AWS call)

with DAG(
    dag_id="drift_retrain",
    description="captured traffic -> drift monitor -> alarms -> relabel -> retrain -> redeploy through the gates",
    schedule=CONFIG.drift_schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    params={
        "reason": Param({}, type="object", description="Set by the alarm Lambda: alarm, metrics, window"),
        "window_hours": Param(None, type=["null", "integer"], minimum=1, description="Default: the config's"),
        "force": Param(False, type="boolean", description="Relabel the window's traffic without a verdict"),
    },
    tags=["surgical-mlops", "monitoring"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def plan(params: dict | None = None, dag_run=None, run_id: str | None = None, data_interval_end=None) -> dict:
        from include.tasks.drift import plan as run

        return run(params or {}, dict(dag_run.conf or {}) if dag_run else {}, run_id or "manual", data_interval_end)

    planned = plan()

    with TaskGroup("monitor"):
        # Two branches in a row: Airflow does not skip a task that is downstream of a followed branch, so the baseline
        # (when missing) comes first, then the backend's monitor.
        @task.branch
        def needs_baseline(planned: dict) -> str:
            return "monitor.baseline" if planned["baseline"] else "monitor.baseline_ready"

        baseline = SageMakerProcessingOperator(task_id="baseline", config=planned["baseline"], check_interval=10,
                                               wait_for_completion=True)
        ready = EmptyOperator(task_id="baseline_ready")

        @task.branch(trigger_rule="none_failed_min_one_success")
        def route(planned: dict) -> list[str]:
            from include.tasks.drift import monitor_route

            return monitor_route(planned)

        schedule = SageMakerMonitoringScheduleOperator(task_id="schedule", config=planned["schedule"])
        execution = SageMakerMonitoringExecutionSensor(
            task_id="execution", schedule_name=CONFIG.monitoring_schedule_name,
            after="{{ ti.xcom_pull(task_ids='plan', key='execution_after') }}", poke_interval=15,
            timeout=2 * 3600, mode="reschedule")
        run_monitor = SageMakerProcessingOperator(task_id="run_monitor", config=planned["monitor"], check_interval=10,
                                                  wait_for_completion=True, action_if_job_exists="timestamp")
        routed = route(planned)
        needs_baseline(planned) >> [baseline, ready] >> routed >> [schedule, run_monitor]
        schedule >> execution

    @task(trigger_rule="none_failed_min_one_success")
    def assess(planned: dict, ti=None, run_id: str | None = None) -> dict:
        from include.tasks.drift import assess as run

        return run(planned, ti.xcom_pull(task_ids="monitor.execution"), ti.xcom_pull(task_ids="monitor.run_monitor"),
                   run_id or "manual")

    verdict = assess(planned)
    [execution, run_monitor, routed] >> verdict

    @task.short_circuit
    def drifted(verdict: dict, params: dict | None = None) -> bool:
        return bool(verdict["drift"] or (params or {}).get("force"))

    @task(multiple_outputs=True)
    def collect(planned: dict, run_id: str | None = None) -> dict:
        from include.tasks.drift import collect as run

        return run(planned, run_id or "manual")

    collected = collect(planned)
    drifted(verdict) >> collected
    # labeling publishes a dataset version -> train_and_register -> (approved) -> deploy, by their Assets
    TriggerDagRunOperator(task_id="relabel", trigger_dag_id="labeling", wait_for_completion=False,
                          conf={"video_ids": collected["video_ids"]},
                          trigger_run_id="drift__{{ run_id }}", skip_when_already_exists=True)
