"""deploy's task bodies (include/tasks/deploy.py): what plan decides (which package, what to create, what to roll
back to, whether there is anything to do), the branch, the verification, the smoke test, the rollback and the
record. Real boto3 clients with botocore's Stubber: every call is checked with its exact parameters, and every
stubbed call must have been made."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import boto3
import botocore.waiter
import pytest
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import ClientError, WaiterError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from include import deploy
from include.config import build_config
from include.tasks import deploy as tasks

ENDPOINT = "detector-ep"
GROUP = "detector-group"
MODELS_BUCKET = "surgical-models"
FRAMES_BUCKET = "surgical-frames-processed"
KMS = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
# Endpoint and group differ (their defaults are the same name), so a mix-up of the two shows.
CONFIG = build_config("local", {"region": "us-east-1", "kms_key_arn": KMS, "endpoint_name": ENDPOINT,
                                "model_package_group": GROUP, "smoke_test_frames": 2, "smoke_min_agreement": 0.9,
                                "smoke_latency_budget_ms": 300.0})
RUN_ID = "scheduled__2026-01-02T03:04:05"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OLD = "detector-ep-v2-0badc0de"


def _arn(version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/{version}"


def _package(version: int, status: str = "Approved", description: str | None = None) -> dict:
    package = {
        "ModelPackageName": GROUP, "ModelPackageGroupName": GROUP, "ModelPackageVersion": version,
        "ModelPackageArn": _arn(version), "CreationTime": T0, "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": []}, "ModelApprovalStatus": status,
        "InferenceSpecification": {"Containers": [
            {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/inference:latest",
             "ModelDataUrl": f"s3://{MODELS_BUCKET}/training/job-{version}/output/model.tar.gz"}],
            "SupportedContentTypes": ["image/jpeg"], "SupportedResponseMIMETypes": ["application/json"]},
        "ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": f"s3://{MODELS_BUCKET}/evaluations/v{version}/evaluation.json"}}},
    }
    if description is not None:
        package["ApprovalDescription"] = description
    return package


PACKAGE = _package(3)
NAME = deploy.resource_name(CONFIG, PACKAGE)
EVALUATION_URI = f"s3://{MODELS_BUCKET}/evaluations/v3/evaluation.json"
PLANNED = {"package_arn": _arn(3), "package_version": 3, "name": NAME, "evaluation_uri": EVALUATION_URI,
           "model": None, "endpoint_config": None, "endpoint": deploy.endpoint_request(CONFIG, PACKAGE, NAME, RUN_ID),
           "previous_config": OLD, "already_deployed": False}


def _endpoint(status: str, config_name: str, reason: str | None = None) -> dict:
    answer = {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}",
              "EndpointConfigName": config_name, "EndpointStatus": status, "CreationTime": T0,
              "LastModifiedTime": T0}
    if reason is not None:
        answer["FailureReason"] = reason
    return answer


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


@pytest.fixture(scope="module")
def clients():
    """Real boto3 clients, made once (making one takes tens of milliseconds); each test stubs them afresh."""
    keys = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    return [boto3.client(service, **keys) for service in ("s3", "sagemaker", "sagemaker-runtime")]


@pytest.fixture
def aws(monkeypatch, clients):
    """The three clients of ``_clients`` (s3, sagemaker, sagemaker-runtime), stubbed; the config is CONFIG."""
    monkeypatch.setattr(tasks, "_clients", lambda: tuple(clients))
    monkeypatch.setattr(tasks, "load_config", lambda: CONFIG)
    stubbers = [Stubber(client) for client in clients]
    for stubber in stubbers:
        stubber.activate()
    yield SimpleNamespace(s3=stubbers[0], sagemaker=stubbers[1], runtime=stubbers[2])
    for stubber in stubbers:
        stubber.deactivate()
        stubber.assert_no_pending_responses()


@pytest.fixture
def sleeps(monkeypatch):
    """The waiters' sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(botocore.waiter, "time", SimpleNamespace(sleep=slept.append))
    return slept


@pytest.fixture
def logged(caplog):
    """The task module's log lines so far, as (level, message)."""
    caplog.set_level(logging.INFO, logger=tasks.log.name)
    return lambda: [(r.levelname, r.getMessage()) for r in caplog.records if r.name == tasks.log.name]


def _missing(stubber: Stubber, call: str, code: str, **params) -> None:
    stubber.add_client_error(call, service_error_code=code, service_message="not found", http_status_code=400,
                             expected_params=params)


def _describe_package(stubber: Stubber, package: dict) -> None:
    stubber.add_response("describe_model_package", package, {"ModelPackageName": package["ModelPackageArn"]})


def _existing_model_and_config(stubber: Stubber) -> None:
    stubber.add_response("describe_model", {"ModelName": NAME, "CreationTime": T0,
                                            "ModelArn": f"arn:aws:sagemaker:us-east-1:123456789012:model/{NAME}"},
                         {"ModelName": NAME})
    stubber.add_response("describe_endpoint_config", {
        "EndpointConfigName": NAME, "CreationTime": T0,
        "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{NAME}",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": NAME}]}, {"EndpointConfigName": NAME})


def _new_model_and_config(stubber: Stubber) -> None:
    _missing(stubber, "describe_model", "ValidationException", ModelName=NAME)
    _missing(stubber, "describe_endpoint_config", "ResourceNotFound", EndpointConfigName=NAME)


def _new_model_and_config_of(stubber: Stubber, package: dict) -> None:
    name = deploy.resource_name(CONFIG, package)
    _missing(stubber, "describe_model", "ValidationException", ModelName=name)
    _missing(stubber, "describe_endpoint_config", "ValidationException", EndpointConfigName=name)


def _planned(package: dict, model: bool, endpoint_config: bool, previous: str | None, already: bool) -> dict:
    name = deploy.resource_name(CONFIG, package)
    return {
        "package_arn": package["ModelPackageArn"], "package_version": package["ModelPackageVersion"], "name": name,
        "evaluation_uri": package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"],
        "model": deploy.model_request(CONFIG, package, name, RUN_ID) if model else None,
        "endpoint_config": deploy.endpoint_config_request(CONFIG, package, name, RUN_ID) if endpoint_config else None,
        "endpoint": deploy.endpoint_request(CONFIG, package, name, RUN_ID),
        "previous_config": previous, "already_deployed": already,
    }


# -- the clients ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("region", "runtime_kwargs"), [("eu-west-1", {"region_name": "eu-west-1"}), (None, {})])
def test_clients_come_from_the_airflow_aws_connection(monkeypatch, region, runtime_kwargs):
    from airflow.providers.amazon.aws.hooks import s3 as s3_hooks
    from airflow.providers.amazon.aws.hooks import sagemaker as sagemaker_hooks

    made: list[tuple] = []

    class S3Hook:
        def __init__(self, aws_conn_id):
            made.append(("S3Hook", aws_conn_id))

        def get_conn(self):
            return "s3 client"

    class Session:
        def client(self, *args, **kwargs):
            made.append(("client", args, kwargs))
            return "runtime client"

    class SageMakerHook:
        conn = "sagemaker client"
        conn_region_name = region

        def __init__(self, aws_conn_id):
            made.append(("SageMakerHook", aws_conn_id))

        def get_session(self):
            return Session()

    monkeypatch.setattr(s3_hooks, "S3Hook", S3Hook)
    monkeypatch.setattr(sagemaker_hooks, "SageMakerHook", SageMakerHook)

    assert tasks._clients() == ("s3 client", "sagemaker client", "runtime client")
    # the runtime client in the connection's region when it names one (else boto3's own default)
    assert made == [("SageMakerHook", "aws_default"), ("S3Hook", "aws_default"),
                    ("client", ("sagemaker-runtime",), runtime_kwargs)]


# -- plan: which package ------------------------------------------------------------------------------------------
def test_plan_deploys_the_params_package_over_the_events_and_plans_everything_for_a_new_endpoint(aws):
    _describe_package(aws.sagemaker, PACKAGE)
    _missing(aws.sagemaker, "describe_endpoint", "ValidationException", EndpointName=ENDPOINT)
    _new_model_and_config(aws.sagemaker)

    planned = tasks.plan({"model_package_arn": _arn(3)}, [{"model_package_arn": _arn(5)}], RUN_ID)

    assert planned == _planned(PACKAGE, model=True, endpoint_config=True, previous=None, already=False)
    assert planned["endpoint"] == {"EndpointName": ENDPOINT, "EndpointConfigName": NAME, "Tags": [
        {"Key": "model_package_version", "Value": "3"}, {"Key": "dag_run_id", "Value": RUN_ID},
        {"Key": "project", "Value": "surgical-mlops"}]}


@pytest.mark.parametrize("params", [{}, {"model_package_arn": None}, {"model_package_arn": ""}])
def test_plan_deploys_the_latest_asset_event_that_names_a_package(aws, params):
    package = _package(4)
    _describe_package(aws.sagemaker, package)
    _missing(aws.sagemaker, "describe_endpoint", "ValidationException", EndpointName=ENDPOINT)
    _new_model_and_config_of(aws.sagemaker, package)

    events = [{"model_package_arn": _arn(2)}, {"model_package_arn": _arn(4)}, {"other": "x"},
              {"model_package_arn": None}, {"model_package_arn": ""}]
    planned = tasks.plan(params, events, RUN_ID)

    assert planned == _planned(package, model=True, endpoint_config=True, previous=None, already=False)
    assert planned["package_arn"] == _arn(4)


@pytest.mark.parametrize("events", [[], [{"other": "x"}, {"model_package_arn": None}]])
def test_plan_without_a_named_package_deploys_the_latest_approved_version(aws, events):
    package = _package(7)
    aws.sagemaker.add_response("list_model_packages", {"ModelPackageSummaryList": [
        {"ModelPackageArn": _arn(7), "CreationTime": T0, "ModelPackageStatus": "Completed",
         "ModelApprovalStatus": "Approved"}]},
        {"ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved", "SortBy": "CreationTime",
         "SortOrder": "Descending", "MaxResults": 10})
    _describe_package(aws.sagemaker, package)  # training.latest_approved
    _describe_package(aws.sagemaker, package)  # plan itself
    _missing(aws.sagemaker, "describe_endpoint", "ValidationException", EndpointName=ENDPOINT)
    _new_model_and_config_of(aws.sagemaker, package)

    planned = tasks.plan({"model_package_arn": None}, events, RUN_ID)

    assert planned == _planned(package, model=True, endpoint_config=True, previous=None, already=False)
    assert planned["package_arn"] == _arn(7) and planned["package_version"] == 7


def test_plan_fails_when_no_version_is_approved(aws):
    aws.sagemaker.add_response("list_model_packages", {"ModelPackageSummaryList": []}, {
        "ModelPackageGroupName": GROUP, "ModelApprovalStatus": "Approved", "SortBy": "CreationTime",
        "SortOrder": "Descending", "MaxResults": 10})

    with pytest.raises(AirflowFailException) as failure:
        tasks.plan({}, [], RUN_ID)

    assert str(failure.value) == f"nothing to deploy: no Approved version in {GROUP}"


@pytest.mark.parametrize(("status", "description", "said"), [
    ("PendingManualApproval", "waiting for a reviewer", "waiting for a reviewer"),
    ("Rejected", None, ""),
])
def test_plan_refuses_a_version_that_is_not_approved(aws, status, description, said):
    _describe_package(aws.sagemaker, _package(3, status, description))

    with pytest.raises(AirflowFailException) as failure:
        tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    assert str(failure.value) == (f"{_arn(3)} is {status}, not Approved: only approved versions are deployed "
                                  f"({said})")


# -- plan: what exists, what to roll back to ------------------------------------------------------------------------
@pytest.mark.parametrize("serving", [OLD, NAME])  # another config, or this very one
def test_plan_deletes_a_failed_endpoint_waits_for_it_to_go_and_creates_it_afresh(aws, serving):
    _describe_package(aws.sagemaker, PACKAGE)
    aws.sagemaker.add_response("describe_endpoint", _endpoint("Failed", serving, "image not found"),
                               {"EndpointName": ENDPOINT})
    aws.sagemaker.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
    _missing(aws.sagemaker, "describe_endpoint", "ValidationException", EndpointName=ENDPOINT)  # deleted
    exists = serving == OLD
    if exists:
        _existing_model_and_config(aws.sagemaker)
    else:
        _new_model_and_config(aws.sagemaker)

    planned = tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    # Nothing served before: there is nothing to roll back to, and the endpoint is created.
    assert planned == _planned(PACKAGE, model=not exists, endpoint_config=not exists, previous=None, already=False)


@pytest.mark.parametrize(("status", "serving", "previous", "already"), [
    ("InService", OLD, OLD, False),  # an update: roll back to what serves now
    ("Updating", OLD, OLD, False),
    ("InService", "name", None, True),  # this very config serves already: nothing to change
    ("Updating", "name", None, False),  # ... not yet in service: the update path runs (and waits)
    ("OutOfService", "name", None, False),
])
def test_plan_of_an_existing_endpoint(aws, status, serving, previous, already):
    _describe_package(aws.sagemaker, PACKAGE)
    aws.sagemaker.add_response("describe_endpoint", _endpoint(status, NAME if serving == "name" else serving),
                               {"EndpointName": ENDPOINT})
    _existing_model_and_config(aws.sagemaker)

    planned = tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    assert planned == _planned(PACKAGE, model=False, endpoint_config=False, previous=previous, already=already)


def test_plan_creates_only_what_is_missing(aws):
    _describe_package(aws.sagemaker, PACKAGE)
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", OLD), {"EndpointName": ENDPOINT})
    aws.sagemaker.add_response("describe_model", {
        "ModelName": NAME, "CreationTime": T0, "ModelArn": f"arn:aws:sagemaker:us-east-1:123456789012:model/{NAME}"},
        {"ModelName": NAME})
    _missing(aws.sagemaker, "describe_endpoint_config", "ValidationException", EndpointConfigName=NAME)

    planned = tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    assert planned == _planned(PACKAGE, model=False, endpoint_config=True, previous=OLD, already=False)


def test_plan_does_not_take_other_errors_for_a_missing_endpoint(aws):
    _describe_package(aws.sagemaker, PACKAGE)
    _missing(aws.sagemaker, "describe_endpoint", "AccessDeniedException", EndpointName=ENDPOINT)

    with pytest.raises(ClientError) as failure:
        tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    assert failure.value.response["Error"]["Code"] == "AccessDeniedException"
    assert failure.value.operation_name == "DescribeEndpoint"


def test_plan_waits_at_most_120_times_5_seconds_for_a_failed_endpoint_to_be_deleted(aws, sleeps, logged):
    _describe_package(aws.sagemaker, PACKAGE)
    aws.sagemaker.add_response("describe_endpoint", _endpoint("Failed", OLD, "image not found"),
                               {"EndpointName": ENDPOINT})
    aws.sagemaker.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
    for _ in range(120):
        aws.sagemaker.add_response("describe_endpoint", _endpoint("Deleting", OLD), {"EndpointName": ENDPOINT})

    with pytest.raises(WaiterError) as failure:
        tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    assert str(failure.value) == "Waiter EndpointDeleted failed: Max attempts exceeded"
    assert sleeps == [5] * 119
    assert logged() == [("WARNING", f"endpoint {ENDPOINT} is Failed (image not found): deleting it before creating "
                                    f"it again")]


@pytest.mark.parametrize(("status", "serving", "said"), [
    (None, None, "nothing (new endpoint)"),
    ("InService", OLD, OLD),
    ("InService", "name", f"{NAME} (already deployed: nothing to change)"),
    ("Updating", "name", NAME),
])
def test_plan_says_what_it_deploys_and_what_serves_now(aws, logged, status, serving, said):
    _describe_package(aws.sagemaker, PACKAGE)
    if status is None:
        _missing(aws.sagemaker, "describe_endpoint", "ValidationException", EndpointName=ENDPOINT)
    else:
        aws.sagemaker.add_response("describe_endpoint", _endpoint(status, NAME if serving == "name" else serving),
                                   {"EndpointName": ENDPOINT})
    _existing_model_and_config(aws.sagemaker)

    tasks.plan({"model_package_arn": _arn(3)}, [], RUN_ID)

    assert logged() == [("INFO", f"package {_arn(3)} (v3) -> endpoint {ENDPOINT} as {NAME}; now serving {said}")]


# -- the branch -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "endpoint_config", "already", "expected"), [
    ({"ModelName": "m"}, {"EndpointConfigName": "c"}, False,
     ["deploy.create_model", "deploy.create_endpoint_config", "deploy.update_endpoint"]),
    ({"ModelName": "m"}, {"EndpointConfigName": "c"}, True,
     ["deploy.create_model", "deploy.create_endpoint_config", "deploy.verify"]),
    ({"ModelName": "m"}, None, False, ["deploy.create_model", "deploy.update_endpoint"]),
    ({"ModelName": "m"}, None, True, ["deploy.create_model", "deploy.verify"]),
    (None, {"EndpointConfigName": "c"}, False, ["deploy.create_endpoint_config", "deploy.update_endpoint"]),
    (None, {"EndpointConfigName": "c"}, True, ["deploy.create_endpoint_config", "deploy.verify"]),
    (None, None, False, ["deploy.update_endpoint"]),
    (None, None, True, ["deploy.verify"]),
])
def test_to_create_runs_the_creations_needed_then_the_update_or_only_the_verification(model, endpoint_config,
                                                                                      already, expected):
    planned = {**PLANNED, "model": model, "endpoint_config": endpoint_config, "already_deployed": already}
    assert tasks.to_create(planned) == expected


# -- verify ---------------------------------------------------------------------------------------------------------
def test_verify_passes_when_the_endpoint_serves_the_new_config(aws, logged):
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", NAME), {"EndpointName": ENDPOINT})
    assert tasks.verify(PLANNED) == {"endpoint": ENDPOINT, "config": NAME}
    assert logged() == [("INFO", f"endpoint {ENDPOINT} InService on {NAME}")]


@pytest.mark.parametrize(("status", "serving", "reason", "said"), [
    ("InService", OLD, "health check failed on the new variant", "health check failed on the new variant"),
    ("InService", OLD, None, "no failure reason given"),
    ("Updating", "name", None, "no failure reason given"),
    ("Failed", "name", "image not found", "image not found"),
])
def test_verify_fails_unless_in_service_on_the_new_config(aws, status, serving, reason, said):
    on = NAME if serving == "name" else serving
    aws.sagemaker.add_response("describe_endpoint", _endpoint(status, on, reason), {"EndpointName": ENDPOINT})

    with pytest.raises(RuntimeError) as failure:
        tasks.verify(PLANNED)

    assert str(failure.value) == f"endpoint {ENDPOINT} is {status} on {on}, not on {NAME}: {said}"


# -- the smoke test -------------------------------------------------------------------------------------------------
THRESHOLD = 0.35
# Sorted by name: a/0, a/1, frames/b/2, frames/c/3, frames/c/4; two frames out of five: a/0 and frames/b/2.
IMAGES = [
    {"id": 3, "file_name": "frames/b/2.jpg", "detections": [
        {"category": "tumor", "bbox": [100, 100, 50, 40], "score": 0.8},
        {"category": "scalpel", "bbox": [10, 10, 20, 20], "score": 0.6}]},
    {"id": 5, "file_name": "frames/c/4.jpg", "detections": [{"category": "tumor", "bbox": [0, 0, 9, 9], "score": 1}]},
    {"id": 1, "file_name": "a/0.jpg", "detections": [
        {"category": "retractor", "bbox": [5, 6, 100, 50], "score": 0.9},
        {"category": "scalpel", "bbox": [200, 200, 30, 30], "score": 0.2}]},  # below the threshold: not expected
    {"id": 4, "file_name": "frames/c/3.jpg", "detections": [{"category": "tumor", "bbox": [0, 0, 9, 9], "score": 1}]},
    {"id": 2, "file_name": "a/1.jpg", "detections": [{"category": "tumor", "bbox": [0, 0, 9, 9], "score": 1}]},
]
ANSWER_A0 = {"detections": [{"label": "retractor", "score": 0.9, "box": [5.0, 6.0, 105.0, 56.0]}]}
ANSWER_B2 = {"detections": [{"label": "tumor", "score": 0.8, "box": [100.0, 100.0, 150.0, 140.0]},
                            {"label": "scalpel", "score": 0.6, "box": [10.0, 10.0, 30.0, 30.0]}]}
ANSWER_B2_HALF = {"detections": [{"label": "tumor", "score": 0.8, "box": [100.0, 100.0, 150.0, 140.0]},
                                 {"label": "retractor", "score": 0.6, "box": [10.0, 10.0, 30.0, 30.0]}]}


def _evaluation(stubber: Stubber, images: list[dict], threshold: float = THRESHOLD) -> None:
    data = json.dumps({"score_threshold": threshold, "images": images}).encode()
    stubber.add_response("get_object", {"Body": _body(data)},
                         {"Bucket": MODELS_BUCKET, "Key": "evaluations/v3/evaluation.json"})


def _frame(aws, key: str, answer: dict, custom: str = "score_threshold=0.350000") -> None:
    data = f"jpeg of {key}".encode()
    aws.s3.add_response("get_object", {"Body": _body(data)}, {"Bucket": FRAMES_BUCKET, "Key": key})
    body = json.dumps(answer).encode()
    aws.runtime.add_response("invoke_endpoint", {"Body": _body(body), "ContentType": "application/json"}, {
        "EndpointName": ENDPOINT, "ContentType": "image/jpeg", "Accept": "application/json", "Body": data,
        "CustomAttributes": custom})


@pytest.fixture
def clock(monkeypatch):
    """perf_counter of the task: each frame takes the next of ``clock.latencies_s``."""
    state = SimpleNamespace(latencies_s=[0.125, 0.25], ticks=[])

    def perf_counter() -> float:
        index = len(state.ticks)
        now = float(index // 2) * 10 + (state.latencies_s[index // 2] if index % 2 else 0.0)
        state.ticks.append(now)
        return now

    monkeypatch.setattr(tasks, "time", SimpleNamespace(perf_counter=perf_counter))
    return state


def test_smoke_test_passes_when_the_endpoint_finds_the_evaluations_boxes_in_time(aws, clock, logged):
    _evaluation(aws.s3, IMAGES)
    _frame(aws, "frames/a/0.jpg", ANSWER_A0)
    _frame(aws, "frames/b/2.jpg", ANSWER_B2)

    result = tasks.smoke_test(PLANNED)

    # latencies 125 and 250 ms: p50 187.5, p95 125 + 0.95 * 125 = 243.75
    assert result == {"frames": 2, "mean_agreement": 1.0, "min_agreement": 1.0, "p50_ms": 187.5, "p95_ms": 243.8,
                      "passed": True, "reasons": ["2 frames: agreement 100%, p50 188 ms, p95 244 ms"]}
    assert clock.ticks == [0.0, 0.125, 10.0, 10.25]
    assert logged() == [("INFO", f"smoke test of {NAME}: {json.dumps(result)}")]


def test_smoke_test_fails_when_the_boxes_disagree(aws, clock):
    _evaluation(aws.s3, IMAGES)
    _frame(aws, "frames/a/0.jpg", ANSWER_A0)
    _frame(aws, "frames/b/2.jpg", ANSWER_B2_HALF)

    with pytest.raises(RuntimeError) as failure:
        tasks.smoke_test(PLANNED)

    assert str(failure.value) == ("smoke test failed: detections agree with the package's evaluation on 75% of "
                                  "boxes, below 90%")


def test_smoke_test_fails_when_latency_is_over_budget(aws, clock, monkeypatch):
    monkeypatch.setattr(tasks, "load_config", lambda: build_config("local", {
        "region": "us-east-1", "kms_key_arn": KMS, "endpoint_name": ENDPOINT, "model_package_group": GROUP,
        "smoke_test_frames": 2, "smoke_min_agreement": 0.9, "smoke_latency_budget_ms": 200.0}))
    _evaluation(aws.s3, IMAGES)
    _frame(aws, "frames/a/0.jpg", ANSWER_A0)
    _frame(aws, "frames/b/2.jpg", ANSWER_B2)

    with pytest.raises(RuntimeError) as failure:
        tasks.smoke_test(PLANNED)

    assert str(failure.value) == "smoke test failed: p95 latency 244 ms is over the budget of 200 ms"


def test_smoke_test_sends_every_frame_when_there_are_fewer_than_asked_at_the_models_threshold(aws, clock, monkeypatch):
    monkeypatch.setattr(tasks, "load_config", lambda: build_config("local", {
        "region": "us-east-1", "endpoint_name": ENDPOINT, "smoke_test_frames": 8, "smoke_min_agreement": 0.5,
        "smoke_latency_budget_ms": 1000.0}))
    clock.latencies_s = [0.5, 0.25, 0.125]
    images = [{"file_name": name, "detections": [{"category": "tumor", "bbox": [0, 0, 10, 10], "score": 0.5}]}
              for name in ("x/2.jpg", "x/0.jpg", "x/1.jpg")]
    _evaluation(aws.s3, images, threshold=0.75)  # every detection is below it: none expected
    for name in ("x/0.jpg", "x/1.jpg", "x/2.jpg"):
        _frame(aws, f"frames/{name}", {"detections": []}, custom="score_threshold=0.750000")

    result = tasks.smoke_test(PLANNED)

    # latencies 500, 250, 125 ms: p50 250, p95 250 + 0.9 * 250 = 475
    assert result == {"frames": 3, "mean_agreement": 1.0, "min_agreement": 1.0, "p50_ms": 250.0, "p95_ms": 475.0,
                      "passed": True, "reasons": ["3 frames: agreement 100%, p50 250 ms, p95 475 ms"]}


def test_smoke_test_of_no_frame_fails(aws, clock, monkeypatch):
    monkeypatch.setattr(tasks, "load_config", lambda: build_config("local", {
        "region": "us-east-1", "endpoint_name": ENDPOINT, "smoke_test_frames": 0}))
    _evaluation(aws.s3, IMAGES)

    with pytest.raises(RuntimeError) as failure:
        tasks.smoke_test(PLANNED)

    assert str(failure.value) == "smoke test failed: no test frame could be sent to the endpoint"


def test_smoke_test_names_every_reason_it_failed(aws, clock, monkeypatch):
    monkeypatch.setattr(tasks, "load_config", lambda: build_config("local", {
        "region": "us-east-1", "endpoint_name": ENDPOINT, "smoke_test_frames": 2, "smoke_min_agreement": 0.9,
        "smoke_latency_budget_ms": 200.0}))
    _evaluation(aws.s3, IMAGES)
    _frame(aws, "frames/a/0.jpg", ANSWER_A0)
    _frame(aws, "frames/b/2.jpg", ANSWER_B2_HALF)

    with pytest.raises(RuntimeError) as failure:
        tasks.smoke_test(PLANNED)

    assert str(failure.value) == ("smoke test failed: detections agree with the package's evaluation on 75% of "
                                  "boxes, below 90%; p95 latency 244 ms is over the budget of 200 ms")


@pytest.mark.parametrize("frames", [-1, -3])
def test_smoke_test_of_a_negative_frame_count_sends_no_frame_and_fails(aws, clock, monkeypatch, frames):
    monkeypatch.setattr(tasks, "load_config", lambda: build_config("local", {
        "region": "us-east-1", "endpoint_name": ENDPOINT, "smoke_test_frames": frames}))
    _evaluation(aws.s3, IMAGES)

    with pytest.raises(RuntimeError) as failure:
        tasks.smoke_test(PLANNED)

    assert str(failure.value) == "smoke test failed: no test frame could be sent to the endpoint"


# -- rollback -------------------------------------------------------------------------------------------------------
WAITER = {"EndpointName": ENDPOINT}


def test_rollback_puts_the_endpoint_back_on_the_previous_config_and_fails(aws, sleeps, logged):
    aws.sagemaker.add_response("describe_endpoint", _endpoint("Updating", NAME), WAITER)  # what serves
    aws.sagemaker.add_response("describe_endpoint", _endpoint("Updating", NAME), WAITER)  # wait for the update
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", NAME), WAITER)
    aws.sagemaker.add_response("update_endpoint", {"EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:"
                                                                  f"endpoint/{ENDPOINT}"},
                               {"EndpointName": ENDPOINT, "EndpointConfigName": OLD})
    aws.sagemaker.add_response("describe_endpoint", _endpoint("Updating", OLD), WAITER)  # wait for the rollback
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", OLD), WAITER)

    with pytest.raises(AirflowFailException) as failure:
        tasks.rollback(PLANNED, ["deploy.verify", "smoke_test"])

    assert str(failure.value) == (f"deploying {_arn(3)} failed at deploy.verify, smoke_test: endpoint {ENDPOINT} "
                                  f"rolled back to {OLD}")
    assert sleeps == [5, 5]
    assert logged() == [("WARNING", f"rolling {ENDPOINT} back to {OLD}")]


def test_rollback_waits_at_most_120_times_5_seconds_for_the_failed_update(aws, sleeps):
    aws.sagemaker.add_response("describe_endpoint", _endpoint("Updating", NAME), WAITER)
    for _ in range(120):
        aws.sagemaker.add_response("describe_endpoint", _endpoint("Updating", NAME), WAITER)

    with pytest.raises(AirflowFailException) as failure:
        tasks.rollback(PLANNED, ["deploy.update_endpoint"])

    assert str(failure.value) == (f"deploying {_arn(3)} failed at deploy.update_endpoint: endpoint {ENDPOINT}; "
                                  f"rolling back to {OLD} did not complete (Waiter EndpointInService failed: Max "
                                  f"attempts exceeded): see the endpoint's FailureReason and fix it by hand")
    assert isinstance(failure.value.__cause__, WaiterError)
    assert sleeps == [5] * 119


def test_rollback_waits_at_most_120_times_5_seconds_for_the_rollback(aws, sleeps):
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", NAME), WAITER)
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", NAME), WAITER)
    aws.sagemaker.add_response("update_endpoint", {"EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:"
                                                                  f"endpoint/{ENDPOINT}"},
                               {"EndpointName": ENDPOINT, "EndpointConfigName": OLD})
    for _ in range(120):
        aws.sagemaker.add_response("describe_endpoint", _endpoint("Updating", OLD), WAITER)

    with pytest.raises(AirflowFailException) as failure:
        tasks.rollback(PLANNED, ["smoke_test"])

    assert str(failure.value) == (f"deploying {_arn(3)} failed at smoke_test: endpoint {ENDPOINT}; rolling back to "
                                  f"{OLD} did not complete (Waiter EndpointInService failed: Max attempts exceeded): "
                                  f"see the endpoint's FailureReason and fix it by hand")
    assert sleeps == [5] * 119


def test_rollback_leaves_an_endpoint_that_still_serves_the_previous_config(aws, sleeps):
    aws.sagemaker.add_response("describe_endpoint", _endpoint("InService", OLD), WAITER)

    with pytest.raises(AirflowFailException) as failure:
        tasks.rollback(PLANNED, ["deploy.update_endpoint"])

    assert str(failure.value) == (f"deploying {_arn(3)} failed at deploy.update_endpoint: endpoint {ENDPOINT} still "
                                  f"serving {OLD} (the update did not take)")
    assert sleeps == []


def test_rollback_of_a_missing_endpoint_updates_nothing(aws, sleeps):
    _missing(aws.sagemaker, "describe_endpoint", "ValidationException", EndpointName=ENDPOINT)

    with pytest.raises(AirflowFailException) as failure:
        tasks.rollback(PLANNED, ["deploy.update_endpoint"])

    assert str(failure.value) == (f"deploying {_arn(3)} failed at deploy.update_endpoint: endpoint {ENDPOINT} no "
                                  f"longer exists: nothing serves (it served {OLD})")


@pytest.mark.parametrize("endpoint", [_endpoint("InService", NAME), _endpoint("Failed", NAME, "no capacity"), None])
def test_rollback_of_a_first_deployment_has_nothing_to_go_back_to(aws, sleeps, endpoint):
    if endpoint is None:
        _missing(aws.sagemaker, "describe_endpoint", "ResourceNotFound", EndpointName=ENDPOINT)
    else:
        aws.sagemaker.add_response("describe_endpoint", endpoint, WAITER)

    with pytest.raises(AirflowFailException) as failure:
        tasks.rollback({**PLANNED, "previous_config": None}, ["deploy.verify", "smoke_test"])

    assert str(failure.value) == (f"deploying {_arn(3)} failed at deploy.verify, smoke_test: endpoint {ENDPOINT} no "
                                  f"previous config to roll back to (first deployment)")
    assert sleeps == []


# -- record ---------------------------------------------------------------------------------------------------------
def test_record_writes_the_deployment_and_the_latest_pointer(aws, logged):
    smoke = {"frames": 2, "mean_agreement": 1.0, "min_agreement": 1.0, "p50_ms": 187.5, "p95_ms": 243.8,
             "passed": True, "reasons": ["2 frames: agreement 100%, p50 188 ms, p95 244 ms"]}
    endpoint = {**_endpoint("InService", NAME), "LastModifiedTime": datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)}
    aws.sagemaker.add_response("describe_endpoint", endpoint, {"EndpointName": ENDPOINT})
    entry = {"endpoint": ENDPOINT, "endpoint_config": NAME, "model_package_arn": _arn(3), "model_package_version": 3,
             "previous_config": OLD, "dag_run_id": RUN_ID, "deployed_at": "2026-02-03T04:05:06+00:00",
             "smoke_test": smoke}
    body = json.dumps(entry, indent=2).encode()
    for key in (f"deployments/{ENDPOINT}/{NAME}.json", f"deployments/{ENDPOINT}/latest.json"):
        aws.s3.add_response("put_object", {"ETag": '"1"'}, {"Bucket": MODELS_BUCKET, "Key": key, "Body": body,
                                                             "ContentType": "application/json"})

    assert tasks.record(PLANNED, smoke, RUN_ID) == entry
    assert logged() == [("INFO", f"deployment recorded: {json.dumps(entry)}")]


def test_record_keeps_a_modification_time_that_is_not_a_datetime_as_text(aws):
    smoke = {"frames": 2, "passed": True}
    endpoint = {**_endpoint("InService", NAME), "LastModifiedTime": "2026-02-03T04:05:06Z"}
    aws.sagemaker.add_response("describe_endpoint", endpoint, {"EndpointName": ENDPOINT})
    aws.s3.add_response("put_object", {"ETag": '"1"'})
    aws.s3.add_response("put_object", {"ETag": '"2"'})

    entry = tasks.record(PLANNED, smoke, RUN_ID)

    assert entry["deployed_at"] == "2026-02-03T04:05:06Z" and entry["smoke_test"] == smoke
