"""
### labeling

New frames -> Ground Truth bounding boxes (`scalpel`, `retractor`, `tumor`) -> review of doubtful labels -> COCO ->
an immutable, content-addressed dataset version.

Scheduled on the `frames` Asset (the videos of its events), or triggered from the UI with `video_ids`. Only frames
that no dataset version has labeled go to the labeling job. Frames with a box below the confidence threshold go
through a second, label adjustment job before they are published. The new version (parent: the previous one) is
written once under `s3://surgical-annotations/datasets/<version>/` and updates the `dataset` Asset, which schedules
`train_and_register`. No new frames: the run skips cleanly.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, TaskGroup, task
from surgical_mlops.ground_truth import SageMakerLabelingOperator

from include.assets import DATASET, FRAMES
from include.dag_defaults import DEFAULT_ARGS, MACROS, START_DATE

with DAG(
    dag_id="labeling",
    description="frames Asset -> Ground Truth labeling + review -> COCO dataset version -> dataset Asset",
    schedule=[FRAMES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    params={"video_ids": Param([], type="array", items={"type": "string"},
                               description="Label the frames of these videos (default: the frames Asset's events)")},
    tags=["surgical-mlops", "labeling"],
    doc_md=__doc__,
) as dag:

    @task
    def select_frames(params: dict | None = None, triggering_asset_events=None, run_id: str | None = None) -> dict:
        from include.tasks.labeling import select_frames as run

        videos = list(params["video_ids"]) if params else []
        for event in (triggering_asset_events or {}).get(FRAMES, []):
            videos += event.extra.get("videos", [])
        return run(videos, run_id or "manual")

    request = select_frames()

    with TaskGroup("label"):
        first_pass = SageMakerLabelingOperator(task_id="first_pass", config=request, check_interval=5)

        @task.branch
        def needs_review(review_request: dict | None) -> str:
            return "label.review" if review_request else "publish"

        @task
        def triage(job: dict, run_id: str | None = None) -> dict | None:
            from include.tasks.labeling import triage as run

            return run(job["LabelingJob"], run_id or "manual")

        review_request = triage(first_pass.output)
        review = SageMakerLabelingOperator(task_id="review", config=review_request, check_interval=5)
        branch = needs_review(review_request)
        branch >> review

    @task(trigger_rule="none_failed_min_one_success", outlets=[DATASET])
    def publish(first: dict, ti=None, outlet_events=None) -> dict:
        from include.tasks.labeling import publish as run

        reviewed = ti.xcom_pull(task_ids="label.review")
        return run(first["LabelingJob"], reviewed["LabelingJob"] if reviewed else None, outlet_events[DATASET])

    done = publish(first_pass.output)
    [review, branch] >> done
