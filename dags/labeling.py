"""
### labeling

New frames -> bounding boxes (`scalpel`, `retractor`, `tumor`) by SageMaker Ground Truth or Label Studio -> review of
doubtful labels -> COCO -> an immutable, content-addressed dataset version.

Two backends behind one interface (config `labeling_backend`, or the run's `backend` param): both take the same
CreateLabelingJob request and leave the same Ground Truth output manifest. Ground Truth: a labeling job.
Label Studio: a project per round, its tasks pre-annotated with the champion model's predictions (a Processing job
of the trainer image), a reschedule-mode sensor while people label, the annotations exported and consolidated.

Scheduled on the `frames` Asset (the videos of its events), or triggered from the UI with `video_ids`. Only frames
that no dataset version has labeled go to the labeling job. Frames with a box below the confidence threshold go
through a second, label adjustment job before they are published. The new version (parent: the previous one) is
written once under `s3://surgical-annotations/datasets/<version>/` and updates the `dataset` Asset, which schedules
`train_and_register`. No new frames: the run skips cleanly.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator
from airflow.sdk import DAG, Param, TaskGroup, task
from surgical_mlops.ground_truth import SageMakerLabelingOperator
from surgical_mlops.label_studio import LabelStudioExportOperator, LabelStudioRoundOperator, LabelStudioRoundSensor

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
                               description="Label the frames of these videos (default: the frames Asset's events)"),
            "backend": Param(None, type=["null", "string"], enum=[None, "ground_truth", "label_studio"],
                             description="Labeling backend of this run (default: config labeling_backend)")},
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

    @task.branch
    def backend(params: dict | None = None) -> str:
        from include.tasks.labeling import backend as run

        chosen = run((params or {}).get("backend"))
        return "ground_truth.first_pass" if chosen == "ground_truth" else "label_studio.first_pass.plan"

    def label_studio_round(group_id: str, config, predictions=None) -> tuple:
        """One Label Studio round: start (project, storage, tasks) -> wait for annotators -> export as a manifest;
        returns (start, export)."""
        with TaskGroup(group_id):
            start = LabelStudioRoundOperator(task_id="start", config=config, predictions=predictions,
                                             trigger_rule="none_failed_min_one_success")
            wait = LabelStudioRoundSensor(task_id="wait", project_id=start.output["project_id"], timeout=7 * 86400,
                                          poke_interval=10)
            export = LabelStudioExportOperator(task_id="export", config=config, project_id=start.output["project_id"])
            wait >> export
        return start, export

    ground_truth, label_studio = TaskGroup("ground_truth"), TaskGroup("label_studio")
    with ground_truth:
        gt_first = SageMakerLabelingOperator(task_id="first_pass", config=request, check_interval=5)
    with label_studio, TaskGroup("first_pass"):
        @task(multiple_outputs=True)
        def plan(request: dict, run_id: str | None = None) -> dict:
            """The champion's predictions of these frames, to pre-annotate them (none without a champion)."""
            from include.tasks.labeling import pre_annotation

            return pre_annotation(request, run_id or "manual")

        @task.branch
        def needs_predictions(processing: dict | None) -> str:
            return "label_studio.first_pass.predict" if processing else "label_studio.first_pass.round.start"

        planned = plan(request)
        predict = SageMakerProcessingOperator(task_id="predict", config=planned["request"], check_interval=10)
        # The round's request comes through `plan`: with select_frames as a direct upstream, `start` (trigger rule
        # none_failed_min_one_success, for a skipped `predict`) would also run when Ground Truth was chosen.
        ls_first_start, ls_first = label_studio_round("round", planned["round"], planned["predictions"])
        needs_predictions(planned["request"]) >> [predict, ls_first_start]
        predict >> ls_first_start

    @task(trigger_rule="none_failed_min_one_success")
    def first_pass(ti=None) -> dict:
        from include.tasks.labeling import first_pass_result

        return first_pass_result(ti)

    @task
    def triage(job: dict, run_id: str | None = None) -> dict | None:
        from include.tasks.labeling import triage as run

        return run(job["LabelingJob"], run_id or "manual")

    @task.branch
    def needs_review(review_request: dict | None, params: dict | None = None) -> str:
        from include.tasks.labeling import backend as run

        if not review_request:
            return "publish"
        chosen = run((params or {}).get("backend"))
        return "ground_truth.review" if chosen == "ground_truth" else "label_studio.review.start"

    route = backend()
    route >> [gt_first, planned]
    first = first_pass()
    [gt_first, ls_first] >> first
    review_request = triage(first)
    review_route = needs_review(review_request)
    with ground_truth:
        gt_review = SageMakerLabelingOperator(task_id="review", config=review_request, check_interval=5)
    with label_studio:
        ls_review_start, ls_review = label_studio_round("review", review_request)
    review_route >> [gt_review, ls_review_start]

    @task(trigger_rule="none_failed_min_one_success", outlets=[DATASET])
    def publish(first: dict, ti=None, outlet_events=None) -> dict:
        from include.tasks.labeling import publish as run
        from include.tasks.labeling import review_result

        reviewed = review_result(ti)
        return run(first["LabelingJob"], reviewed["LabelingJob"] if reviewed else None, outlet_events[DATASET])

    done = publish(first)
    [review_route, gt_review, ls_review] >> done
