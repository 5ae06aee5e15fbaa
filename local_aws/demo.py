"""``make demo``: the pipeline on the local default, narrated.

The local stack comes up; three synthetic surgical videos are generated (their true boxes go to the hidden truth
store) and uploaded with plain boto3 ``put_object``; the messages the ingest Lambda queued are shown; then the real
DAGs run against the stack with ``dag.test()``: ingest_and_extract (frame extraction jobs on the local SageMaker)
and labeling (a Ground Truth job worked by the local workforce, review, a dataset version). The later stages
(training, deploy, drift) join as they land; running the DAGs under a scheduler is issue 10.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from include.config import build_config
from include.lambdas.s3_to_sqs import video_id_for
from include.synthetic import generate_batch
from local_aws import bootstrap, stack
from local_aws.airflow_local import airflow_environment, dag_test
from local_aws.settings import load_settings


def _queued(sqs, logs, url: str, video_ids: list[str], timeout: float = 30.0) -> list[str]:
    """The ingest Lambda's log lines for these videos, once their messages are on the queue.

    The queue is not read here: every receive counts towards the redrive policy, and the messages belong to
    ingest_and_extract.
    """
    deadline = time.time() + timeout
    lines: list[str] = []
    while time.time() < deadline:
        depth = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"])
        group = "/aws/lambda/surgical-s3-to-sqs"
        lines = [e["message"].split("\t")[-1] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]
                 for e in logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"])["events"]
                 if "queued: message" in e["message"] and any(v in e["message"] for v in video_ids)]
        if depth >= len(video_ids) and len(lines) >= len(video_ids):
            break
        time.sleep(0.5)
    return lines


def main() -> int:
    settings = stack.up(load_settings())
    config = build_config("local")
    videos_dir = settings.home / "demo-videos"
    print(f"\n[1/5] generating 3 synthetic surgical videos in {videos_dir} (truth store: {settings.truth_dir})")
    videos = generate_batch(videos_dir, count=3, seconds=8, width=640, height=360, fps=25, seed=int(time.time()),
                            video_format="mixed", truth_dir=settings.truth_dir)
    for video in videos:
        name = Path(video.path).name
        print(f"      {name}: {video.frame_count} frames, {video.width}x{video.height} @ {video.fps} fps")

    s3, sqs = bootstrap.client(settings, "s3"), bootstrap.client(settings, "sqs")
    print(f"\n[2/5] uploading to s3://{config.raw_bucket}/{config.video_prefix}")
    video_ids = []
    for video in videos:
        key = f"{config.video_prefix}{Path(video.path).name}"
        with open(video.path, "rb") as fh:
            put = s3.put_object(Bucket=config.raw_bucket, Key=key, Body=fh)
        video_ids.append(video_id_for(config.raw_bucket, key, put["VersionId"]))
        print(f"      {key}  version {put['VersionId']}")

    url = sqs.get_queue_url(QueueName=config.video_queue)["QueueUrl"]
    print(f"\n[3/5] the s3_to_sqs Lambda (logs in CloudWatch) queued one message per video on {config.video_queue}:")
    lines = _queued(sqs, bootstrap.client(settings, "logs"), url, video_ids)
    for line in lines:
        print(f"      {line}")
    if len(lines) != len(video_ids):
        print("      MISSING: not every upload was queued; see /aws/lambda/surgical-s3-to-sqs")
        return 1

    env = airflow_environment(settings, settings.home / "airflow")
    print("\n[4/5] ingest_and_extract (dag.test): SQS batch -> one SageMaker Processing job per video")
    for _ in range(3):  # as the schedule would: another run picks up what a batch left on the queue
        states, log = dag_test(env, "ingest_and_extract")
        _print_states(states)
        if all(_exists(s3, config.frames_bucket, f"frames/{v}/frames.json") for v in video_ids):
            break
    for video_id in video_ids:
        manifest = json.loads(s3.get_object(Bucket=config.frames_bucket, Key=f"frames/{video_id}/frames.json")
                              ["Body"].read())
        print(f"      {video_id}: {manifest['frame_count']} frames at {manifest['extraction']['fps']:g} fps, "
              f"{manifest['width']}x{manifest['height']} -> s3://{config.frames_bucket}/frames/{video_id}/")
    if states.get("settle") != "success":
        print(log[-3000:])
        return 1

    print("\n[5/5] labeling (dag.test): Ground Truth job (local workforce) -> review -> dataset version")
    states, log = dag_test(env, "labeling", {"video_ids": video_ids})
    _print_states(states)
    if states.get("publish") != "success":
        print(log[-3000:])
        return 1
    latest = json.loads(s3.get_object(Bucket=config.annotations_bucket, Key="datasets/latest.json")["Body"].read())
    card = json.loads(s3.get_object(Bucket=config.annotations_bucket,
                                    Key=f"datasets/{latest['version']}/card.json")["Body"].read())
    print(f"      dataset {card['version']} (parent {card['parent']}): {card['frames']} frames")
    for split, info in card["splits"].items():
        print(f"        {split:<5} {len(info['videos'])} video(s) {info['frames']:>4} frames  boxes {info['boxes']}")
    print(f"      s3://{config.annotations_bucket}/datasets/{card['version']}/  (manifest, COCO per split, card)")

    print(f"\nWhere to look: CloudWatch Logs at {settings.moto_url} (/aws/lambda/surgical-s3-to-sqs, "
          "/aws/sagemaker/ProcessingJobs, /aws/sagemaker/LabelingJobs); SageMaker at "
          f"{settings.sagemaker_url}; Airflow home {settings.home / 'airflow'}")
    print(f"Shell access: source {settings.env_file}  (then boto3 or the aws CLI talk to the stack)")
    print("Stop everything: make demo-down")
    return 0


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


def _print_states(states: dict[str, str]) -> None:
    for task_id, state in sorted(states.items()):
        print(f"      {state:<8} {task_id}")


if __name__ == "__main__":
    sys.exit(main())
