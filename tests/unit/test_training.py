"""train_and_register's requests and records: valid against SageMaker's API model, deterministic names, encryption and
isolation, lineage, the evaluation copied out of the job's archives, and the adapter the promotion rule reads."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest

from include import training
from include.config import build_config
from include.promotion import evaluation_records
from tests.sagemaker_api import TEST_KEY_ARN, valid

CONFIG = build_config("local", {"kms_key_arn": TEST_KEY_ARN})


def test_hyperparameters_are_the_configs_then_the_runs_all_strings():
    hps = training.hyperparameters(CONFIG, {"epochs": 3, "lr": 0.01, "augment": "flip", "amp": True})
    assert hps["epochs"] == "3" and hps["lr"] == "0.01" and hps["augment"] == "flip" and hps["amp"] == "true"
    assert hps["max_train_seconds"] == str(CONFIG.training_hyperparameters["max_train_seconds"])
    with pytest.raises(training.TrainingInputError, match="'lr'"):
        training.hyperparameters(CONFIG, {"lr": [1, 2]})


def test_job_names_are_deterministic_and_within_awss_limits():
    hps = training.hyperparameters(CONFIG, {})
    name = training.training_job_name("0123456789abcdef", hps)
    assert name == training.training_job_name("0123456789abcdef", dict(hps)) and len(name) <= 63
    assert name != training.training_job_name("0123456789abcdef", {**hps, "epochs": "2"})
    assert len(training.training_job_name("0123456789abcdef", hps, hpo=True)) <= 32


def test_the_requests_are_valid_encrypted_and_isolated():
    hps = training.hyperparameters(CONFIG, {})
    job = training.training_job_request(CONFIG, "0123456789abcdef", hps, "manual__2026", "abc123")
    valid("CreateTrainingJob", job)
    # ml.g4dn has local NVMe storage, encrypted by the instance: SageMaker refuses a volume key there.
    assert job["EnableNetworkIsolation"] and "VolumeKmsKeyId" not in job["ResourceConfig"]
    assert job["OutputDataConfig"]["KmsKeyId"] == TEST_KEY_ARN
    on_ebs = build_config("local", {"kms_key_arn": TEST_KEY_ARN, "training_instance_type": "ml.c5.xlarge"})
    ebs_job = training.training_job_request(on_ebs, "0123456789abcdef", hps, "manual__2026", "abc123")
    valid("CreateTrainingJob", ebs_job)
    assert ebs_job["ResourceConfig"]["VolumeKmsKeyId"] == TEST_KEY_ARN
    assert job["CheckpointConfig"]["S3Uri"].endswith(f"{job['TrainingJobName']}/")
    assert {t["Key"]: t["Value"] for t in job["Tags"]}["dataset_version"] == "0123456789abcdef"
    tuning = training.tuning_job_request(CONFIG, "0123456789abcdef", hps, "manual__2026", "abc123")
    valid("CreateHyperParameterTuningJob", tuning)
    assert "VolumeKmsKeyId" not in tuning["TrainingJobDefinition"]["ResourceConfig"]
    assert "lr" not in tuning["TrainingJobDefinition"]["StaticHyperParameters"]
    champion = {"ModelPackageVersion": 3, "InferenceSpecification": {"Containers": [
        {"Image": "x", "ModelDataUrl": "s3://surgical-models/training/j/output/model.tar.gz"}]}}
    rescore = training.champion_evaluation_request(CONFIG, champion, "fedcba9876543210", "manual__2026")
    valid("CreateProcessingJob", rescore)
    assert rescore["NetworkConfig"]["EnableNetworkIsolation"]
    assert rescore["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == TEST_KEY_ARN  # ml.c5: EBS
    assert rescore["AppSpecification"]["ContainerArguments"][0] == "evaluate"



def test_the_prediction_request_is_valid_and_reads_the_frames_from_a_manifest():
    package = {"ModelPackageVersion": 4, "InferenceSpecification": {"Containers": [
        {"Image": "x", "ModelDataUrl": "s3://surgical-models/training/j/output/model.tar.gz"}]}}
    manifest = f"s3://{CONFIG.frames_bucket}/manifests/new-frames.json"
    request = training.prediction_request(CONFIG, package, manifest, f"s3://{CONFIG.annotations_bucket}/pre/run-1/",
                                          "predict-champion-v4-" + "a" * 43, "manual__2026")
    valid("CreateProcessingJob", request)
    assert request["AppSpecification"]["ImageUri"] == CONFIG.image_uri("trainer")
    assert request["AppSpecification"]["ContainerArguments"] == [
        "predict", "--model", "/opt/ml/processing/input/model", "--frames", "/opt/ml/processing/input/frames",
        "--output", "/opt/ml/processing/output", "--min-score", str(CONFIG.pre_annotation_min_score),
        "--max-boxes", str(CONFIG.pre_annotation_max_boxes)]
    inputs = {i["InputName"]: i["S3Input"] for i in request["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == "s3://surgical-models/training/j/output/model.tar.gz"
    assert inputs["model"]["S3DataType"] == "S3Prefix"
    assert inputs["frames"] == {"S3Uri": manifest, "LocalPath": "/opt/ml/processing/input/frames",
                                "S3DataType": "ManifestFile", "S3InputMode": "File",
                                "S3DataDistributionType": "FullyReplicated"}
    output = request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]
    assert output["S3Uri"].endswith("/pre/run-1/") and output["LocalPath"] == "/opt/ml/processing/output"
    assert request["ProcessingOutputConfig"]["KmsKeyId"] == TEST_KEY_ARN
    assert request["NetworkConfig"]["EnableNetworkIsolation"]
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == TEST_KEY_ARN
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["dag_run_id"] == "manual__2026" and tags["model_package_version"] == "4"
    for name in ("predict-" + "a" * 56, "predict_champion", "-predict"):
        with pytest.raises(training.TrainingInputError, match="bad processing job name"):
            training.prediction_request(CONFIG, package, manifest, "s3://b/p/", name, "manual__2026")

def test_the_package_extras_carry_metrics_and_lineage():
    evaluation = {"training_job": "train-x", "model_data": "s3://surgical-models/training/train-x/output/model.tar.gz",
                  "evaluation_uri": "s3://surgical-models/evaluations/train-x/evaluation.json", "map50": 0.91,
                  "map": 0.6, "dataset_version": "0123456789abcdef",
                  "report_uri": "s3://surgical-models/reports/train-x/index.html"}
    extras = training.package_extras(CONFIG, evaluation, "manual__2026", "abc123", {"epochs": "3"})
    request = {"ModelPackageGroupName": "surgical-detector", "ModelApprovalStatus": "PendingManualApproval", **extras}
    valid("CreateModelPackage", request)
    metadata = extras["CustomerMetadataProperties"]
    assert metadata["training_job"] == "train-x" and metadata["dataset_version"] == "0123456789abcdef"
    assert metadata["code_commit"] == "abc123" and metadata["map50"] == "0.9100"
    assert extras["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == evaluation["evaluation_uri"]


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def test_publish_evaluation_copies_it_and_the_report_out_of_the_archives(in_process_aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="surgical-models")
    document = {"dataset_version": "v1", "map50": 0.5, "map": 0.3, "images": []}
    s3.put_object(Bucket="surgical-models", Key="training/j/output/model.tar.gz",
                  Body=_tar({"model.pt": b"w", "report/index.html": b"<html></html>", "report/pr.png": b"png"}))
    s3.put_object(Bucket="surgical-models", Key="training/j/output/output.tar.gz",
                  Body=_tar({"evaluation.json": json.dumps(document).encode()}))
    job = {"TrainingJobName": "j", "TrainingJobStatus": "Completed", "FinalMetricDataList": [
        {"MetricName": "test:map50", "Value": 0.5}],
        "ModelArtifacts": {"S3ModelArtifacts": "s3://surgical-models/training/j/output/model.tar.gz"}}
    result = training.publish_evaluation(s3, CONFIG, job)
    assert result["map50"] == 0.5 and result["dataset_version"] == "v1" and result["job_metrics"]["test:map50"] == 0.5
    assert json.loads(s3.get_object(Bucket="surgical-models", Key="evaluations/j/evaluation.json")["Body"].read()) \
        == document
    report = s3.get_object(Bucket="surgical-models", Key="reports/j/index.html")
    assert report["ContentType"] == "text/html"
    with pytest.raises(training.TrainingInputError, match="is Failed: AlgorithmError: boom"):
        training.publish_evaluation(s3, CONFIG, {"TrainingJobName": "k", "TrainingJobStatus": "Failed",
                                                 "FailureReason": "AlgorithmError: boom"})


def test_the_trainers_evaluation_is_keyed_by_file_name_for_the_promotion_rule():
    evaluation = {"per_class": {"scalpel": {}, "tumor": {}}, "images": [
        {"image_id": 7, "file_name": "frames/v1/000001.jpg", "video_id": "v1",
         "ground_truth": [{"category": "scalpel", "bbox": [1, 2, 3, 4]}],
         "detections": [{"category": "scalpel", "bbox": [1, 2, 3, 4], "score": 0.9, "tp50": True}]}]}
    records, classes = evaluation_records(evaluation)
    assert classes == ["scalpel", "tumor"]
    assert records[0]["image_id"] == "frames/v1/000001.jpg" and records[0]["video_id"] == "v1"
    with pytest.raises(ValueError, match="no 'ground_truth'"):
        evaluation_records({"per_class": {}, "images": [{"image_id": 1, "file_name": "f", "video_id": "v"}]})
