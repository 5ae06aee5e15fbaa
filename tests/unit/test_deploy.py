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


def test_the_requests_in_full():
    name = deploy.resource_name(CONFIG, PACKAGE)
    assert name == "surgical-detector-v3-e092733f"  # the hash of the package, image, artifact and variant settings
    tags = [{"Key": "model_package_version", "Value": "3"}, {"Key": "dag_run_id", "Value": "manual__1"},
            {"Key": "project", "Value": "surgical-mlops"}]
    assert deploy.model_request(CONFIG, PACKAGE, name, "manual__1") == {
        "ModelName": name, "PrimaryContainer": {"ModelPackageName": PACKAGE["ModelPackageArn"]},
        "ExecutionRoleArn": "arn:aws:iam::123456789012:role/surgical-sagemaker-execution",
        "EnableNetworkIsolation": True, "Tags": tags}
    assert deploy.endpoint_config_request(CONFIG, PACKAGE, name, "manual__1") == {
        "EndpointConfigName": name,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large",
                                "InitialInstanceCount": 1, "InitialVariantWeight": 1.0}],
        "DataCaptureConfig": {
            "EnableCapture": True, "InitialSamplingPercentage": 100,
            "DestinationS3Uri": "s3://surgical-models/data-capture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}, "KmsKeyId": TEST_KEY_ARN},
        "KmsKeyId": TEST_KEY_ARN, "EnableNetworkIsolation": True, "Tags": tags}
    assert deploy.endpoint_request(CONFIG, PACKAGE, name, "manual__1") == {
        "EndpointName": "surgical-detector", "EndpointConfigName": name, "Tags": tags}


def test_without_a_key_the_endpoint_config_names_none():
    config = build_config("local")
    assert config.kms_key_arn is None
    request = deploy.endpoint_config_request(config, PACKAGE, "n", "manual__1")
    valid("CreateEndpointConfig", request)
    assert "KmsKeyId" not in request and "KmsKeyId" not in request["DataCaptureConfig"]


def test_names_and_tags_are_cut_to_sagemakers_limits():
    digest = deploy.resource_name(CONFIG, PACKAGE).rsplit("-", 1)[1]  # the endpoint's name is not hashed
    long = build_config("local", {"kms_key_arn": TEST_KEY_ARN, "endpoint_name": "e" * 56})
    assert deploy.resource_name(long, PACKAGE) == "e" * 56 + "-v3-" + digest[:3]  # 63 characters
    tags = deploy.model_request(CONFIG, PACKAGE, "n", "r" * 300)["Tags"]
    assert tags[1] == {"Key": "dag_run_id", "Value": "r" * 256}


def test_iou_of_corner_boxes():
    assert deploy._iou([0, 0, 10, 10], [5, 0, 15, 10]) == 50 / 150
    assert deploy._iou([0, 0, 4, 2], [0, 0, 4, 2]) == 1.0  # not square: width times height
    assert deploy._iou([0, 0, 10, 10], [10.5, 0, 20, 10]) == 0.0  # apart side by side
    assert deploy._iou([0, 0, 10, 10], [0, 10.5, 10, 20]) == 0.0  # apart one above the other
    assert deploy._iou([0, 0, 10, 10], [9.5, 0, 20, 10]) == 5 / 200  # overlapping by less than one pixel
    assert deploy._iou([0, 0, 10, 10], [0, 9.5, 10, 20]) == 5 / 200
    assert deploy._iou([3, 3, 3, 3], [3, 3, 3, 3]) == 0.0  # empty boxes: no union, no overlap


def test_agreement_matches_at_exactly_the_minimum_iou_and_each_served_box_once():
    assert deploy.agreement([("tumor", [0, 0, 10, 10])], [("tumor", [0, 0, 10, 8])]) == 1.0  # IoU 0.8
    assert deploy.agreement([("tumor", [0, 0, 10, 10])], [("tumor", [0, 0, 10, 7.9])]) == 0.0  # IoU 0.79
    twice = [("tumor", [0, 0, 10, 10]), ("tumor", [0, 0, 10, 10])]
    assert deploy.agreement(twice, [("tumor", [0, 0, 10, 10])]) == 0.5


def test_a_detection_at_exactly_the_threshold_is_expected():
    image = {"detections": [{"category": "tumor", "bbox": [1, 2, 3, 4], "score": 0.5}]}
    assert deploy.expected_boxes(image, 0.5) == [("tumor", [1, 2, 4, 6])]


def test_served_boxes_of_an_answer_with_or_without_detections():
    assert deploy.served_boxes({}) == []
    assert deploy.served_boxes({"detections": [{"label": "tumor", "score": 0.5, "box": [1, 2, 3, 4]}]}) == [
        ("tumor", [1.0, 2.0, 3.0, 4.0])]


def test_the_smoke_verdict_in_full():
    assert deploy.judge([], [], 0.9, 100).to_dict() == {
        "frames": 0, "mean_agreement": 0.0, "min_agreement": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "passed": False,
        "reasons": ["no test frame could be sent to the endpoint"]}
    # rounded: agreement to 4 decimals, latency to 0.1 ms
    assert deploy.judge([1 / 3, 2 / 3, 1.0], [12.34, 12.34, 12.34], 0.5, 100).to_dict() == {
        "frames": 3, "mean_agreement": 0.6667, "min_agreement": 0.3333, "p50_ms": 12.3, "p95_ms": 12.3,
        "passed": True, "reasons": ["3 frames: agreement 67%, p50 12 ms, p95 12 ms"]}
    both = deploy.judge([0.5, 0.5], [300.0, 300.0], 0.9, 100)
    assert not both.passed and both.reasons == [
        "detections agree with the package's evaluation on 50% of boxes, below 90%",
        "p95 latency 300 ms is over the budget of 100 ms"]


def test_the_smoke_verdict_passes_at_exactly_the_limits():
    assert deploy.judge([0.9, 0.9], [10.0, 10.0], 0.9, 100).passed  # agreement at the minimum
    assert deploy.judge([1.0, 1.0], [100.0, 100.0], 0.9, 100).passed  # p95 at the budget
