"""ingest_and_extract end to end: uploads -> Lambda -> SQS -> the real DAG (dag.test()) -> real processing jobs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from include.ingest import input_failure
from include.lambdas.s3_to_sqs import MESSAGE_SCHEMA, video_id_for
from include.media import ffmpeg_exe
from include.synthetic import generate_video
from local_aws.settings import REPO_ROOT
from tests.conftest import run_dag_test, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
RAW, FRAMES = "surgical-videos-raw", "surgical-frames-processed"
FPS = 5


def _queue_depth(sqs, name: str) -> int:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _make_inputs(folder: Path) -> dict[str, dict]:
    """Good and bad uploads of one batch: name -> {path, good, seconds}."""
    truth = folder / "truth"
    items = {}
    for name, (seconds, width, height, seed) in {"good-a.mp4": (3, 320, 192, 1), "good-b.avi": (2, 320, 192, 2),
                                                 "uhd.mp4": (1, 3840, 2160, 3)}.items():
        path = folder / name
        generate_video(path, seconds=seconds, width=width, height=height, fps=10, seed=seed, truth_dir=truth)
        items[name] = {"path": path, "good": True, "seconds": seconds}
    whole = (folder / "good-a.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.mp4").write_text("operating room schedule, not a video\n")
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:a", "aac", str(folder / "audio-only.mp4")], check=True)
    for name in ("truncated.mp4", "notes.mp4", "audio-only.mp4"):
        items[name] = {"path": folder / name, "good": False}
    return items


@pytest.fixture(scope="module")
def batch(aws, tmp_path_factory):
    s3, sqs = aws("s3"), aws("sqs")
    folder = tmp_path_factory.mktemp("ingest-batch")
    items = _make_inputs(folder)
    before = _queue_depth(sqs, "video-processing-queue")
    for name, item in items.items():
        put = s3.put_object(Bucket=RAW, Key=f"videos/e2e-{name}", Body=item["path"].read_bytes())
        item["key"] = f"videos/e2e-{name}"
        item["video_id"] = video_id_for(RAW, item["key"], put["VersionId"])
    # S3 invokes the ingest Lambda asynchronously: a run and 2 retries, each of at most its Timeout (60 s)
    wait_for(lambda: _queue_depth(sqs, "video-processing-queue") >= before + len(items), 3 * 60 + 60,
             message=lambda: f"{len(items)} upload messages expected on the queue; "
                             f"{_queue_depth(sqs, 'video-processing-queue') - before} came")
    assert _queue_depth(sqs, "video-processing-queue") == before + len(items)
    return items


@pytest.fixture(scope="module")
def first_run(airflow_home, batch):
    return run_dag_test(airflow_home, REPO_ROOT / "dags", "ingest_and_extract", timeout=900)


def test_good_videos_are_extracted_at_5_fps(aws, batch, first_run):
    states, output = first_run
    assert states["settle"] == "success", output[-6000:]
    s3 = aws("s3")
    for name, item in batch.items():
        if not item["good"]:
            continue
        manifest = json.loads(s3.get_object(Bucket=FRAMES, Key=f"frames/{item['video_id']}/frames.json")["Body"]
                              .read())
        assert abs(manifest["frame_count"] - item["seconds"] * FPS) <= 1, name
        assert manifest["source"]["version_id"] and manifest["extraction"]["fps"] == FPS
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=FRAMES, Prefix=f"frames/{item['video_id']}/")["Contents"]]
        assert len([k for k in keys if k.endswith(".jpg")]) == manifest["frame_count"]
        assert max(manifest["width"], manifest["height"]) <= 1280


def test_bad_videos_are_quarantined_with_a_reason_and_nothing_is_lost(aws, batch, first_run):
    s3 = aws("s3")
    for name, item in batch.items():
        if item["good"]:
            continue
        reason = json.loads(s3.get_object(Bucket=RAW, Key=f"quarantine/{item['video_id']}.reason.json")["Body"]
                            .read())["reason"]
        assert reason.startswith("frame extraction failed: AlgorithmError:"), (name, reason)
        versions = s3.list_object_versions(Bucket=RAW, Prefix=item["key"]).get("Versions", [])
        assert versions == [], f"{name} must have moved to quarantine/"
    assert "staging/" not in str(s3.list_objects_v2(Bucket=RAW, Prefix="staging/").get("Contents", []))


def test_the_queue_is_empty_afterwards(aws, first_run):
    assert _queue_depth(aws("sqs"), "video-processing-queue") == 0


def test_rerunning_for_the_same_keys_creates_no_jobs_or_frames(aws, airflow_home, batch, first_run):
    s3, sm = aws("s3"), aws("sagemaker")
    good = [item for item in batch.values() if item["good"]]
    jobs_before = len(sm.list_processing_jobs(MaxResults=100)["ProcessingJobSummaries"])
    versions_before = len(s3.list_object_versions(Bucket=FRAMES, Prefix="frames/").get("Versions", []))
    states, output = run_dag_test(airflow_home, REPO_ROOT / "dags", "ingest_and_extract",
                                  conf={"video_keys": [item["key"] for item in good]})
    assert states["plan"] == "success", output[-6000:]
    assert states["settle"] == "skipped"  # nothing new: the frames Asset is not updated again
    assert len(sm.list_processing_jobs(MaxResults=100)["ProcessingJobSummaries"]) == jobs_before
    assert len(s3.list_object_versions(Bucket=FRAMES, Prefix="frames/").get("Versions", [])) == versions_before


@pytest.fixture(scope="module")
def all_bad_run(aws, airflow_home, tmp_path_factory, batch, first_run):
    """A batch where every job fails (two bad uploads) plus a duplicate message of a video extracted before (SQS
    delivers at least once): one run must settle all of it."""
    s3, sqs = aws("s3"), aws("sqs")
    folder = tmp_path_factory.mktemp("all-bad")
    (folder / "header-only.mp4").write_bytes(batch["good-a.mp4"]["path"].read_bytes()[:64])
    (folder / "letter.avi").write_text("referral letter, not a video\n")
    bad = {}
    before = _queue_depth(sqs, "video-processing-queue")
    for name in ("header-only.mp4", "letter.avi"):
        key = f"videos/e2e-all-bad-{name}"
        put = s3.put_object(Bucket=RAW, Key=key, Body=(folder / name).read_bytes())
        bad[name] = {"key": key, "video_id": video_id_for(RAW, key, put["VersionId"])}
    wait_for(lambda: _queue_depth(sqs, "video-processing-queue") >= before + len(bad), 3 * 60 + 60,
             message="the all-bad uploads' messages never came")
    good = batch["good-a.mp4"]
    version = s3.head_object(Bucket=RAW, Key=good["key"])["VersionId"]
    duplicate = {"schema": MESSAGE_SCHEMA, "video_id": good["video_id"], "bucket": RAW, "key": good["key"],
                 "version_id": version, "size": 0, "etag": None, "sequencer": None, "event_time": None}
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName="video-processing-queue")["QueueUrl"],
                     MessageBody=json.dumps(duplicate, sort_keys=True))
    jobs_before = {s["ProcessingJobName"] for s in aws("sagemaker").list_processing_jobs(MaxResults=100)[
        "ProcessingJobSummaries"]}
    states, output = run_dag_test(airflow_home, REPO_ROOT / "dags", "ingest_and_extract", timeout=900)
    return {"bad": bad, "states": states, "output": output, "jobs_before": jobs_before}


def test_a_batch_where_every_job_fails_is_settled(aws, all_bad_run):
    s3 = aws("s3")
    states, output = all_bad_run["states"], all_bad_run["output"]
    assert states["plan"] == "success", output[-6000:]
    assert states["settle"] == "skipped", output[-6000:]  # settled, nothing new: the frames Asset is not updated
    for name, item in all_bad_run["bad"].items():
        reason = json.loads(s3.get_object(Bucket=RAW, Key=f"quarantine/{item['video_id']}.reason.json")["Body"]
                            .read())["reason"]
        assert reason.startswith("frame extraction failed: AlgorithmError: "), (name, reason)
        assert input_failure(reason.removeprefix("frame extraction failed: ")), (name, reason)  # the video's fault
        assert s3.list_object_versions(Bucket=RAW, Prefix=item["key"]).get("Versions", []) == [], name
    assert "Contents" not in s3.list_objects_v2(Bucket=RAW, Prefix="staging/")
    assert _queue_depth(aws("sqs"), "video-processing-queue") == 0  # the duplicate's message was deleted too


def test_a_duplicate_message_of_an_extracted_video_starts_no_job(aws, batch, all_bad_run):
    jobs = {s["ProcessingJobName"] for s in aws("sagemaker").list_processing_jobs(MaxResults=100)[
        "ProcessingJobSummaries"]}
    new = jobs - all_bad_run["jobs_before"]
    assert len(new) == 2 and not any(batch["good-a.mp4"]["video_id"] in name for name in new), new
