"""The MWAA execution role grants what the DAGs do: every AWS call of every task, on the resources the pipeline's own
request builders name (job names, endpoint, alarms, queues, buckets), is evaluated against the role's policies in
infra/mwaa.yaml with moto's IAM policy engine, for the dev and the prod stage and for the local stack (whose
bootstrap deploys the role with stage local and the unsuffixed names; least privilege must also be enough: the IAM
lint checks that grants are not too broad, this checks that they suffice).

The calls are listed per task below, with the resource the code builds; a task that starts calling something new
adds a line here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from moto.iam.access_control import IAMPolicy, PermissionResult

from include import deploy, ingest, monitoring, training
from include.config import PipelineConfig, build_config
from include.lambdas.s3_to_sqs import video_id_for
from include.tasks import labeling as labeling_tasks
from local_aws.settings import REPO_ROOT
from tools import iam_lint

TEMPLATE = REPO_ROOT / "infra" / "mwaa.yaml"
ROLE = "AirflowExecutionRole"
ACCOUNT, REGION = iam_lint.ACCOUNT, iam_lint.REGION
DATA_KEY = "arn:aws:kms:us-east-1:123456789012:key/1111aaaa-0000-0000-0000-000000000000"
CHAMPION = {"ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/surgical-detector/3",
            "ModelPackageVersion": 3, "InferenceSpecification": {"Containers": [
                {"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/surgical-mlops/inference:latest",
                 "ModelDataUrl": "s3://surgical-models/training/j/output/model.tar.gz"}]}}
DATASET = "d" * 20  # a dataset version (content hash); low entropy keeps the secrets scan quiet


def role_policies(stage: str) -> list[dict[str, Any]]:
    """The role's policy documents, rendered for ``stage`` (the suffix the stage's preset uses: tools/ci_release.py
    for dev/prod, none locally, as local_aws/bootstrap.py deploys it)."""
    template = iam_lint._load(TEMPLATE)
    render = iam_lint.Renderer(template)
    suffix = "" if stage == "local" else f"-{stage}"
    render.parameters.update({"Stage": stage, "StageSuffix": suffix, "BucketSuffix": suffix, "DataKeyArn": DATA_KEY})
    props = template["Resources"][ROLE]["Properties"]
    return [render(policy["PolicyDocument"]) for policy in props["Policies"]]


def decision(policies: list[dict[str, Any]], action: str, resource: str, context: dict[str, str] | None = None
             ) -> bool:
    """IAM's rule over identity policies: an explicit deny wins, else some statement must allow. Statement by
    statement: moto's engine answers DENIED for an Allow statement whose condition does not match (IAM: it does not
    apply), which would let one scoped Allow veto another."""
    results = []
    for policy in policies:
        for statement in iam_lint._as_list(policy["Statement"]):
            result = IAMPolicy(json.dumps({"Version": "2012-10-17", "Statement": [statement]})).is_action_permitted(
                action, resource, incoming_condition_values=context)
            if statement["Effect"] == "Allow" and result == PermissionResult.DENIED:
                result = PermissionResult.NEUTRAL
            results.append(result)
    return PermissionResult.DENIED not in results and PermissionResult.PERMITTED in results


def _arn(config: PipelineConfig, kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{config.region}:{config.account_id}:{kind}/{name.lower()}"


def needs(config: PipelineConfig) -> Iterator[tuple[str, str, str, dict[str, str] | None]]:
    """(task, action, resource, condition context) of every call the DAGs' tasks make with aws_default."""
    video = ingest.Video(video_id_for(config.raw_bucket, "videos/case.mp4", "v1"), config.raw_bucket,
                         "videos/case.mp4", "v1", 1024)
    hps = training.hyperparameters(config, {})
    jobs = {
        "ingest": ingest.processing_request(video, config, "scheduled__1")["ProcessingJobName"],
        "pre-annotation": f"predict-{'0' * 20}",  # include/tasks/labeling.py: predict-<sha256[:20]>
        "champion re-scoring": training.champion_evaluation_request(config, CHAMPION, DATASET, "m")[
            "ProcessingJobName"],
        "drift baseline": monitoring.baseline_request(config, DATASET, "s3://b/e.json", "m")["ProcessingJobName"],
        "drift monitor": monitoring.processing_monitor_request(
            config, DATASET, datetime(2026, 12, 3, 9, tzinfo=UTC), datetime(2026, 12, 3, 10, tzinfo=UTC), [],
            "m")["ProcessingJobName"],
    }
    sm = "sagemaker"
    pass_role = ("iam:PassRole", f"arn:aws:iam::{config.account_id}:role/{config.sagemaker_role_name}",
                 {"iam:PassedToService": "sagemaker.amazonaws.com"})
    for task, job in jobs.items():
        for action in ("CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob", "AddTags"):
            yield task, f"{sm}:{action}", _arn(config, "processing-job", job), None
        yield (task, *pass_role)
    yield "ingest", f"{sm}:ListProcessingJobs", "*", None
    train = training.training_job_request(config, DATASET, hps, "m", "abc")["TrainingJobName"]
    tune = training.tuning_job_request(config, DATASET, hps, "m", "abc")["HyperParameterTuningJobName"]
    for action in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob", "AddTags"):
        yield "train", f"{sm}:{action}", _arn(config, "training-job", train), None
    for action in ("CreateHyperParameterTuningJob", "DescribeHyperParameterTuningJob"):
        yield "tune", f"{sm}:{action}", _arn(config, "hyper-parameter-tuning-job", tune), None
    yield ("train", *pass_role)
    group = config.model_package_group
    for action in ("CreateModelPackageGroup", "ListModelPackages"):
        yield "register", f"{sm}:{action}", _arn(config, "model-package-group", group), None
    for action in ("CreateModelPackage", "DescribeModelPackage", "UpdateModelPackage"):
        yield "register", f"{sm}:{action}", _arn(config, "model-package", f"{group}/3"), None
    name = deploy.resource_name(config, CHAMPION)
    for action in ("CreateModel", "DescribeModel"):
        yield "deploy", f"{sm}:{action}", _arn(config, "model", name), None
    yield ("deploy", *pass_role)
    for action in ("CreateEndpointConfig", "DescribeEndpointConfig"):
        yield "deploy", f"{sm}:{action}", _arn(config, "endpoint-config", name), None
    for action in ("CreateEndpoint", "UpdateEndpoint", "DescribeEndpoint", "DeleteEndpoint", "InvokeEndpoint"):
        yield "deploy", f"{sm}:{action}", _arn(config, "endpoint", config.endpoint_name), None
    for alarm in config.alarm_names:
        yield "drift assess", "cloudwatch:DescribeAlarms", f"arn:aws:cloudwatch:{config.region}:" \
            f"{config.account_id}:alarm:{alarm}", None
    yield "drift assess", "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": monitoring.METRICS_NAMESPACE}
    schedule = _arn(config, "monitoring-schedule", config.monitoring_schedule_name)
    for action in ("CreateMonitoringSchedule", "UpdateMonitoringSchedule", "DescribeMonitoringSchedule",
                   "StartMonitoringSchedule"):
        yield "drift monitor (model_monitor opt-in)", f"{sm}:{action}", schedule, None
    yield "drift monitor (model_monitor opt-in)", f"{sm}:ListMonitoringExecutions", "*", None
    labeling_job = labeling_tasks._request(config, "label-0123456789abcdef0123", "s3://b/in.manifest",
                                           config.label_attribute, False, "m")["LabelingJobName"]
    for action in ("CreateLabelingJob", "DescribeLabelingJob"):
        yield "labeling (ground_truth opt-in)", f"{sm}:{action}", _arn(config, "labeling-job", labeling_job), None
    yield "any task", "kms:DescribeKey", DATA_KEY, None
    queue = f"arn:aws:sqs:{config.region}:{config.account_id}:{config.video_queue}"
    for action in ("ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes"):
        yield "ingest", f"sqs:{action}", queue, None
    yield "ingest", "sqs:SendMessage", f"arn:aws:sqs:{config.region}:{config.account_id}:{config.video_dlq}", None
    for bucket in (config.frames_bucket, config.annotations_bucket, config.models_bucket):
        yield "any task", "s3:ListBucket", f"arn:aws:s3:::{bucket}", None
        for action in ("GetObject", "PutObject"):
            yield "any task", f"s3:{action}", f"arn:aws:s3:::{bucket}/some/key", None
    for action in ("GetObjectVersion", "PutObject", "DeleteObject"):
        yield "ingest", f"s3:{action}", f"arn:aws:s3:::{config.raw_bucket}/videos/case.mp4", None
    yield "job logs (print_log)", "logs:GetLogEvents", f"arn:aws:logs:{config.region}:{config.account_id}:" \
        "log-group:/aws/sagemaker/ProcessingJobs:log-stream:x", None


@pytest.mark.parametrize("stage", ["dev", "prod", "local"])
def test_the_execution_role_allows_every_call_the_dags_make(stage):
    config = build_config(stage, {"kms_key_alias": None})
    policies = role_policies(stage)
    missing = [f"{task}: {action} on {resource}" for task, action, resource, context in needs(config)
               if not decision(policies, action, resource, context)]
    assert missing == [], "the MWAA execution role (infra/mwaa.yaml) lacks:\n" + "\n".join(missing)


def test_the_check_can_fail():
    """A role without the drift leg's grants is caught: the check is not vacuous."""
    config = build_config("dev")
    policies = role_policies("dev")
    for policy in policies:
        policy["Statement"] = [s for s in policy["Statement"] if "cloudwatch:DescribeAlarms" not in
                               iam_lint._as_list(s.get("Action"))]
    assert not decision(policies, "cloudwatch:DescribeAlarms",
                        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{config.alarm_names[0]}")
    assert not decision(role_policies("dev"), "iam:PassRole",
                        f"arn:aws:iam::{ACCOUNT}:role/{config.sagemaker_role_name}",
                        {"iam:PassedToService": "lambda.amazonaws.com"})
    assert not decision(role_policies("dev"), "sagemaker:CreateProcessingJob",
                        _arn(config, "processing-job", "anything-else"))
