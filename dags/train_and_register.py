"""
### train_and_register

Dataset version -> SageMaker Training (or a tuning job with the `hpo` param) -> evaluation on the held-out test split
-> Model Registry version in `surgical-detector` (metrics, lineage: dataset version, code commit, DAG run) -> the mAP
promotion rule -> Approved or Rejected (the reason in ApprovalDescription) -> the `approved_model` Asset, only on
approval, which schedules `deploy`.

Scheduled on the `dataset` Asset; triggerable with `dataset_version` and `hyperparameters`. The training job is named
by the dataset version and the hyperparameters: a re-run finds the finished job and the version registered for it
instead of training and registering again. When the champion was scored on another test set, it is re-scored on
the candidate's (the trainer image's `evaluate` command as a Processing job) before the two are compared.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerProcessingOperator,
    SageMakerTrainingOperator,
    SageMakerTuningOperator,
)
from airflow.sdk import DAG, Param, TaskGroup, task
from surgical_mlops.links import with_model_report
from surgical_mlops.promotion import MapPromotionOperator
from surgical_mlops.registry import RegisterModelVersionOnceOperator

from include.assets import APPROVED_MODEL, DATASET
from include.config import build_config
from include.dag_defaults import DEFAULT_ARGS, MACROS, START_DATE

CONFIG = build_config()  # parse time: the preset only (no Variable, no AWS call)

with DAG(
    dag_id="train_and_register",
    description="dataset Asset -> SageMaker Training -> evaluation -> Model Registry -> mAP promotion rule",
    schedule=[DATASET],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    params={
        "dataset_version": Param(None, type=["null", "string"], description="Default: the Asset event's, or latest"),
        "hyperparameters": Param({}, type="object", description="Trainer hyperparameters over the config's"),
        "hpo": Param(False, type="boolean", description="A SageMaker tuning job instead of one training job"),
        "floor_map50": Param(None, type=["null", "number"], minimum=0, maximum=1,
                             description="Promotion floor for mAP@0.5 (default: the config's)"),
    },
    tags=["surgical-mlops", "training"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def plan(params: dict | None = None, triggering_asset_events=None, run_id: str | None = None) -> dict:
        from include.tasks.training import plan as run

        events = [e.extra for e in (triggering_asset_events or {}).get(DATASET, [])]
        return run(params or {}, events, run_id or "manual")

    planned = plan()

    @task.branch
    def choose(completed_job: str | None, hpo: bool) -> str | None:
        """Nothing to fit when the same job finished before (a re-run): evaluate goes on with that job."""
        return None if completed_job else "fit.tune" if hpo else "fit.train"

    with TaskGroup("fit"):
        train = with_model_report(SageMakerTrainingOperator(
            task_id="train", config=planned["training"], wait_for_completion=True, print_log=True, check_interval=10,
            action_if_job_exists="timestamp", retries=0))  # a failing job fails the same way: its reason ends the run
        tune = SageMakerTuningOperator(task_id="tune", config=planned["tuning"], wait_for_completion=True,
                                       check_interval=15, retries=0)

    @task(trigger_rule="none_failed", multiple_outputs=True)
    def evaluate(plan: dict, ti=None, run_id: str | None = None) -> dict:
        from include.tasks import training

        job = training.trained_job(plan, ti.xcom_pull(task_ids="fit.train"), ti.xcom_pull(task_ids="fit.tune"))
        return training.evaluation(plan, job, run_id or "manual")

    branch = choose(planned["completed_job"], planned["hpo"])
    candidate = evaluate(planned)
    branch >> [train, tune]
    [train, tune] >> candidate

    register = RegisterModelVersionOnceOperator(
        task_id="register", image_uri=CONFIG.image_uri("inference"), package_group_name=CONFIG.model_package_group,
        package_group_desc="Surgical instrument and tumor detector (COCO mAP gated)",
        model_url=candidate["model_data"], extras=candidate["extras"],
        package_desc="{{ ti.xcom_pull(task_ids='evaluate', key='training_job') }} on dataset "
                     "{{ ti.xcom_pull(task_ids='evaluate', key='dataset_version') }}")

    with TaskGroup("champion"):
        @task(multiple_outputs=True)
        def find(package_arn: str, candidate: dict, run_id: str | None = None) -> dict:
            from include.tasks.training import champion

            return champion(package_arn, candidate, run_id or "manual")

        @task.branch
        def needs_rescoring(request: dict | None) -> str | None:
            return "champion.rescore" if request else None

        found = find(register.output, candidate)
        rescore = SageMakerProcessingOperator(task_id="rescore", config=found["request"], wait_for_completion=True,
                                              check_interval=10, action_if_job_exists="timestamp")
        needs_rescoring(found["request"]) >> rescore

    promote = with_model_report(MapPromotionOperator(
        task_id="promote", model_package_arn=register.output, trigger_rule="none_failed",
        evaluation_uri=candidate["evaluation_uri"],
        champion_evaluation_uri=found["evaluation_uri"],
        floor_map50="{{ params.floor_map50 if params.floor_map50 is not none else pipeline().promotion_floor_map50 }}",
        max_class_regression="{{ pipeline().promotion_max_class_regression }}",
        confidence="{{ pipeline().promotion_confidence }}", resamples="{{ pipeline().promotion_resamples }}",
        unit="{{ pipeline().promotion_unit }}"))
    rescore >> promote

    @task(outlets=[APPROVED_MODEL])
    def announce(record: dict, candidate: dict, outlet_events=None) -> dict:
        from include.tasks.training import announce as run

        return run(record, candidate, outlet_events[APPROVED_MODEL])

    announce(promote.output, candidate)
