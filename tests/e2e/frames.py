"""Frames for the labeling tests: generated videos (truth in the stack's hidden store) through ingest_and_extract."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from include.lambdas.s3_to_sqs import video_id_for
from include.synthetic import generate_video
from local_aws.settings import REPO_ROOT, StackSettings
from tests.conftest import run_dag_test, wait_for


def upload_and_extract(aws, airflow_home: dict, local_stack: StackSettings, folder: Path, prefix: str,
                       seeds: Sequence[int], seconds: float = 2) -> list[str]:
    """Upload one generated video per seed, wait for their messages, run ingest_and_extract; the video ids."""
    s3, sqs = aws("s3"), aws("sqs")
    url = sqs.get_queue_url(QueueName="video-processing-queue")["QueueUrl"]

    def queued() -> int:
        return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
                   ["Attributes"]["ApproximateNumberOfMessages"])

    before, video_ids = queued(), []
    for index, seed in enumerate(seeds):
        path = folder / f"{prefix}-{index}.mp4"
        generate_video(path, seconds=seconds, width=480, height=270, fps=10, seed=seed,
                       truth_dir=local_stack.truth_dir)
        key = f"videos/{prefix}-{index}.mp4"
        put = s3.put_object(Bucket="surgical-videos-raw", Key=key, Body=path.read_bytes())
        video_ids.append(video_id_for("surgical-videos-raw", key, put["VersionId"]))
    # S3 invokes the ingest Lambda asynchronously: a run and 2 retries, each of at most its Timeout (60 s)
    wait_for(lambda: queued() >= before + len(seeds), 3 * 60 + 60,
             message=lambda: f"{len(seeds)} upload messages expected on the queue; {queued() - before} came")
    states, output = run_dag_test(airflow_home, REPO_ROOT / "dags", "ingest_and_extract")
    assert states["settle"] == "success", output[-5000:]
    return video_ids
