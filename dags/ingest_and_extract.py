"""
### ingest_and_extract

Uploaded surgical videos -> frames, one SageMaker Processing job (FFmpeg, 5 fps by default) per video.

`s3://surgical-videos-raw/videos/` -> Lambda `s3_to_sqs` -> `video-processing-queue` -> **this DAG**: the SQS sensor
takes a batch of messages; each video becomes a mapped processing job with a deterministic name (re-runs never
duplicate work); messages are deleted only once the frames are written; a video that fails extraction is moved to
`quarantine/` with the job's reason and the rest of the batch goes on (also when every job of the batch failed); a job
that failed for a reason of the platform's, not the video's, quarantines nothing: its message stays for a retry. New
frames update the `frames` Asset, which schedules `labeling`.

**Reprocess or backfill** from the UI: trigger with `video_keys` (keys under `videos/`); the queue is not read.
"""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator
from airflow.providers.amazon.aws.sensors.sqs import SqsSensor
from airflow.sdk import DAG, Param, TaskGroup, task

from include.assets import FRAMES
from include.config import build_config
from include.dag_defaults import DEFAULT_ARGS, MACROS, START_DATE

CONFIG = build_config()  # parse time: the preset only (no Variable, no AWS call)

with DAG(
    dag_id="ingest_and_extract",
    description="S3 upload -> SQS -> frame extraction in SageMaker Processing -> frames Asset",
    schedule=CONFIG.ingest_schedule,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    user_defined_macros=MACROS,
    params={"video_keys": Param([], type="array", items={"type": "string", "pattern": "^videos/.+"},
                                description="Reprocess these keys instead of reading the queue")},
    tags=["surgical-mlops", "ingest"],
    doc_md=__doc__,
) as dag:

    @task.branch
    def choose_source(params: dict | None = None) -> str:
        return "collect.videos_from_keys" if params and params["video_keys"] else "collect.wait_for_videos"

    with TaskGroup("collect"):
        wait_for_videos = SqsSensor(
            task_id="wait_for_videos",
            sqs_queue="{{ pipeline().queue_url(pipeline().video_queue) }}",
            max_messages=CONFIG.sqs_batch_size,
            num_batches=3,  # SQS may return fewer messages than asked: up to 3 receives fill the batch
            wait_time_seconds=10,
            delete_message_on_reception=False,  # deleted only once the frames are written
            mode="reschedule",
            poke_interval=30,
            timeout=8 * 60,
            soft_fail=True,  # no upload in this interval: the run is skipped, not failed
        )

        @task
        def videos_from_keys(params: dict | None = None) -> list[dict]:
            from include.tasks.ingest import videos_from_keys as run

            return run(params["video_keys"] if params else [])

        from_keys = videos_from_keys()

    @task(trigger_rule="none_failed_min_one_success")
    def plan(explicit: list[dict] | None, run_id: str | None = None, ti=None) -> list[dict]:
        """One CreateProcessingJob request per video that needs one (the batch goes to XCom key 'videos')."""
        from include.tasks.ingest import plan as run

        messages = ti.xcom_pull(task_ids="collect.wait_for_videos", key="messages")
        result = run(messages or [], explicit or [], run_id or "manual")
        ti.xcom_push(key="videos", value=result["videos"])
        ti.xcom_push(key="planned", value=result["planned"])
        return result["requests"]

    planned = plan(from_keys)

    with TaskGroup("extract"):
        extract_frames = SageMakerProcessingOperator.partial(
            task_id="extract_frames",
            wait_for_completion=True,
            check_interval=10,
            action_if_job_exists="timestamp",  # only reached on a retry of a failed job: plan skips done work
            retries=0,  # a bad video fails the same way every time; settle quarantines it
        ).expand(config=planned)

    # all_done: a batch where every job failed is settled too (its bad videos quarantined, their messages deleted)
    @task(trigger_rule="all_done", outlets=[FRAMES])
    def settle(ti=None, outlet_events=None) -> dict:
        from include.tasks.ingest import settle as run

        return run(ti.xcom_pull(task_ids="plan", key="videos") or [], outlet_events[FRAMES],
                   ti.xcom_pull(task_ids="plan", key="planned") or [])

    choose_source() >> [wait_for_videos, from_keys]
    wait_for_videos >> planned
    extract_frames >> settle()
