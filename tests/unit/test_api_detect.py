"""The api_detect Lambda (API Gateway proxy events -> InvokeEndpoint, stubbed with botocore's Stubber) and the local
API gateway's event and response translation."""

from __future__ import annotations

import base64
import io
import json
import logging
import types

import boto3
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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



# -- exact answers: AWS's clients and the tests of callers read these bodies -------------------------------------------
def _error(result: dict) -> tuple[int, dict]:
    return result["statusCode"], json.loads(result["body"])


@pytest.mark.parametrize(("event", "status", "message"), [
    (_event({"picture": "x"}), 400, 'expected a JSON object {"image": "<base64>"}'),
    (_event('["image"]'), 400, 'expected a JSON object {"image": "<base64>"}'),
    (_event(""), 400, 'expected a JSON object {"image": "<base64>"}'),  # an empty JSON body: no document at all
    (_event("{not json"), 400, "the body is not valid JSON"),
    (_event({"image": "%%%"}), 400, '"image" is not valid base64'),
    (_event({"image": ""}), 400, '"image" must be a non-empty base64 string'),
    (_event({"image": 7}), 400, '"image" must be a non-empty base64 string'),
    (_event({"image": "data:image/jpeg;base64"}), 400, '"image" is not valid base64'),  # a data URL without data
    (_event({"image": "data:image/jpeg,x," + _b64(JPEG)}), 400, '"image" is not valid base64'),  # only the 1st comma
    (_event({"image": _b64(b"GIF89a....")}), 400, "the image is neither JPEG nor PNG"),
    (_event({"image": _b64(JPEG), "score_threshold": 3}), 400, "score_threshold must be in [0, 1]"),
    (_event({"image": _b64(JPEG), "score_threshold": 1.5}), 400, "score_threshold must be in [0, 1]"),
    (_event({"image": _b64(JPEG), "score_threshold": -0.1}), 400, "score_threshold must be in [0, 1]"),
    (_event({"image": _b64(JPEG), "score_threshold": "high"}), 400, "score_threshold must be a number"),
    (_event({"image": _b64(JPEG), "max_detections": "many"}), 400, "max_detections must be a number"),
    (_event({"image": _b64(JPEG), "max_detections": 2.5}), 400, "max_detections must be a number"),
    (_event({"image": _b64(JPEG), "max_detections": 0}), 400, "max_detections must be at least 1"),
    (_event({"image": _b64(JPEG)}, query={"max_detections": "-3"}), 400, "max_detections must be at least 1"),
    (_event("%%%", "image/jpeg", encoded=True), 400, "the body is not valid base64"),
    (_event("", "image/jpeg", encoded=True), 400, "empty image"),
    (_event("hello", "text/plain"), 415, "unsupported content type text/plain; send application/json or an image"),
    (_event("hello", "Text/Plain; charset=utf-8"), 415,
     "unsupported content type text/plain; send application/json or an image"),
    (_event({"image": _b64(JPEG + b"\x00" * 1000)}), 413, "image of 1068 bytes is over the limit of 1000"),
    (_event({"image": _b64(JPEG)}, method="GET"), 405, "use POST"),
])
def test_bad_requests_get_their_exact_status_and_message(runtime, event, status, message):
    assert _error(api_detect.handle(event, SETTINGS)) == (status, {"error": message})


def test_the_response_is_an_api_gateway_proxy_answer(runtime):
    _answer(runtime, {"ContentType": "image/jpeg"})
    assert api_detect.handle(_event({"image": _b64(JPEG)}), SETTINGS) == {
        "statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(ANSWER),
        "isBase64Encoded": False}
    assert api_detect.response(404, {"error": "x"}) == {
        "statusCode": 404, "headers": {"Content-Type": "application/json"}, "body": '{"error": "x"}',
        "isBase64Encoded": False}


def test_the_request_to_the_endpoint_carries_the_frame_itself(runtime):
    """The exact InvokeEndpoint parameters: no CustomAttributes without options, the frame's bytes as the body."""
    data = json.dumps(ANSWER).encode()
    runtime.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(data), len(data)),
                                             "ContentType": "application/json"},
                         {"EndpointName": "detector", "Accept": "application/json", "Body": PNG,
                          "ContentType": "image/png"})
    event = {"httpMethod": "POST", "headers": {"Content-Type": "IMAGE/PNG", "X-Number": 3}, "body": PNG,
             "isBase64Encoded": False}  # no query string, upper-case type, bytes as a test client may send them
    assert api_detect.handle(event, SETTINGS)["statusCode"] == 200


@pytest.mark.parametrize(("event", "attributes"), [
    # JSON options win over the query string; an empty option is no option; bounds are inclusive
    (_event({"image": _b64(JPEG), "score_threshold": 0, "max_detections": 1}, query={"max_detections": "9"}),
     "score_threshold=0.0,max_detections=1"),
    (_event({"image": _b64(JPEG), "score_threshold": None}, query={"score_threshold": "1"}), "score_threshold=1.0"),
    (_event({"image": _b64(JPEG)}, query={"score_threshold": "", "max_detections": "4"}), "max_detections=4"),
    (_event({"image": "data:image/jpeg;base64," + _b64(JPEG), "max_detections": "7"}), "max_detections=7"),
])
def test_options_reach_the_endpoint_as_custom_attributes(runtime, event, attributes):
    _answer(runtime, {"ContentType": "image/jpeg", "CustomAttributes": attributes})
    assert api_detect.handle(event, SETTINGS)["statusCode"] == 200


def test_an_event_without_method_or_content_type_is_a_json_post(runtime):
    _answer(runtime, {"ContentType": "image/jpeg"})
    event = {"body": json.dumps({"image": _b64(JPEG)})}
    assert api_detect.handle(event, SETTINGS)["statusCode"] == 200


def test_a_content_type_with_parameters_is_its_media_type(runtime):
    _answer(runtime, {"ContentType": "image/jpeg"})
    event = _event({"image": _b64(JPEG)}, content_type="Application/JSON; charset=utf-8")
    assert api_detect.handle(event, SETTINGS)["statusCode"] == 200


def test_an_image_of_exactly_the_limit_is_accepted(runtime):
    _answer(runtime, {"ContentType": "image/jpeg"})
    image = JPEG + b"\x00" * (SETTINGS.max_image_bytes - len(JPEG))
    assert api_detect.handle(_event({"image": _b64(image)}), SETTINGS)["statusCode"] == 200


def test_the_client_is_made_for_the_settings_timeout(monkeypatch):
    client = boto3.client("sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    timeouts = []
    monkeypatch.setattr(api_detect, "_runtime", lambda timeout_s: timeouts.append(timeout_s) or client)
    with Stubber(client) as stubber:
        _answer(stubber, {"ContentType": "image/jpeg"})
        settings = api_detect.Settings("detector", max_image_bytes=1000, timeout_s=7.5)
        assert api_detect.handle(_event({"image": _b64(JPEG)}), settings)["statusCode"] == 200
    assert timeouts == [7.5]


class _Raising:
    def __init__(self, exc=None, body: bytes = b""):
        self.exc, self.body = exc, body

    def invoke_endpoint(self, **request):
        if self.exc is not None:
            raise self.exc
        return {"Body": io.BytesIO(self.body)}


@pytest.mark.parametrize(("client", "status", "message"), [
    (_Raising(ReadTimeoutError(endpoint_url="https://runtime")), 504, "the model endpoint did not answer in time"),
    (_Raising(ConnectTimeoutError(endpoint_url="https://runtime")), 504, "the model endpoint did not answer in time"),
    (_Raising(EndpointConnectionError(endpoint_url="https://runtime")), 502,
     "cannot reach the model endpoint: EndpointConnectionError"),
    (_Raising(ClientError({}, "InvokeEndpoint")), 502, "the model endpoint failed (unknown error)"),
    (_Raising(ClientError({"Error": {"Message": "x"}}, "InvokeEndpoint")), 502,
     "the model endpoint failed (unknown error)"),
    (_Raising(body=b"<html>"), 502, "the model endpoint answered something other than JSON"),
    (_Raising(body=b"[1, 2]"), 502, "the model endpoint answered an unexpected document"),
])
def test_transport_failures_and_odd_answers_map_to_gateway_statuses(monkeypatch, client, status, message):
    monkeypatch.setattr(api_detect, "_runtime", lambda timeout_s: client)
    assert _error(api_detect.handle(_event({"image": _b64(JPEG)}), SETTINGS)) == (status, {"error": message})


@pytest.mark.parametrize(("response", "status", "message"), [
    ({"Error": {"Code": "ModelError"}, "OriginalStatusCode": 400, "OriginalMessage": '{"error": "too dark"}'}, 400,
     "too dark"),
    ({"Error": {"Code": "ModelError"}, "OriginalStatusCode": 499}, 499, "the model endpoint refused the image"),
    ({"Error": {"Code": "ModelError"}, "OriginalStatusCode": 422, "OriginalMessage": "[1]"}, 422,
     "the model endpoint refused the image"),
    ({"Error": {"Code": "ModelError"}, "OriginalStatusCode": 399}, 502, "the model endpoint failed"),
    ({"Error": {"Code": "ModelError"}, "OriginalStatusCode": 500}, 502, "the model endpoint failed"),
    ({"Error": {"Code": "ModelError"}}, 502, "the model endpoint failed"),
    ({"Error": {"Code": "ModelNotReadyException"}}, 503, "the model endpoint is not available"),
    ({"Error": {"Code": "ThrottlingException"}}, 503, "the model endpoint is not available"),
    ({"Error": {"Code": "InternalFailure"}}, 502, "the model endpoint failed (InternalFailure)"),
])
def test_client_errors_map_to_statuses_and_messages(response, status, message):
    error = api_detect._from_client_error(ClientError(response, "InvokeEndpoint"))
    assert (error.status, error.message, str(error)) == (status, message, message)


def test_no_endpoint_configured_says_what_to_set():
    result = api_detect.handle(_event({"image": _b64(JPEG)}), api_detect.Settings(""))
    assert _error(result) == (503, {"error": "no model endpoint is configured (ENDPOINT_NAME)"})


def test_settings_from_the_environment_and_their_defaults(monkeypatch):
    assert api_detect.Settings.from_env({}) == api_detect.Settings("", 6 * 1024 * 1024, 25.0)
    assert api_detect.Settings.from_env({"MAX_IMAGE_BYTES": "", "INVOKE_TIMEOUT_S": ""}) == \
        api_detect.Settings("", 6 * 1024 * 1024, 25.0)
    assert api_detect.Settings.from_env({"ENDPOINT_NAME": "d", "MAX_IMAGE_BYTES": "10", "INVOKE_TIMEOUT_S": "3.5"}) \
        == api_detect.Settings("d", 10, 3.5)
    for name, value in (("ENDPOINT_NAME", "from-env"), ("MAX_IMAGE_BYTES", "77"), ("INVOKE_TIMEOUT_S", "9")):
        monkeypatch.setenv(name, value)
    assert api_detect.Settings.from_env() == api_detect.Settings("from-env", 77, 9.0)


def test_the_log_line_has_status_size_and_latency(runtime, monkeypatch, caplog):
    clock = iter([10.0, 10.25, 20.0, 20.5])
    monkeypatch.setattr(api_detect, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    _answer(runtime, {"ContentType": "image/jpeg"})
    with caplog.at_level(logging.INFO, logger="api_detect"):
        api_detect.handle(_event({"image": _b64(JPEG)}), SETTINGS)
        api_detect.handle(_event({"image": _b64(JPEG)}, method="PUT"), SETTINGS)
    assert [r.getMessage() for r in caplog.records if r.name == "api_detect"] == [
        f"status=200 image_bytes={len(JPEG)} ms=250.0", "status=405 image_bytes=0 ms=500.0"]


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


# -- no payload makes the handler raise: nesting, size and every option bounded ------------------------------------
def _nested(depth: int) -> str:
    return "[" * (depth - 1) + '{"image": "x"}' + "]" * (depth - 1)


@pytest.mark.parametrize(("event", "status", "message"), [
    (_event(_nested(8)), 400, 'expected a JSON object {"image": "<base64>"}'),  # 8 levels: read, and refused
    (_event(_nested(9)), 400, "the JSON is nested deeper than 8 levels"),
    (_event("[" * 6_000_000), 400, "the JSON is nested deeper than 8 levels"),  # was a RecursionError: a 502
    (_event('{"image": ' * 100_000), 400, "the JSON is nested deeper than 8 levels"),
    (_event(_b64(b"[" * 100_000), encoded=True), 400, "the JSON is nested deeper than 8 levels"),
    (_event("[" + "[]," * 2_000_000 + "[]]"), 413, "the JSON has more than 16384 characters outside its strings"),
    (_event("[" + '"",' * 2_000_000 + '""]'), 413, "the JSON has more than 16384 characters outside its strings"),
    (_event({"image": "[" * 100}), 400, '"image" is not valid base64'),  # brackets in strings are no nesting
    (_event({"image": '\\"[' * 100}), 400, '"image" is not valid base64'),
    (_event('{"image": "\ud800"}'), 400, "the body is not valid JSON"),  # a lone surrogate: not UTF-8
    (_event("\ud800", "image/jpeg"), 400, "the image is neither JPEG nor PNG"),
    (_event(_b64(b'"\xff"'), encoded=True), 400, "the body is not valid JSON"),
    (_event({"image": _b64(JPEG), "score_threshold": True}), 400, "score_threshold must be a number"),
    (_event({"image": _b64(JPEG), "max_detections": True}), 400, "max_detections must be a number"),
    (_event({"image": _b64(JPEG), "max_detections": False}), 400, "max_detections must be a number"),
    (_event({"image": _b64(JPEG), "max_detections": 101}), 400, "max_detections must be at most 100"),
    (_event({"image": _b64(JPEG)}, query={"max_detections": "9" * 5000}), 400, "max_detections must be a number"),
    (_event({"image": _b64(JPEG)}, query={"max_detections": "1e400"}), 400, "max_detections must be a number"),
    (_event({"image": _b64(JPEG)}, query={"score_threshold": "nan"}), 400, "score_threshold must be in [0, 1]"),
    (_event(f'{{"image": "{_b64(JPEG)}", "score_threshold": NaN}}'), 400, "score_threshold must be in [0, 1]"),
    (_event(f'{{"image": "{_b64(JPEG)}", "score_threshold": -Infinity}}'), 400, "score_threshold must be in [0, 1]"),
])
def test_adversarial_payloads_get_their_exact_4xx(runtime, event, status, message):
    assert _error(api_detect.handle(event, SETTINGS)) == (status, {"error": message})


def test_options_at_their_bounds_reach_the_endpoint(runtime):
    _answer(runtime, {"ContentType": "image/jpeg", "CustomAttributes": "score_threshold=1.0,max_detections=100"})
    event = _event({"image": _b64(JPEG), "score_threshold": 1, "max_detections": 100})
    assert api_detect.handle(event, SETTINGS)["statusCode"] == 200


def test_json_at_its_structure_budget_is_read():
    limit = api_detect.MAX_JSON_STRUCTURE
    at_limit = '{"":[' + "0," * ((limit - 10) // 2) + "100]}"  # "" is a string as the budget counts one
    assert len(at_limit) == len(api_detect.json_structure(at_limit)) == limit
    assert _error(api_detect.handle(_event(at_limit), SETTINGS)) == (
        400, {"error": 'expected a JSON object {"image": "<base64>"}'})
    assert _error(api_detect.handle(_event(at_limit[:-2] + "0]}"), SETTINGS)) == (
        413, {"error": "the JSON has more than 16384 characters outside its strings"})


def test_json_structure_and_depth():
    assert api_detect.json_structure('{"image": "abc[[[", "max_detections": 3}') == '{"": "", "": 3}'
    assert api_detect.json_structure(r'["a\"[[", "b\\", "\\\"]"]') == '["", "", ""]'
    assert api_detect.json_structure('"unclosed [[') == ""
    limit = api_detect.MAX_JSON_STRUCTURE
    structure = api_detect.json_structure('["' + '","'.join(["x"] * limit) + '"]')
    assert structure[:limit] == '["",' + '"",' * ((limit - 4) // 3) + structure[limit - (limit - 4) % 3:limit]
    assert len(structure) > limit and structure.endswith('x"]')
    for text, depth in (("", 0), ("3", 0), ("[]", 1), ('{"": [{"": ""}]}', 3), ("[[[", 3), ("]]][[", 0),
                        ("]]" + "[" * 9, 7), ("[{[{]}]}", 4), ("[[]][[[]]]", 3)):
        assert api_detect.json_depth(text) == depth, text
    assert (api_detect.MAX_JSON_DEPTH, api_detect.MAX_JSON_STRUCTURE, api_detect.MAX_DETECTIONS) == (8, 16384, 100)


def test_json_encodings_and_a_recursion_error(monkeypatch):
    document = {"image": "x", "max_detections": 1}
    for encoding in ("utf-8-sig", "utf-16", "utf-32"):
        assert api_detect._parse_json(json.dumps(document).encode(encoding)) == document

    def deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(api_detect.json, "loads", deep)
    with pytest.raises(api_detect.ApiError) as info:
        api_detect._parse_json(b"[]")
    assert (info.value.status, info.value.message) == (400, "the body is not valid JSON")


def test_an_endpoint_answer_nested_too_deeply_is_a_502(monkeypatch):
    monkeypatch.setattr(api_detect, "_runtime", lambda timeout_s: _Raising(body=b"[" * 100_000 + b"]" * 100_000))
    assert _error(api_detect.handle(_event({"image": _b64(JPEG)}), SETTINGS)) == (
        502, {"error": "the model endpoint answered something other than JSON"})


class _Echo:
    """An endpoint that answers every request: what reaches it passed the Lambda's checks."""

    def __init__(self):
        self.requests = []

    def invoke_endpoint(self, **request):
        self.requests.append(request)
        return {"Body": io.BytesIO(json.dumps(ANSWER).encode())}


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=4), max_leaves=12)
_OPTION = _JSON | st.sampled_from(["0.5", "1", "0", "-1", "101", "nan", "inf", "1e400", "", "9" * 5000, "true"])
_OPTIONS = st.dictionaries(st.sampled_from(["score_threshold", "max_detections", "other"]), _OPTION, max_size=3)


@st.composite
def _bodies(draw) -> tuple[str, bool]:
    """A body as API Gateway hands it over: text, or base64 of bytes (isBase64Encoded)."""
    image = draw(st.sampled_from([JPEG, PNG, b"GIF89a", b""]) | st.binary(max_size=64)) + b"\x00" * draw(
        st.sampled_from([0, 10, 1000]))
    kind = draw(st.sampled_from(["json", "any-json", "nested", "wide", "text", "binary"]))
    if kind == "json":
        value = draw(st.sampled_from([_b64(image), "data:image/jpeg;base64," + _b64(image), "%%%", ""]) | _JSON)
        return json.dumps({"image": value, **draw(_OPTIONS)}), False
    if kind == "any-json":
        return json.dumps(draw(_JSON)), False
    if kind == "nested":
        return draw(st.sampled_from(["[", "{", '{"image":', '{"a": ['])) * draw(st.integers(1, 200_000)), False
    if kind == "wide":
        return "[" + draw(st.sampled_from(["[],", "{},", '"",', "0,"])) * draw(st.integers(1, 100_000)) + "1]", False
    if kind == "text":
        return draw(st.text(max_size=200)), False
    return _b64(draw(st.sampled_from([image, b"[" * 100_000]) | st.binary(max_size=200))), draw(st.booleans())


@st.composite
def _events(draw) -> dict:
    body, encoded = draw(_bodies())
    content_type = draw(st.sampled_from(["application/json", "Application/JSON; charset=utf-8", "image/jpeg",
                                         "image/png", "application/octet-stream", "text/plain", ""]))
    query = draw(st.none() | st.dictionaries(st.sampled_from(["score_threshold", "max_detections", "x"]),
                                             st.text(max_size=12) | st.sampled_from(["0.5", "3", "nan", "-1"]),
                                             max_size=3))
    return {"httpMethod": draw(st.sampled_from(["POST", "POST", "GET", "PUT"])),
            "headers": {"content-type": content_type} if content_type else None, "queryStringParameters": query,
            "body": body if draw(st.integers(0, 20)) else None, "isBase64Encoded": encoded}


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(event=_events())
def test_any_event_gets_an_answer_never_a_5xx_nor_an_exception(event):
    """The property: whatever API Gateway hands over, the handler returns (never raises), with 200 or a 4xx and a
    JSON body; what reaches the endpoint is a JPEG or PNG within the byte limit and options within their bounds."""
    endpoint = _Echo()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api_detect, "_runtime", lambda timeout_s: endpoint)
        result = api_detect.handle(event, SETTINGS)
    status, body = result["statusCode"], json.loads(result["body"])
    assert status == 200 or status in (400, 405, 413, 415), (status, body)
    assert body == ANSWER if status == 200 else set(body) == {"error"}
    for request in endpoint.requests:
        assert request["ContentType"] in ("image/jpeg", "image/png") and len(request["Body"]) <= 1000
        for pair in filter(None, request.get("CustomAttributes", "").split(",")):
            name, value = pair.split("=")
            assert 0 <= float(value) <= 1 if name == "score_threshold" else 1 <= int(value) <= 100


@pytest.mark.parametrize("body", ["[" * 6_000_000, "[" + "[]," * 2_000_000 + "[]]", "[" + "{}," * 2_000_000 + "{}]",
                                  '{"image": "' + "A" * 6_000_000 + '"}'])
def test_adversarial_bodies_are_refused_in_bounded_memory_and_time(runtime, body):
    """6 MB bodies (the Lambda's synchronous payload limit): at most a few copies of the body in memory, never the
    millions of lists or dicts the decoder would build, and well under a second."""
    import time as clock
    import tracemalloc

    tracemalloc.start()
    started = clock.perf_counter()
    try:
        status = api_detect.handle(_event(body), SETTINGS)["statusCode"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status in (400, 413)
    assert peak < 8 * len(body), f"{peak / 2**20:.0f} MB for a {len(body) / 2**20:.0f} MB body"
    assert clock.perf_counter() - started < 5
