"""deploy end to end: approved package -> endpoint InService -> smoke test -> recorded -> an HTTP request through the
local API gateway returns detections; an update under load drops no request; a re-run changes nothing; a broken
model fails the deploy and the endpoint keeps serving the previous model; a model that goes InService but fails the
smoke test is rolled back to the previous config.

The packages are registered here from a real (short) training run of the trainer container, in a group of their
own, and deployed by ARN (the DAG's param), so this module does not depend on train_and_register's test.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from local_aws.settings import REPO_ROOT
from tests.conftest import run_dag_test
from tests.datasets import make_dataset, upload_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
GROUP = "deploy-e2e"
MODELS = "surgical-models"
ENDPOINT = "surgical-detector"
INFERENCE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/inference:latest"


def _tar(folder) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def airflow_home(harness_airflow_home):
    """This module's DAG runs use a model group of their own, which the MWAA execution role does not grant: they sign
    as the harness (tests/conftest.py harness_airflow_home)."""
    return harness_airflow_home


@pytest.fixture(scope="module")
def packages(aws, tmp_path_factory) -> dict[str, str]:
    """Four Approved versions: v1 and v2 of a trained model, v3 with a corrupt artifact, v4 of the same good artifact
    whose registered evaluation is not its own (every frame's recorded boxes are elsewhere): it serves, and its smoke
    test fails."""
    from tests.container_code.trainer.jobs import run_job

    root = tmp_path_factory.mktemp("deploy-model")
    dataset, frames = make_dataset(root, videos=3, frames=6, width=192, height=112, prefix="dep")
    s3, sagemaker = aws("s3"), aws("sagemaker")
    upload_dataset(s3, dataset, frames)
    proc, job_root = run_job(root, {"dataset": dataset, "frames": frames},
                             {"image_size": 96, "batch_size": 4, "epochs": 2, "warmup_steps": 2})
    assert proc.returncode == 0, proc.stderr[-3000:]
    s3.put_object(Bucket=MODELS, Key="deploy-e2e/model.tar.gz", Body=_tar(job_root / "model"))
    s3.put_object(Bucket=MODELS, Key="deploy-e2e/broken.tar.gz", Body=b"not a tar archive")
    evaluation = json.loads((job_root / "model" / "evaluation.json").read_text())
    s3.put_object(Bucket=MODELS, Key="deploy-e2e/evaluation.json", Body=json.dumps(evaluation).encode())
    for image in evaluation["images"]:  # boxes no detector serves: 1-pixel boxes in the frame's corner, score 1
        image["detections"] = [{"category": "tumor", "bbox": [k, 0.0, 1.0, 1.0], "score": 1.0} for k in range(3)]
    s3.put_object(Bucket=MODELS, Key="deploy-e2e/not-its-evaluation.json", Body=json.dumps(evaluation).encode())
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    arns = {}
    for name, artifact, metrics in (("v1", "model", "evaluation"), ("v2", "model", "evaluation"),
                                    ("v3", "broken", "evaluation"), ("v4", "model", "not-its-evaluation")):
        arns[name] = sagemaker.create_model_package(
            ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved",
            InferenceSpecification={"Containers": [{"Image": INFERENCE_IMAGE,
                                                    "ModelDataUrl": f"s3://{MODELS}/deploy-e2e/{artifact}.tar.gz"}],
                                    "SupportedContentTypes": ["image/jpeg"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
            ModelMetrics={"ModelQuality": {"Statistics": {
                "ContentType": "application/json", "S3Uri": f"s3://{MODELS}/deploy-e2e/{metrics}.json"}}},
        )["ModelPackageArn"]
    arns["frame"] = next(frames.rglob("*.jpg")).read_bytes()
    return arns


def _deploy(airflow_home, arn: str) -> tuple[dict, str]:
    return run_dag_test(airflow_home, REPO_ROOT / "dags", "deploy", conf={"model_package_arn": arn}, timeout=600)


@pytest.fixture(scope="module")
def first(airflow_home, packages):
    return _deploy(airflow_home, packages["v1"])


def test_an_approved_package_is_deployed_smoke_tested_recorded_and_served_through_the_api(aws, local_stack, first,
                                                                                           packages):
    states, output = first
    assert states["record"] == "success", output[-8000:]
    assert states["rollback"] == "skipped" and states["approve"] == "skipped"
    endpoint = aws("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService" and "-v1-" in endpoint["EndpointConfigName"]
    assert endpoint["DataCaptureConfig"]["EnableCapture"]
    record = json.loads(aws("s3").get_object(Bucket=MODELS, Key=f"deployments/{ENDPOINT}/latest.json")["Body"]
                        .read())
    assert record["model_package_arn"] == packages["v1"] and record["smoke_test"]["passed"]
    request = urllib.request.Request(f"{local_stack.api_gateway_url}/detect", method="POST",
                                     data=json.dumps({"image": base64.b64encode(packages["frame"]).decode()}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert response.status == 200 and isinstance(answer["detections"], list), answer


def test_an_update_under_load_drops_no_request(aws, airflow_home, first, packages):
    runtime = aws("sagemaker-runtime")
    outcomes = {"ok": 0, "failed": []}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/jpeg", Body=packages["frame"])
                outcomes["ok"] += 1
            except Exception as exc:  # every failure counts
                outcomes["failed"].append(repr(exc))
            time.sleep(0.05)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        states, output = _deploy(airflow_home, packages["v2"])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert states["record"] == "success", output[-8000:]
    assert outcomes["failed"] == [] and outcomes["ok"] > 10, outcomes
    assert "-v2-" in aws("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]


def test_a_rerun_for_the_deployed_package_changes_nothing(aws, airflow_home, first, packages):
    before = aws("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
    states, output = _deploy(airflow_home, packages["v2"])
    assert states["deploy.update_endpoint"] == "skipped" and states["record"] == "success", output[-6000:]
    assert states["deploy.create_model"] == "skipped" and states["deploy.create_endpoint_config"] == "skipped"
    assert aws("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == \
        before["EndpointConfigName"]


def test_a_broken_model_fails_the_deploy_and_the_previous_model_keeps_serving(aws, airflow_home, first, packages):
    serving = aws("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    states, output = _deploy(airflow_home, packages["v3"])
    # SageMaker leaves an endpoint whose update failed InService on its old config (the operator's waiter is content
    # with InService): verify sees the old config, and there is nothing to roll back.
    assert states["deploy.update_endpoint"] == "success" and states["deploy.verify"] == "failed", output[-6000:]
    assert states["rollback"] == "failed", output[-6000:]
    assert states["record"] == "upstream_failed" and states["smoke_test"] == "upstream_failed"
    assert f"is InService on {serving}, not on surgical-detector-v3-" in output, output[-6000:]
    assert f"endpoint surgical-detector still serving {serving} (the update did not take)" in output, output[-6000:]
    endpoint = aws("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == serving
    answer = aws("sagemaker-runtime").invoke_endpoint(EndpointName=ENDPOINT, ContentType="image/jpeg",
                                                      Body=packages["frame"])
    assert "detections" in json.loads(answer["Body"].read())


def test_a_model_that_serves_but_fails_the_smoke_test_is_rolled_back_to_the_previous_config(aws, airflow_home,
                                                                                            first, packages):
    sagemaker = aws("sagemaker")
    serving = sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    states, output = _deploy(airflow_home, packages["v4"])
    assert states["deploy.update_endpoint"] == "success" and states["deploy.verify"] == "success", output[-6000:]
    assert states["smoke_test"] == "failed" and states["rollback"] == "failed", output[-6000:]
    assert states["record"] == "upstream_failed"
    assert "smoke test failed: detections agree with the package's evaluation on 0% of boxes" in output
    assert f"rolling surgical-detector back to {serving}" in output
    assert f"endpoint surgical-detector rolled back to {serving}" in output, output[-6000:]
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == serving
    assert "-v4-" not in endpoint["EndpointConfigName"]
    record = json.loads(aws("s3").get_object(Bucket=MODELS, Key=f"deployments/{ENDPOINT}/latest.json")["Body"]
                        .read())
    assert record["endpoint_config"] == serving  # the failed deployment was not recorded as serving


def _reviewer(env: dict, choice: str) -> dict:
    """A person at the Airflow UI answering the approve task (tests/hitl_reviewer.py); what the request said."""
    answered = subprocess.run([sys.executable, "-m", "tests.hitl_reviewer", choice, "400"], cwd=REPO_ROOT,
                              env={**env, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=500)
    assert answered.returncode == 0, answered.stderr[-3000:]
    return json.loads(answered.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("choice", ["Reject", "Approve"])
def test_where_a_person_approves_deploys_nothing_until_approved(aws, airflow_home, first, packages, choice):
    """prod's gate (deploy_requires_approval): the run waits for a person; a rejection changes nothing, an approval
    deploys."""
    sagemaker = aws("sagemaker")
    serving = sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
    version = "v1" if "-v2-" in serving else "v2"  # a version that does not serve now
    env = {**airflow_home, "AIRFLOW_VAR_PIPELINE_CONFIG": json.dumps({"deploy_requires_approval": True})}
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(_reviewer, env, choice)
        states, output = _deploy(env, packages[version])
        request = asked.result(timeout=60)
    assert request["task_id"] == "approve" and request["options"] == ["Approve", "Reject"], request
    assert request["subject"].startswith(f"Deploy surgical-detector-{version}-"), request
    assert packages[version] in request["body"] and serving in request["body"], request
    assert states["gate"] == "success" and states["no_approval_needed"] == "skipped", output[-6000:]
    endpoint = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    if choice == "Reject":
        assert states["approve"] == "failed" and states.get("record") != "success", output[-6000:]
        assert states["deploy.update_endpoint"] in ("upstream_failed", "skipped"), states
        assert endpoint["EndpointConfigName"] == serving
    else:
        assert states["approve"] == "success" and states["record"] == "success", output[-6000:]
        assert f"-{version}-" in endpoint["EndpointConfigName"] and endpoint["EndpointStatus"] == "InService"
