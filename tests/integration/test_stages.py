"""dev and prod side by side in one account (issue 19): infra/foundation.yaml deployed for stage dev and for stage
prod into the local stack's one account, next to the local stage, as infra/cicd.yaml deploys them into one AWS
account (StageSuffix and BucketSuffix "-<stage>", the parameters tools/ci_release.py writes). Each stage's stack
comes up with names of its own; an upload to a stage's raw bucket reaches that stage's Lambda and queue only; and
ingest_and_extract run with PIPELINE_ENV=<stage> (the stage's preset in include/config.py, its KMS alias resolved
to the stage's key) by the stage's own Airflow (as each stage has its own MWAA environment) writes the frames to
that stage's frames bucket only.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from include.config import STAGE_NAMED_FIELDS, build_config
from include.lambdas.s3_to_sqs import video_id_for
from include.synthetic import generate_video
from local_aws import bootstrap
from local_aws.settings import ACCOUNT_ID, REPO_ROOT
from tests.conftest import run_dag_test, wait_for

pytestmark = pytest.mark.integration

STAGES = ("dev", "prod")
# Resources whose names are account-wide (a second stage with the same name could not be created).
NAMED_TYPES = ("AWS::S3::Bucket", "AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::Lambda::Function",
               "AWS::Logs::LogGroup", "AWS::KMS::Alias")


def _stack_name(stage: str) -> str:
    return bootstrap.FOUNDATION_STACK if stage == "local" else f"surgical-foundation-{stage}"


def _resources(aws: Any, stage: str) -> dict[str, tuple[str, str]]:
    summaries = aws("cloudformation").list_stack_resources(StackName=_stack_name(stage))["StackResourceSummaries"]
    return {r["LogicalResourceId"]: (r["ResourceType"], r["PhysicalResourceId"]) for r in summaries}


@pytest.fixture(scope="module")
def stages(local_stack, aws) -> dict[str, dict[str, str]]:
    """The foundation stack of dev and of prod, deployed and reconciled as bootstrap.deploy does for local, and each
    stage's roles (infra/platform.yaml, infra/mwaa.yaml: surgical-roles-<stage>)."""
    code_keys = bootstrap.upload_lambda_code(local_stack)
    template = bootstrap._load_template(bootstrap.FOUNDATION_TEMPLATE)
    outputs = {}
    for stage in STAGES:
        parameters = {"ArtifactsBucket": bootstrap.ARTIFACTS_BUCKET, "BucketSuffix": f"-{stage}",
                      "StageSuffix": f"-{stage}", **code_keys}
        outputs[stage] = bootstrap.deploy_stack(local_stack, _stack_name(stage), bootstrap.FOUNDATION_TEMPLATE,
                                                parameters)
        physical = {logical: ids[1] for logical, ids in _resources(aws, stage).items()}
        bootstrap.reconcile(local_stack, template, physical)
        bootstrap.deploy_roles(local_stack, outputs[stage], stage)
    return outputs


def test_both_stages_come_up_next_to_local_with_names_of_their_own(aws, stages):
    cfn = aws("cloudformation")
    names: dict[str, dict[str, str]] = {}
    for stage in ("local", *STAGES):
        status = cfn.describe_stacks(StackName=_stack_name(stage))["Stacks"][0]["StackStatus"]
        assert status in ("CREATE_COMPLETE", "UPDATE_COMPLETE"), (stage, status)
        names[stage] = {logical: physical for logical, (kind, physical) in _resources(aws, stage).items()
                        if kind in NAMED_TYPES}
    assert set(names["dev"]) == set(names["prod"]) == set(names["local"])
    for logical in names["local"]:
        assert len({names[stage][logical] for stage in names}) == 3, (logical, [names[s][logical] for s in names])
    kms, lam, sqs, s3 = aws("kms"), aws("lambda"), aws("sqs"), aws("s3")
    keys = set()
    for stage in ("local", *STAGES):
        config = build_config(stage)
        # The stage's preset names what its stack created: the DAGs of a stage find their own resources.
        for bucket in (config.raw_bucket, config.frames_bucket, config.annotations_bucket, config.models_bucket):
            s3.head_bucket(Bucket=bucket)
        sqs.get_queue_url(QueueName=config.video_queue)
        sqs.get_queue_url(QueueName=config.video_dlq)
        keys.add(kms.describe_key(KeyId=config.kms_key_alias)["KeyMetadata"]["Arn"])
        suffix = "" if stage == "local" else f"-{stage}"
        function = lam.get_function(FunctionName=f"surgical-s3-to-sqs{suffix}")["Configuration"]
        variables = function["Environment"]["Variables"]
        assert variables["QUEUE_URL"].rsplit("/", 1)[1] == config.video_queue, stage
        assert variables["IDEMPOTENCY_TABLE"] == f"video-ingest-idempotency{suffix}", stage
        if stage != "local":
            assert stages[stage]["VideoQueueUrl"].rsplit("/", 1)[1] == config.video_queue
            assert stages[stage]["RawVideosBucketName"] == config.raw_bucket
    assert len(keys) == 3, "each stage encrypts with its own data key"
    for field in STAGE_NAMED_FIELDS:
        assert len({getattr(build_config(stage), field) for stage in ("local", *STAGES)}) == 3, field


def _depth(sqs: Any, queue: str) -> int:
    """Messages on the queue, visible or in flight (read without receiving: every receive counts towards the
    queue's maxReceiveCount, after which SQS moves the message to the dead-letter queue)."""
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def _peek(sqs: Any, queue: str) -> list[dict[str, Any]]:
    """The queue's messages, received once and made visible again at once for the DAG."""
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1)
    return [json.loads(message["Body"]) for message in response.get("Messages", [])]


@pytest.fixture(scope="module")
def uploads(aws, local_stack, stages, tmp_path_factory) -> dict[str, dict[str, str]]:
    """One short low-resolution video per stage, uploaded to that stage's raw bucket."""
    folder, s3 = tmp_path_factory.mktemp("stage-videos"), aws("s3")
    uploaded = {}
    for seed, stage in enumerate(STAGES, start=41):
        config = build_config(stage)
        path = folder / f"{stage}.mp4"
        generate_video(path, seconds=2, width=160, height=96, fps=10, seed=seed, truth_dir=local_stack.truth_dir)
        key = f"videos/stage-{stage}.mp4"
        put = s3.put_object(Bucket=config.raw_bucket, Key=key, Body=path.read_bytes())
        uploaded[stage] = {"key": key, "video_id": video_id_for(config.raw_bucket, key, put["VersionId"])}
    return uploaded


def _queued(aws: Any, stage: str, video_id: str) -> bool:
    """Whether the stage's Lambda has logged the upload's message as sent (its run's lines are written when the run
    has ended: everything it sent, to whichever queue, was sent by then)."""
    logs = aws("logs")
    try:
        pages = list(logs.get_paginator("filter_log_events").paginate(
            logGroupName=f"/aws/lambda/surgical-s3-to-sqs-{stage}"))
    except logs.exceptions.ResourceNotFoundException:  # no run has logged yet
        return False
    return any(f"\tvideo_id={video_id} queued: " in event["message"]
               for page in pages for event in page["events"])


def test_an_upload_reaches_its_own_stage_queue_only(aws, uploads):
    sqs = aws("sqs")
    queues = {stage: build_config(stage).video_queue for stage in STAGES}
    # S3 runs each stage's Lambda asynchronously: a run and 2 retries, each of at most the function's Timeout (60 s)
    wait_for(lambda: all(_queued(aws, stage, uploads[stage]["video_id"]) for stage in STAGES)
             and all(_depth(sqs, queue) for queue in queues.values()), 3 * 60 + 60,
             message=lambda: f"each stage's upload on its queue expected; depths "
                             f"{ {stage: _depth(sqs, queue) for stage, queue in queues.items()} }")
    # every stage's run has ended (its 'queued' line is logged when the run ends, after its sends): a message it sent
    # to another stage's queue as well is there now
    for stage, queue in queues.items():
        config = build_config(stage)
        messages = _peek(sqs, queue)
        assert [(m["bucket"], m["key"]) for m in messages] == [(config.raw_bucket, uploads[stage]["key"])], \
            (stage, messages)
        assert _depth(sqs, config.video_dlq) == 0, stage


@pytest.fixture(scope="module")
def stage_airflow(local_stack, tmp_path_factory, stages):
    """``stage_airflow(stage)``: the environment of that stage's Airflow. Each stage has an Airflow of its own, as
    each has its own MWAA environment: one metadata database holds one active asset per name, and the stages' DAGs
    declare the same assets on their own buckets (``frames`` is s3://surgical-frames-processed-<stage>/frames).
    Each runs as its stage's MWAA execution role (surgical-mwaa-execution-<stage>)."""
    from local_aws.airflow_local import airflow_environment

    homes: dict[str, dict[str, str]] = {}

    def environment(stage: str) -> dict[str, str]:
        if stage not in homes:
            home = tmp_path_factory.mktemp(f"airflow-{stage}")
            role = f"arn:aws:iam::{ACCOUNT_ID}:role/surgical-mwaa-execution-{stage}"
            homes[stage] = {**airflow_environment(local_stack, home, role), "PIPELINE_ENV": stage}
        return homes[stage]

    return environment


@pytest.mark.parametrize("stage", STAGES)
def test_ingest_and_extract_of_a_stage_writes_its_own_frames(aws, stage_airflow, uploads, stage):
    config, other = build_config(stage), build_config("prod" if stage == "dev" else "dev")
    video_id = uploads[stage]["video_id"]
    states, output = run_dag_test(stage_airflow(stage), REPO_ROOT / "dags", "ingest_and_extract", timeout=600)
    assert states.get("settle") == "success", output[-6000:]
    s3 = aws("s3")
    manifest = json.loads(s3.get_object(Bucket=config.frames_bucket, Key=f"frames/{video_id}/frames.json")["Body"]
                          .read())
    assert manifest["frame_count"] > 0 and manifest["source"]["bucket"] == config.raw_bucket
    for bucket in (other.frames_bucket, build_config("local").frames_bucket):
        assert not s3.list_objects_v2(Bucket=bucket, Prefix=f"frames/{video_id}/").get("Contents"), bucket
    # The run consumed its own stage's queue; the other stage's message waits for that stage's DAG.
    assert _depth(aws("sqs"), config.video_queue) == 0 and _depth(aws("sqs"), config.video_dlq) == 0
    if stage == "dev":  # prod's message is still waiting for prod's DAG
        assert _depth(aws("sqs"), other.video_queue) == 1
    jobs = aws("sagemaker").list_processing_jobs(NameContains=video_id)["ProcessingJobSummaries"]
    assert [j["ProcessingJobStatus"] for j in jobs] == ["Completed"]
    described = aws("sagemaker").describe_processing_job(ProcessingJobName=jobs[0]["ProcessingJobName"])
    assert described["RoleArn"] == config.sagemaker_role_arn
    assert described["ProcessingOutputConfig"]["KmsKeyId"] == aws("kms").describe_key(
        KeyId=config.kms_key_alias)["KeyMetadata"]["Arn"]
