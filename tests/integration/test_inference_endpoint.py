"""The inference container as a SageMaker endpoint on the local stack, and the detection API in front of it.

CreateModel -> CreateEndpointConfig -> CreateEndpoint with ``containers/inference`` and a model.tar.gz made as the
trainer makes it; InvokeEndpoint with frames and bad payloads (each refused with its documented status while the
endpoint stays in service); then ``POST /detect`` through the local API gateway to the api_detect Lambda handler."""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile

import pytest
import urllib3
from botocore.exceptions import ClientError

from local_aws import bootstrap
from tests.conftest import ENDPOINT_WAITER
from tests.inference_model import jpeg, model_archive, png, shared_model_dir, synthetic_frames

pytestmark = pytest.mark.integration
ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"  # infra/platform.yaml (make up deploys it)
BUCKET = "surgical-models"
# The local SageMaker gives the container 60 s to answer an invocation (local_aws/sagemaker/endpoints.py), the
# gateway's handler 2 tries of 25 s (include/lambdas/api_detect.py): the test's clients wait longer than those.
INVOKE_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def endpoint(aws, local_stack) -> str:
    """An endpoint of the inference container serving a freshly exported model."""
    name = f"detector-{uuid.uuid4().hex[:6]}"
    key = f"tests/{name}/model.tar.gz"
    aws("s3").put_object(Bucket=BUCKET, Key=key, Body=model_archive(shared_model_dir()))
    sm = aws("sagemaker")
    image = bootstrap.image_uri(bootstrap.image_repository(bootstrap.REPO_ROOT / "containers" / "inference"))
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": image, "ModelDataUrl": f"s3://{BUCKET}/{key}", "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.c5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=ENDPOINT_WAITER)
    yield name
    sm.delete_endpoint(EndpointName=name)


@pytest.fixture(scope="module")
def frame():
    return synthetic_frames(1, seed=21)[0]


def _invoke(aws, endpoint, body, content_type="image/jpeg", **extra):
    response = aws("sagemaker-runtime", read_timeout=INVOKE_TIMEOUT_S).invoke_endpoint(
        EndpointName=endpoint, Body=body, ContentType=content_type, **extra)
    return json.loads(response["Body"].read())


def test_invoke_endpoint_with_a_jpeg_returns_detections(aws, endpoint, frame):
    answer = _invoke(aws, endpoint, jpeg(frame), CustomAttributes="score_threshold=0,max_detections=7")
    assert (answer["width"], answer["height"]) == (320, 320)
    assert len(answer["detections"]) == 7
    assert {"label", "category_id", "score", "box"} <= set(answer["detections"][0])
    batch = _invoke(aws, endpoint, json.dumps({"instances": [{"image": base64.b64encode(png(frame)).decode()}] * 2,
                                                "max_detections": 3}), "application/json")
    assert [len(p["detections"]) <= 3 for p in batch["predictions"]] == [True, True]


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"\xff\xd8\xff\xe0 not a whole jpeg", "image/jpeg", 400),
    (b'{"image": "%%%"}', "application/json", 400),
    (b"frame", "text/plain", 415),
])
def test_bad_payloads_get_their_status_and_the_endpoint_stays_healthy(aws, endpoint, frame, body, content_type,
                                                                       status):
    with pytest.raises(ClientError) as info:
        _invoke(aws, endpoint, body, content_type)
    error = info.value.response
    assert error["Error"]["Code"] == "ModelError" and error["OriginalStatusCode"] == status
    assert "error" in json.loads(error["OriginalMessage"])
    assert aws("sagemaker").describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
    assert _invoke(aws, endpoint, jpeg(frame))["width"] == 320


@pytest.fixture(scope="module")
def detect_function(aws, endpoint) -> str:
    """The api_detect function as infra/ would deploy it: the gateway runs the handler with its environment."""
    name = f"api-detect-{uuid.uuid4().hex[:6]}"
    iam = aws("iam")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="invoke", PolicyDocument=json.dumps({  # infra/api.yaml's grant
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint",
                                                "Resource": f"arn:aws:sagemaker:*:*:endpoint/{endpoint}"}]}))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.write(bootstrap.REPO_ROOT / "include" / "lambdas" / "api_detect.py", "api_detect.py")
    aws("lambda").create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="api_detect.handler",
                                  Code={"ZipFile": code.getvalue()}, Timeout=30,
                                  Environment={"Variables": {"ENDPOINT_NAME": endpoint}})
    yield name
    aws("lambda").delete_function(FunctionName=name)


def test_the_detection_api_answers_through_the_local_gateway(local_stack, detect_function, frame):
    env = dict(line.removeprefix("export ").split("=", 1) for line in local_stack.env_file.read_text().splitlines()
               if line.startswith("export "))
    url = f"{env['API_GATEWAY_URL']}/detect"
    http = urllib3.PoolManager(timeout=INVOKE_TIMEOUT_S)
    image = base64.b64encode(jpeg(frame)).decode()
    response = http.request("POST", url, body=json.dumps({"image": image, "score_threshold": 0, "max_detections": 4}),
                            headers={"Content-Type": "application/json"})
    assert response.status == 200, response.data
    assert len(json.loads(response.data)["detections"]) == 4
    binary = http.request("POST", f"{url}?max_detections=2", body=jpeg(frame), headers={"Content-Type": "image/jpeg"})
    assert binary.status == 200 and len(json.loads(binary.data)["detections"]) <= 2
    corrupt = http.request("POST", url, body=b"\xff\xd8\xff\xe0 broken", headers={"Content-Type": "image/jpeg"})
    assert corrupt.status == 400 and "error" in json.loads(corrupt.data)
