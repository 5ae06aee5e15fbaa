"""train_and_register end to end: a dataset version -> a real training job on the local SageMaker -> evaluation ->
a model package version with metrics and lineage -> the mAP promotion rule.

One module-scoped sequence on the session's stack: a good configuration is Approved (no champion: the floor alone
decides); a re-run of it registers nothing new; a deliberately weak configuration is Rejected with its reason and the
champion stays; a new dataset version makes the champion be re-scored on the new test set before the comparison; a
failing training job fails the task with the container's reason.
"""

from __future__ import annotations

import json

import pytest

from local_aws.settings import REPO_ROOT
from tests.conftest import run_dag_test
from tests.datasets import make_dataset, upload_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
GROUP = "surgical-detector"
MODELS = "surgical-models"
# Small frames and a short schedule: enough for the detector to learn the synthetic instruments in about a minute.
GOOD = {"epochs": 6, "image_size": 128, "batch_size": 8, "warmup_steps": 5, "max_train_seconds": 0}
WEAK = {"epochs": 1, "image_size": 64, "batch_size": 8, "warmup_steps": 1, "lr": 0.00001, "max_train_seconds": 0}
FLOOR = 0.10  # the first model's floor here (the default 0.8 is for the full data set: see bench/train.py); GOOD
# scores 0.147 on this test split (one video, 10 frames) with the pinned trainer environment: a floor of 0.15 was
# within 0.004 of it


@pytest.fixture(scope="module")
def versions(aws, tmp_path_factory) -> list[str]:
    s3 = aws("s3")
    first = upload_dataset(s3, *make_dataset(tmp_path_factory.mktemp("train-v1"), videos=5, frames=10, width=192,
                                             height=112, step=4, seed=300, prefix="trn"))
    second = upload_dataset(s3, *make_dataset(tmp_path_factory.mktemp("train-v2"), videos=7, frames=10, width=192,
                                              height=112, step=4, seed=300, prefix="trn"))
    return [first, second]


def _packages(sagemaker) -> list[dict]:
    summaries = sagemaker.list_model_packages(ModelPackageGroupName=GROUP, MaxResults=100)["ModelPackageSummaryList"]
    return [sagemaker.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]


def _run(airflow_home, version: str, hyperparameters: dict, floor: float = FLOOR) -> tuple[dict, str]:
    return run_dag_test(airflow_home, REPO_ROOT / "dags", "train_and_register", timeout=900,
                        conf={"dataset_version": version, "hyperparameters": hyperparameters, "floor_map50": floor})


@pytest.fixture(scope="module")
def first(airflow_home, versions):
    return _run(airflow_home, versions[0], GOOD)


def test_a_good_model_is_trained_evaluated_registered_and_approved(aws, first, versions):
    states, output = first
    assert states["announce"] == "success", output[-8000:]
    assert states["fit.train"] == "success" and states["fit.tune"] == "skipped"
    sagemaker, s3 = aws("sagemaker"), aws("s3")
    (package,) = _packages(sagemaker)
    assert package["ModelApprovalStatus"] == "Approved"
    assert "no champion yet" in package["ApprovalDescription"]
    lineage = package["CustomerMetadataProperties"]
    assert lineage["dataset_version"] == versions[0] and lineage["dag_run_id"] and lineage["code_commit"]
    job = sagemaker.describe_training_job(TrainingJobName=lineage["training_job"])
    assert job["TrainingJobStatus"] == "Completed" and job["EnableNetworkIsolation"]
    assert {m["MetricName"] for m in job["FinalMetricDataList"]} >= {"train:loss", "validation:map50", "test:map50"}
    uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    evaluation = json.loads(s3.get_object(Bucket=MODELS, Key=uri.split(f"{MODELS}/", 1)[1])["Body"].read())
    assert evaluation["dataset_version"] == versions[0] and evaluation["map50"] >= FLOOR
    assert float(lineage["map50"]) == pytest.approx(evaluation["map50"], abs=1e-4)
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=package["ModelPackageArn"])["Tags"]}
    assert tags["dataset_version"] == versions[0]
    promotion = json.loads(s3.get_object(Bucket=MODELS, Key=uri.split(f"{MODELS}/", 1)[1].replace(
        "evaluation.json", "promotion.json"))["Body"].read())
    assert promotion["approved"] and promotion["figures"]["candidate_map50"] >= FLOOR
    report = s3.get_object(Bucket=MODELS, Key=f"reports/{lineage['training_job']}/index.html")["Body"].read()
    assert b"<html" in report.lower()


def test_a_rerun_of_the_same_inputs_trains_and_registers_nothing_new(aws, airflow_home, first, versions):
    states, output = _run(airflow_home, versions[0], GOOD)
    assert states["fit.train"] == "skipped" and states["register"] == "success", output[-6000:]
    assert "already registered" in output and "not decided again" in output
    assert len(_packages(aws("sagemaker"))) == 1


@pytest.fixture(scope="module")
def weak(airflow_home, first, versions):
    return _run(airflow_home, versions[0], WEAK, floor=0.0)


def test_a_weaker_model_is_rejected_with_its_reason_and_the_champion_stays(aws, weak):
    states, output = weak
    assert states["promote"] == "success" and states["announce"] == "skipped", output[-6000:]
    packages = sorted(_packages(aws("sagemaker")), key=lambda p: p["ModelPackageVersion"])
    assert [p["ModelApprovalStatus"] for p in packages] == ["Approved", "Rejected"]
    assert "does not beat the champion" in packages[1]["ApprovalDescription"]


def test_a_new_test_set_makes_the_champion_be_rescored_before_the_comparison(aws, airflow_home, weak, versions):
    states, output = _run(airflow_home, versions[1], WEAK, floor=0.0)
    assert states["champion.rescore"] == "success", output[-8000:]
    assert states["promote"] == "success"
    sagemaker, s3 = aws("sagemaker"), aws("s3")
    key = f"evaluations/champion-v1-on-{versions[1]}/evaluation.json"
    rescored = json.loads(s3.get_object(Bucket=MODELS, Key=key)["Body"].read())
    assert rescored["dataset_version"] == versions[1]
    newest = max(_packages(sagemaker), key=lambda p: p["ModelPackageVersion"])
    assert newest["ModelApprovalStatus"] == "Rejected"
    approved = [p for p in _packages(sagemaker) if p["ModelApprovalStatus"] == "Approved"]
    assert [p["ModelPackageVersion"] for p in approved] == [1]


def test_a_failing_training_job_fails_the_task_with_the_containers_reason(aws, airflow_home, first, versions):
    states, output = _run(airflow_home, versions[0], {**GOOD, "optimizer": "adagrad"})
    assert states["fit.train"] == "failed" and states.get("register") in ("upstream_failed", None)
    assert "optimizer must be adamw or sgd" in output
