"""The Amazon provider's own operators and sensors run green against the local SageMaker, through dag.test()."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.conftest import run_dag_test

pytestmark = pytest.mark.integration
DAGS = Path(__file__).parent / "dags"


@pytest.fixture(scope="module")
def airflow_env(local_stack, tmp_path_factory, toy_image: str) -> dict[str, str]:
    """These DAGs are the provider's contract, not the pipeline: they sign as the harness's admin (the pipeline's
    DAGs run as the MWAA execution role, whose grants name the pipeline's jobs only)."""
    from local_aws.airflow_local import airflow_environment

    return {**airflow_environment(local_stack, tmp_path_factory.mktemp("airflow-admin"), role_arn=None),
            "TOY_IMAGE": toy_image}


def dag_test(env: dict[str, str], dag_id: str, aws) -> tuple[dict[str, str], str]:
    run = uuid.uuid4().hex[:8]
    s3 = aws("s3")
    for name, text in (("a.txt", "1 2 3"), ("b.txt", "4 5 6")):
        s3.put_object(Bucket="surgical-models", Key=f"toy-{run}/in/{name}", Body=text.encode())
    return run_dag_test({**env, "TOY_RUN": run}, DAGS, f"tests.integration.dags.{dag_id}", timeout=420)


def test_provider_operators_and_sensors_run_green(airflow_env, aws):
    states, output = dag_test(airflow_env, "provider_green", aws)
    assert set(states.values()) == {"success"}, {k: v for k, v in states.items() if v != "success"} or output[-4000:]
    assert len(states) == 16
    # The training job's own log lines reach the task log through the provider's CloudWatch tailing.
    assert re.search(r"epoch=2 loss=0\.3333", output), output[-4000:]


def test_failing_jobs_fail_their_tasks_with_the_reason(airflow_env, aws):
    states, output = dag_test(airflow_env, "provider_failures", aws)
    assert states == {"process_fails": "failed", "train_times_out": "success", "train_sensor": "failed"}
    assert "SageMaker resource failed because AlgorithmError: toy processing failed on purpose" in output
    assert "Sagemaker job failed for the following reason: MaxRuntimeExceeded" in output, output[-4000:]


def test_a_failed_labeling_job_fails_the_task_with_its_reason(airflow_env, aws):
    states, output = dag_test(airflow_env, "labeling_failure", aws)
    assert states == {"label": "failed", "sensor": "failed"}, output[-4000:]
    assert "SageMaker resource failed because ClientError: cannot read the label category configuration" in output
    assert "Sagemaker labeling job failed for the following reason:" in output


def test_promotion_operator_approves_first_and_better_and_rejects_weaker(airflow_env, aws):
    states, output = dag_test(airflow_env, "promotion_rule", aws)
    assert set(states.values()) == {"success"}, output[-5000:]
    sm = aws("sagemaker")
    group = next(g["ModelPackageGroupName"] for g in sm.list_model_package_groups(
        NameContains="promotion-", SortBy="CreationTime", SortOrder="Descending")["ModelPackageGroupSummaryList"])
    packages = sorted(sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"],
                      key=lambda p: p["ModelPackageVersion"])
    assert [p["ModelApprovalStatus"] for p in packages] == ["Approved", "Approved", "Rejected"]
    weaker = sm.describe_model_package(ModelPackageName=packages[2]["ModelPackageArn"])
    assert "below the floor" in weaker["ApprovalDescription"] or "does not beat" in weaker["ApprovalDescription"]
    first = sm.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    assert "no champion yet" in first["ApprovalDescription"]
    better = sm.describe_model_package(ModelPackageName=packages[1]["ModelPackageArn"])
    assert "beats the champion" in better["ApprovalDescription"]
