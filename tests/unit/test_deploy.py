"""deploy's requests and checks: valid against SageMaker's API model, deterministic names that change with what they
deploy, data capture and KMS, and the smoke test's box agreement (a property: agreement with oneself is total)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from include import deploy
from include.config import build_config
from tests.sagemaker_api import TEST_KEY_ARN, valid

CONFIG = build_config("local", {"kms_key_arn": TEST_KEY_ARN})
PACKAGE = {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/surgical-detector/3",
           "ModelPackageVersion": 3, "InferenceSpecification": {"Containers": [
               {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/inference:latest",
                "ModelDataUrl": "s3://surgical-models/training/j/output/model.tar.gz"}]}}


def test_names_are_deterministic_and_change_with_what_is_deployed():
    name = deploy.resource_name(CONFIG, PACKAGE)
    assert name == deploy.resource_name(CONFIG, dict(PACKAGE)) and name.startswith("surgical-detector-v3-")
    other = build_config("local", {"inference_instance_type": "ml.c5.large"})
    assert deploy.resource_name(other, PACKAGE) != name
    assert len(name) <= 63


def test_the_requests_are_valid_capture_data_and_encrypt():
    name = deploy.resource_name(CONFIG, PACKAGE)
    model = deploy.model_request(CONFIG, PACKAGE, name, "manual__1")
    valid("CreateModel", model)
    assert model["EnableNetworkIsolation"] and model["PrimaryContainer"]["ModelPackageName"] == PACKAGE[
        "ModelPackageArn"]
    endpoint_config = deploy.endpoint_config_request(CONFIG, PACKAGE, name, "manual__1")
    valid("CreateEndpointConfig", endpoint_config)
    capture = endpoint_config["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["InitialSamplingPercentage"] == 100
    assert capture["KmsKeyId"] == endpoint_config["KmsKeyId"] == TEST_KEY_ARN  # ml.m5: EBS volumes, by key ARN
    valid("CreateEndpoint", deploy.endpoint_request(CONFIG, PACKAGE, name, "manual__1"))


def test_the_endpoint_key_is_left_out_when_every_variant_has_local_storage():
    # prod serves on ml.g4dn (local NVMe storage, which the key "does not encrypt"); captured data keeps its key.
    config = build_config("prod", {"kms_key_arn": TEST_KEY_ARN})
    request = deploy.endpoint_config_request(config, PACKAGE, deploy.resource_name(config, PACKAGE), "manual__1")
    valid("CreateEndpointConfig", request)
    assert "KmsKeyId" not in request and request["DataCaptureConfig"]["KmsKeyId"] == TEST_KEY_ARN


def test_agreement_counts_same_class_overlapping_boxes():
    expected = [("scalpel", [0, 0, 10, 10]), ("tumor", [20, 20, 40, 40])]
    assert deploy.agreement(expected, list(expected)) == 1.0
    assert deploy.agreement(expected, [("scalpel", [0, 0, 10, 10])]) == 0.5
    assert deploy.agreement(expected, [("retractor", [0, 0, 10, 10]), ("tumor", [20, 20, 40, 40])]) == 0.5
    assert deploy.agreement([], []) == 1.0 and deploy.agreement(expected, []) == 0.0
    assert deploy.agreement([("scalpel", [0, 0, 10, 10])], [("scalpel", [5, 5, 15, 15])]) == 0.0  # IoU 0.14


def test_the_evaluations_coco_boxes_become_corner_boxes_at_the_threshold():
    image = {"detections": [{"category": "tumor", "bbox": [10, 20, 30, 40], "score": 0.9},
                            {"category": "scalpel", "bbox": [0, 0, 5, 5], "score": 0.1}]}
    assert deploy.expected_boxes(image, 0.5) == [("tumor", [10, 20, 40, 60])]


def test_the_smoke_verdict_names_what_failed():
    assert deploy.judge([1.0, 1.0], [10.0, 12.0], 0.9, 100).passed
    slow = deploy.judge([1.0, 1.0], [10.0, 500.0], 0.9, 100)
    assert not slow.passed and "over the budget" in slow.reasons[0]
    wrong = deploy.judge([0.2, 0.4], [10.0, 10.0], 0.9, 100)
    assert not wrong.passed and "30%" in wrong.reasons[0]
    assert not deploy.judge([], [], 0.9, 100).passed


boxes = st.lists(st.tuples(st.sampled_from(["scalpel", "retractor", "tumor"]),
                           st.tuples(st.floats(0, 300), st.floats(0, 300), st.floats(1, 100), st.floats(1, 100))),
                 max_size=8)


@settings(max_examples=50, deadline=None)
@given(boxes, boxes)
def test_agreement_is_a_share_and_total_with_oneself(a, b):
    def corners(items):
        return [(label, [x, y, x + w, y + h]) for label, (x, y, w, h) in items]

    assert 0.0 <= deploy.agreement(corners(a), corners(b)) <= 1.0
    assert deploy.agreement(corners(a), corners(a)) == 1.0
