"""``make demo``: the pipeline on the local default, narrated.

Today it covers the first hop of the loop: the local stack comes up, three synthetic surgical videos are generated
(their true boxes go to the hidden truth store), uploaded with plain boto3 ``put_object``, and the messages the
ingest Lambda put on ``video-processing-queue`` are shown. The messages stay on the queue for ingest_and_extract.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from include.config import build_config
from include.synthetic import generate_batch
from local_aws import bootstrap, stack
from local_aws.settings import load_settings


def _peek(sqs, url: str, keys: set[str], timeout: float = 30.0) -> dict[str, dict]:
    """Read the queue's messages for ``keys`` without consuming them (visibility 0: they stay for the consumer)."""
    found: dict[str, dict] = {}
    deadline = time.time() + timeout
    while time.time() < deadline and len(found) < len(keys):
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0)
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            if body.get("key") in keys:
                found[body["key"]] = body
    return found


def main() -> int:
    settings = stack.up(load_settings())
    config = build_config("local")
    videos_dir = settings.home / "demo-videos"
    print(f"\n[1/3] generating 3 synthetic surgical videos in {videos_dir} (truth store: {settings.truth_dir})")
    videos = generate_batch(videos_dir, count=3, seconds=8, width=640, height=360, fps=25, seed=int(time.time()),
                            video_format="mixed", truth_dir=settings.truth_dir)
    for video in videos:
        name = Path(video.path).name
        print(f"      {name}: {video.frame_count} frames, {video.width}x{video.height} @ {video.fps} fps")

    s3, sqs = bootstrap.client(settings, "s3"), bootstrap.client(settings, "sqs")
    print(f"\n[2/3] uploading to s3://{config.raw_bucket}/{config.video_prefix}")
    keys = set()
    for video in videos:
        key = f"{config.video_prefix}{Path(video.path).name}"
        with open(video.path, "rb") as fh:
            put = s3.put_object(Bucket=config.raw_bucket, Key=key, Body=fh)
        keys.add(key)
        print(f"      {key}  version {put['VersionId']}")

    url = sqs.get_queue_url(QueueName=config.video_queue)["QueueUrl"]
    print(f"\n[3/3] messages the s3_to_sqs Lambda queued on {config.video_queue}:")
    found = _peek(sqs, url, keys)
    for key in sorted(keys):
        message = found.get(key)
        if message:
            print(f"      video_id={message['video_id']} size={message['size']} version={message['version_id']}")
        else:
            print(f"      MISSING: no message for {key}")
    print(f"\nLambda logs: CloudWatch Logs group /aws/lambda/surgical-s3-to-sqs at {settings.moto_url}")
    print(f"Shell access: source {settings.env_file}  (then boto3 or the aws CLI talk to the stack)")
    print("Stop everything: make demo-down")
    return 0 if len(found) == len(keys) else 1


if __name__ == "__main__":
    sys.exit(main())
