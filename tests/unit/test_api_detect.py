"""The api_detect Lambda (API Gateway proxy events -> InvokeEndpoint, stubbed with botocore's Stubber) and the local
API gateway's event and response translation."""

from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from werkzeug.test import Client

from include.lambdas import api_detect
from local_aws import api_gateway

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ANSWER = {"width": 320, "height": 320, "detections": [{"label": "scalpel", "category_id": 1, "score": 0.9,
                                                        "box": [1.0, 2.0, 30.0, 40.0]}]}
SETTINGS = api_detect.Settings("detector", max_image_bytes=1000)


@pytest.fixture
def runtime(monkeypatch):
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    monkeypatch.setattr(api_detect, "_runtime", lambda timeout_s: client)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _answer(stubber, expected: dict, body: dict | bytes = ANSWER) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    stubber.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                             "ContentType": "application/json"},
                         {"EndpointName": "detector", "Accept": "application/json", "Body": ANY, **expected})


def _event(body, content_type="application/json", encoded=False, method="POST", query=None):
    if isinstance(body, dict):
        body = json.dumps(body)
    return {"resource": "/detect", "path": "/detect", "httpMethod": method, "headers": {"content-type": content_type},
            "queryStringParameters": query, "body": body, "isBase64Encoded": encoded}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_json_image_goes_to_the_endpoint_with_its_options(runtime):
    _answer(runtime, {"ContentType": "image/jpeg", "CustomAttributes": "score_threshold=0.4,max_detections=3"})
    result = api_detect.handle(_event({"image": _b64(JPEG), "score_threshold": 0.4, "max_detections": 3}), SETTINGS)
    assert result["statusCode"] == 200 and json.loads(result["body"]) == ANSWER
    assert result["headers"]["Content-Type"] == "application/json"


def test_binary_body_from_api_gateway_and_query_options(runtime):
    _answer(runtime, {"ContentType": "image/png", "CustomAttributes": "max_detections=5"})
    result = api_detect.handle(_event(_b64(PNG), "image/png", encoded=True, query={"max_detections": "5"}), SETTINGS)
    assert result["statusCode"] == 200


def test_the_handler_reads_its_endpoint_from_the_environment(runtime, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "detector")
    _answer(runtime, {"ContentType": "image/jpeg"})
    assert api_detect.handler(_event({"image": _b64(JPEG)}), None)["statusCode"] == 200


@pytest.mark.parametrize(("event", "status", "message"), [
    (_event({"picture": "x"}), 400, "expected a JSON object"),
    (_event("{not json"), 400, "not valid JSON"),
    (_event({"image": "%%%"}), 400, "not valid base64"),
    (_event({"image": ""}), 400, "non-empty"),
    (_event({"image": _b64(b"GIF89a....")}), 400, "neither JPEG nor PNG"),
    (_event({"image": _b64(JPEG), "score_threshold": 3}), 400, "score_threshold"),
    (_event({"image": _b64(JPEG), "max_detections": "many"}), 400, "max_detections"),
    (_event("%%%", "image/jpeg", encoded=True), 400, "not valid base64"),
    (_event("", "image/jpeg", encoded=True), 400, "empty image"),
    (_event("hello", "text/plain"), 415, "unsupported content type"),
    (_event({"image": _b64(JPEG + b"\x00" * 1000)}), 413, "over the limit"),
    (_event({"image": _b64(JPEG)}, method="GET"), 405, "use POST"),
])
def test_bad_requests_never_reach_the_endpoint(runtime, event, status, message):
    result = api_detect.handle(event, SETTINGS)
    assert result["statusCode"] == status and message in json.loads(result["body"])["error"]


@pytest.mark.parametrize(("code", "http_status", "fields", "status", "message"), [
    ("ModelError", 424, {"OriginalStatusCode": 400, "OriginalMessage": '{"error": "cannot decode the image"}'}, 400,
     "cannot decode the image"),
    ("ModelError", 424, {"OriginalStatusCode": 413, "OriginalMessage": "not json"}, 413, "refused"),
    ("ModelError", 424, {"OriginalStatusCode": 500, "OriginalMessage": "{}"}, 502, "endpoint failed"),
    ("ValidationError", 400, {}, 503, "not available"),
    ("ServiceUnavailable", 503, {}, 503, "not available"),
    ("InternalFailure", 500, {}, 502, "InternalFailure"),
])
def test_endpoint_errors_map_to_gateway_statuses(runtime, code, http_status, fields, status, message):
    runtime.add_client_error("invoke_endpoint", service_error_code=code, service_message="x",
                             http_status_code=http_status, modeled_fields=fields or None)
    result = api_detect.handle(_event({"image": _b64(JPEG)}), SETTINGS)
    assert result["statusCode"] == status and message in json.loads(result["body"])["error"]


def test_an_endpoint_answer_that_is_not_json_is_a_502(runtime):
    _answer(runtime, {"ContentType": "image/jpeg"}, body=b"<html>")
    assert api_detect.handle(_event({"image": _b64(JPEG)}), SETTINGS)["statusCode"] == 502


def test_no_endpoint_configured_is_a_503():
    result = api_detect.handle(_event({"image": _b64(JPEG)}), api_detect.Settings(""))
    assert result["statusCode"] == 503


# -- the local API gateway ---------------------------------------------------------------------------------------
class _Functions:
    def __init__(self, env):
        self.env = env

    def get(self, handler_name):
        return self.env


@pytest.fixture
def gateway(monkeypatch):
    events = []

    def handle(event, settings):
        events.append((event, settings))
        return {"statusCode": 201, "headers": {"Content-Type": "application/json", "X-Test": "1"},
                "body": json.dumps({"ok": True}), "isBase64Encoded": False}

    monkeypatch.setattr(api_detect, "handle", handle)
    return Client(api_gateway.ApiGatewayApp(_Functions({"ENDPOINT_NAME": "from-the-function"}))), events


def test_gateway_turns_a_binary_post_into_a_v1_proxy_event(gateway):
    client, events = gateway
    response = client.post("/detect?max_detections=2", data=JPEG, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 201 and response.headers["X-Test"] == "1" and response.json == {"ok": True}
    event, settings = events[0]
    assert settings.endpoint_name == "from-the-function"
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == JPEG
    assert event["httpMethod"] == "POST" and event["resource"] == "/detect" and event["path"] == "/detect"
    assert event["queryStringParameters"] == {"max_detections": "2"}
    assert event["headers"]["Content-Type"] == "image/jpeg"
    assert event["multiValueHeaders"]["Content-Type"] == ["image/jpeg"]
    context = event["requestContext"]
    assert context["stage"] == "local" and context["requestId"] and context["identity"]["sourceIp"]


def test_gateway_passes_json_as_text(gateway):
    client, events = gateway
    client.post("/detect", data=b'{"image": "abc"}', headers={"Content-Type": "application/json"})
    assert events[0][0]["isBase64Encoded"] is False and events[0][0]["body"] == '{"image": "abc"}'


def test_gateway_unknown_route_and_failing_handler(monkeypatch):
    client = Client(api_gateway.ApiGatewayApp(_Functions(None)))
    assert client.get("/detect").status_code == 403
    assert client.get("/ping").status_code == 200

    def broken(event, settings):
        raise RuntimeError("boom")

    monkeypatch.setattr(api_detect, "handle", broken)
    response = client.post("/detect", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 502 and response.json == {"message": "Internal server error"}
    monkeypatch.setattr(api_detect, "handle", lambda event, settings: {"body": "no status"})
    assert client.post("/detect", data=b"{}").status_code == 502
