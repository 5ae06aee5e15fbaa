"""The local SageMaker's documented rules (local_aws/sagemaker/rules.py) and the instance-type enums it enforces through
botocore's shapes: each rule refuses with AWS's error code and a message naming the member and the rule, and accepts
the request made right."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.model import ServiceModel
from hypothesis import given, settings
from hypothesis import strategies as st

from include.instances import LOCAL_STORAGE_FAMILIES, has_local_storage, volume_key
from local_aws.sagemaker.exceptions import ValidationException
from local_aws.sagemaker.rules import MAX_TRAINING_RUNTIME_S, KmsKeys, check
from local_aws.sagemaker.validation import service_model, validate
from tests.sagemaker_api import TEST_KEY_ARN, key_exists, problems

ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/surgical-mlops/trainer:latest"
ALIAS_ARN = "arn:aws:kms:us-east-1:123456789012:alias/surgical-mlops"
NVME = "KMS key is not supported for NVMe instance storage"
MODEL = service_model("sagemaker")


def training(instance: str = "ml.c5.xlarge", **resource: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": "train-1", "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://surgical-models/training/", "KmsKeyId": TEST_KEY_ARN},
        "ResourceConfig": {"InstanceType": instance, "InstanceCount": 1, "VolumeSizeInGB": 50, **resource},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def processing(instance: str = "ml.c5.xlarge", **cluster: Any) -> dict[str, Any]:
    return {
        "ProcessingJobName": "frames-1", "RoleArn": ROLE, "AppSpecification": {"ImageUri": IMAGE},
        "ProcessingInputs": [{"InputName": "video", "S3Input": {
            "S3Uri": "s3://surgical-videos-raw/staging/a.mp4", "LocalPath": "/opt/ml/processing/input/video",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "frames", "S3Output": {
            "S3Uri": "s3://surgical-frames-processed/frames/a", "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}], "KmsKeyId": TEST_KEY_ARN},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance, "VolumeSizeInGB": 30,
                                                  **cluster}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def tuning(definition: dict[str, Any]) -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": "hpo-1",
        "HyperParameterTuningJobConfig": {"Strategy": "Random", "ResourceLimits": {
            "MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1}},
        "TrainingJobDefinition": definition,
    }


def tuning_definition(**resource: Any) -> dict[str, Any]:
    job = training(**resource)
    return {k: job[k] for k in ("AlgorithmSpecification", "RoleArn", "OutputDataConfig", "ResourceConfig",
                                "StoppingCondition")}


def schedule(runtime: int, expression: str = "cron(0 * ? * * *)", kind: str = "DataQuality",
             **cluster: Any) -> dict[str, Any]:
    return {"MonitoringScheduleName": "surgical-detector-drift", "MonitoringScheduleConfig": {
        "ScheduleConfig": {"ScheduleExpression": expression}, "MonitoringType": kind,
        "MonitoringJobDefinition": {
            "MonitoringInputs": [{"EndpointInput": {"EndpointName": "surgical-detector",
                                                    "LocalPath": "/opt/ml/processing/input/endpoint"}}],
            "MonitoringOutputConfig": {"MonitoringOutputs": [{"S3Output": {
                "S3Uri": "s3://surgical-models/monitoring/reports", "LocalPath": "/opt/ml/processing/resultdata"}}]},
            "MonitoringResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                      "VolumeSizeInGB": 30, **cluster}},
            "MonitoringAppSpecification": {"ImageUri": IMAGE},
            "StoppingCondition": {"MaxRuntimeInSeconds": runtime}, "RoleArn": ROLE}}}


def endpoint_config(*instances: str, **extra: Any) -> dict[str, Any]:
    return {"EndpointConfigName": "surgical-detector-v3", "ProductionVariants": [
        {"VariantName": f"v{i}", "ModelName": "surgical-detector-v3", "InstanceType": instance,
         "InitialInstanceCount": 1} for i, instance in enumerate(instances)], **extra}


def transform(instance: str, **resources: Any) -> dict[str, Any]:
    return {"TransformJobName": "predict-1", "ModelName": "surgical-detector-v3",
            "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}},
            "TransformOutput": {"S3OutputPath": "s3://b/out/"},
            "TransformResources": {"InstanceType": instance, "InstanceCount": 1, **resources}}


# -- volume keys and local instance storage ---------------------------------------------------------------------------
def test_a_volume_key_on_local_nvme_storage_is_refused_with_awss_message():
    message = problems("CreateTrainingJob", training("ml.g4dn.xlarge", VolumeKmsKeyId=TEST_KEY_ARN))
    assert message == (
        "1 validation error detected: resourceConfig.volumeKmsKeyId: KMS key is not supported for NVMe instance "
        "storage (ml.g4dn.xlarge has local instance storage). Remove the KMS key in the request or choose a different "
        "instance type.")
    assert problems("CreateTrainingJob", training("ml.c5.xlarge", VolumeKmsKeyId=TEST_KEY_ARN)) is None
    assert problems("CreateTrainingJob", training("ml.g4dn.xlarge")) is None  # the same job without the key


@pytest.mark.parametrize(("operation", "request_", "member"), [
    ("CreateProcessingJob", processing("ml.g5.xlarge", VolumeKmsKeyId=TEST_KEY_ARN),
     "processingResources.clusterConfig.volumeKmsKeyId"),
    ("CreateTransformJob", transform("ml.g4dn.xlarge", VolumeKmsKeyId=TEST_KEY_ARN),
     "transformResources.volumeKmsKeyId"),
    ("CreateMonitoringSchedule", schedule(1800, InstanceType="ml.r5d.large", VolumeKmsKeyId=TEST_KEY_ARN),
     "monitoringScheduleConfig.monitoringJobDefinition.monitoringResources.clusterConfig.volumeKmsKeyId"),
    ("CreateHyperParameterTuningJob", tuning(tuning_definition(instance="ml.p4d.24xlarge",
                                                               VolumeKmsKeyId=TEST_KEY_ARN)),
     "trainingJobDefinition.resourceConfig.volumeKmsKeyId"),
    ("CreateTrainingJob", training("ml.c5.xlarge", VolumeKmsKeyId=TEST_KEY_ARN, InstanceGroups=[
        {"InstanceGroupName": "gpu", "InstanceType": "ml.p5.48xlarge", "InstanceCount": 1}]),
     "resourceConfig.volumeKmsKeyId"),
])
def test_every_job_kind_refuses_a_volume_key_on_local_storage(operation, request_, member):
    message = problems(operation, request_)
    assert message is not None and f"{member}: {NVME}" in message


def test_a_tuning_jobs_instance_configs_are_checked_too():
    definition = tuning_definition()
    del definition["ResourceConfig"]
    definition["HyperParameterTuningResourceConfig"] = {
        "VolumeKmsKeyId": TEST_KEY_ARN, "AllocationStrategy": "Prioritized", "InstanceConfigs": [
            {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            {"InstanceType": "ml.g6.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}]}
    message = problems("CreateHyperParameterTuningJob", tuning(definition))
    assert message is not None and "(ml.g6.xlarge has local instance storage)" in message
    definition["HyperParameterTuningResourceConfig"]["InstanceConfigs"].pop()
    assert problems("CreateHyperParameterTuningJob", tuning(definition)) is None


def test_the_endpoint_config_key_is_accepted_on_local_storage_as_botocore_1_44_documents():
    # "the KmsKeyId parameter does not encrypt instance local storage": accepted (the pipeline leaves it out).
    assert problems("CreateEndpointConfig", endpoint_config("ml.g4dn.xlarge", KmsKeyId=TEST_KEY_ARN)) is None


@settings(max_examples=60, deadline=None)
@given(instance=st.sampled_from(MODEL.shape_for("TrainingInstanceType").enum))
def test_for_every_training_instance_a_volume_key_passes_iff_the_instance_has_no_local_storage(instance):
    request = training(instance, VolumeKmsKeyId=TEST_KEY_ARN)
    assert (problems("CreateTrainingJob", request) is None) == (not has_local_storage(instance))
    # ... and the builders' helper gives exactly the requests that pass.
    assert problems("CreateTrainingJob", training(instance, **volume_key(TEST_KEY_ARN, instance))) is None


@settings(max_examples=60, deadline=None)
@given(instance=st.sampled_from(MODEL.shape_for("ProcessingInstanceType").enum))
def test_for_every_processing_instance_a_volume_key_passes_iff_the_instance_has_no_local_storage(instance):
    request = processing(instance, VolumeKmsKeyId=TEST_KEY_ARN)
    assert (problems("CreateProcessingJob", request) is None) == (not has_local_storage(instance))


def test_the_local_storage_table_knows_the_families_of_the_docs_and_the_ebs_only_ones():
    assert all(has_local_storage(f"{family}.xlarge") for family in LOCAL_STORAGE_FAMILIES)
    assert has_local_storage("ml.p6-b200.48xlarge") and has_local_storage("ml.g4ad.xlarge")
    for ebs_only in ("ml.c5.xlarge", "ml.m5.large", "ml.p2.xlarge", "ml.p3.2xlarge", "ml.c5n.xlarge", "ml.t2.medium",
                     "ml.t3.medium", "ml.inf1.xlarge", "ml.inf2.xlarge"):
        assert not has_local_storage(ebs_only), ebs_only
    assert volume_key(TEST_KEY_ARN, "ml.c5.xlarge") == {"VolumeKmsKeyId": TEST_KEY_ARN}
    assert volume_key(TEST_KEY_ARN, "ml.g5.xlarge") == {} and volume_key(None, "ml.c5.xlarge") == {}


# -- key formats and existence ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["alias/surgical-mlops", ALIAS_ARN])
def test_a_volume_key_must_be_a_key_id_or_key_arn_while_an_output_key_may_be_an_alias(alias):
    message = problems("CreateTrainingJob", training(VolumeKmsKeyId=alias))
    assert message is not None and f"resourceConfig.volumeKmsKeyId: Value '{alias}' is an alias" in message
    assert "a key ID (1234abcd-12ab-34cd-56ef-1234567890ab" in message and "or a key ARN" in message
    request = training()
    request["OutputDataConfig"]["KmsKeyId"] = alias
    assert check("CreateTrainingJob", request, key_exists=lambda key: True) is None


def test_a_key_id_and_a_multi_region_key_are_volume_keys():
    for key in ("1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab",
                "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"):
        check("CreateTrainingJob", training(VolumeKmsKeyId=key), key_exists=lambda key: True)


def test_what_is_no_key_reference_at_all_is_refused_in_every_key_member():
    request = processing(VolumeKmsKeyId="my-key")
    request["ProcessingOutputConfig"]["KmsKeyId"] = "key:abc"
    with pytest.raises(ValidationException) as info:
        check("CreateProcessingJob", request, key_exists=lambda key: True)
    assert info.value.message.startswith("2 validation errors detected: ")
    assert "processingResources.clusterConfig.volumeKmsKeyId: Value 'my-key' is not a key ID or key ARN" in \
        info.value.message
    assert "processingOutputConfig.kmsKeyId: Value 'key:abc' is not a KMS key reference: this member accepts a key " \
           "ID, a key ARN" in info.value.message


def test_a_key_that_does_not_exist_is_refused_naming_the_member_and_the_key():
    asked: list[str] = []

    def only_the_test_key(key: str) -> bool:
        asked.append(key)
        return key == TEST_KEY_ARN

    missing = TEST_KEY_ARN.replace("1234abcd", "00000000")
    request = training(VolumeKmsKeyId=missing)
    request["OutputDataConfig"]["KmsKeyId"] = missing
    with pytest.raises(ValidationException) as info:
        check("CreateTrainingJob", request, key_exists=only_the_test_key)
    assert info.value.code == "ValidationException" and info.value.status == 400
    assert f"resourceConfig.volumeKmsKeyId: KMS key '{missing}' does not exist" in info.value.message
    assert f"outputDataConfig.kmsKeyId: KMS key '{missing}' does not exist" in info.value.message
    assert asked == [missing]  # one lookup per key
    labeling = endpoint_config("ml.m5.large", KmsKeyId="alias/nobody",
                               DataCaptureConfig={"InitialSamplingPercentage": 100, "DestinationS3Uri": "s3://b/c",
                                                  "CaptureOptions": [{"CaptureMode": "Input"}],
                                                  "KmsKeyId": TEST_KEY_ARN})
    with pytest.raises(ValidationException, match=r"^1 validation error detected: kmsKeyId: KMS key 'alias/nobody' "
                                                  "does not exist"):
        check("CreateEndpointConfig", labeling, key_exists=only_the_test_key)


def test_the_stacks_key_lookup_asks_kms_and_remembers_the_keys_it_found(in_process_aws):
    kms = boto3.client("kms")
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/surgical-mlops", TargetKeyId=key["KeyId"])
    calls: list[str] = []

    class Counting:
        def describe_key(self, KeyId: str) -> dict[str, Any]:
            calls.append(KeyId)
            return kms.describe_key(KeyId=KeyId)

    keys = KmsKeys(Counting())
    assert keys(key["Arn"]) and keys(key["KeyId"]) and keys("alias/surgical-mlops") and keys(ALIAS_ARN)
    assert not keys("alias/nobody") and not keys(TEST_KEY_ARN.replace("1234abcd", "00000000"))
    assert keys(key["Arn"]) and not keys("alias/nobody")
    assert calls.count(key["Arn"]) == 1 and calls.count("alias/nobody") == 2  # found: cached; missing: asked again
    assert KmsKeys()(key["Arn"])  # the default client: the process's standard AWS variables


# -- time limits, exclusive members, paths ----------------------------------------------------------------------------
def test_a_training_job_runs_at_most_28_days():
    request = training()
    request["StoppingCondition"]["MaxRuntimeInSeconds"] = MAX_TRAINING_RUNTIME_S
    assert problems("CreateTrainingJob", request) is None
    request["StoppingCondition"]["MaxRuntimeInSeconds"] = 29 * 24 * 3600
    assert problems("CreateTrainingJob", request) == (
        "1 validation error detected: stoppingCondition.maxRuntimeInSeconds: Value 2505600 exceeds the longest a "
        "training job may run: the maximum value is 28 days (2419200 seconds).")
    definition = tuning_definition()
    definition["StoppingCondition"]["MaxRuntimeInSeconds"] = 29 * 24 * 3600
    message = problems("CreateHyperParameterTuningJob", tuning(definition))
    assert message is not None and "trainingJobDefinition.stoppingCondition.maxRuntimeInSeconds: Value 2505600" in \
        message


def test_a_spot_job_waits_at_least_as_long_as_it_runs():
    request = training()
    request["EnableManagedSpotTraining"] = True
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 1800}
    message = problems("CreateTrainingJob", request)
    assert message is not None and "stoppingCondition.maxWaitTimeInSeconds: Value 1800 is less than " \
                                   "MaxRuntimeInSeconds (3600)" in message
    request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 3600
    assert problems("CreateTrainingJob", request) is None


def test_algorithm_name_and_training_image_are_mutually_exclusive():
    request = training()
    request["AlgorithmSpecification"]["AlgorithmName"] = "surgical-detector"
    message = problems("CreateTrainingJob", request)
    assert message is not None and "algorithmSpecification: AlgorithmName and TrainingImage are mutually " \
                                   "exclusive" in message
    del request["AlgorithmSpecification"]["TrainingImage"]
    assert problems("CreateTrainingJob", request) is None
    del request["AlgorithmSpecification"]["AlgorithmName"]
    message = problems("CreateTrainingJob", request)
    assert message is not None and "give either AlgorithmName" in message
    definition = tuning_definition()
    definition["AlgorithmSpecification"]["AlgorithmName"] = "surgical-detector"
    message = problems("CreateHyperParameterTuningJob", tuning(definition))
    assert message is not None and "trainingJobDefinition.algorithmSpecification: AlgorithmName and " in message


def test_processing_paths_live_under_opt_ml_processing():
    request = processing()
    request["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/data/video"
    request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/output"
    message = problems("CreateProcessingJob", request)
    assert message is not None and message.startswith("2 validation errors detected: ")
    assert "processingInputs.1.member.s3Input.localPath: Value '/data/video' must begin with /opt/ml/processing/" \
        in message
    assert "processingOutputConfig.outputs.1.member.s3Output.localPath: Value '/opt/ml/output' must begin with" in \
        message


@pytest.mark.parametrize(("kind", "limit"), [("DataQuality", 3600), ("ModelQuality", 1800)])
def test_an_hourly_monitoring_job_runs_no_longer_than_the_hour(kind, limit):
    assert problems("CreateMonitoringSchedule", schedule(limit, kind=kind)) is None
    message = problems("CreateMonitoringSchedule", schedule(limit + 1, kind=kind))
    assert message is not None and ("monitoringScheduleConfig.monitoringJobDefinition.stoppingCondition."
                                    f"maxRuntimeInSeconds: Value {limit + 1} exceeds the frequency of the schedule: "
                                    f"the jobs of an hourly {kind} schedule may run at most {limit} seconds") in message
    assert problems("CreateMonitoringSchedule", schedule(5400, expression="cron(0 12 ? * * *)", kind=kind)) is None


def test_every_broken_rule_is_listed_in_one_exception():
    request = training("ml.g4dn.xlarge", VolumeKmsKeyId="alias/surgical-mlops")
    request["StoppingCondition"]["MaxRuntimeInSeconds"] = 30 * 24 * 3600
    message = problems("CreateTrainingJob", request)
    assert message is not None and message.startswith("3 validation errors detected: ")


def test_the_rules_do_not_change_the_request():
    request = training("ml.g4dn.xlarge", VolumeKmsKeyId=TEST_KEY_ARN)
    before = copy.deepcopy(request)
    problems("CreateTrainingJob", request)
    assert request == before


# -- instance-type enums (botocore's shapes, through validation.validate) --------------------------------------------
def test_instance_types_are_checked_per_kind_of_job():
    refused = "Member must satisfy enum value set"
    assert refused in problems("CreateTrainingJob", training("ml.t2.medium"))
    assert refused in problems("CreateProcessingJob", processing("ml.t2.medium"))
    assert problems("CreateEndpointConfig", endpoint_config("ml.t2.medium")) is None
    assert problems("CreateTransformJob", transform("ml.m5.large")) is None
    for operation, request in (("CreateTrainingJob", training("ml.nope")),
                               ("CreateProcessingJob", processing("ml.nope")),
                               ("CreateEndpointConfig", endpoint_config("ml.nope")),
                               ("CreateTransformJob", transform("ml.nope"))):
        message = problems(operation, request)
        assert message is not None and "Value 'ml.nope' at '" in message and refused in message, operation


def test_the_test_key_lookup_knows_only_the_test_accounts_key_arns():
    assert key_exists(TEST_KEY_ARN) and not key_exists("alias/surgical-mlops")


# -- the shape walk (validation.validate): AWS's ValidationException messages, exactly ------------------------------
def shape_errors(operation: str, request: Any) -> str | None:
    """The message of botocore's shapes alone (no documented rule)."""
    try:
        validate(MODEL.operation_model(operation), request)
    except ValidationException as exc:
        return exc.message
    return None


def _one(message: str) -> str:
    return f"1 validation error detected: {message}"


def test_a_missing_request_is_one_without_its_required_members():
    assert shape_errors("CreateTrainingJob", None) == (
        "3 validation errors detected: Value null at 'trainingJobName' failed to satisfy constraint: Member must not "
        "be null; Value null at 'roleArn' failed to satisfy constraint: Member must not be null; Value null at "
        "'outputDataConfig' failed to satisfy constraint: Member must not be null")
    assert shape_errors("CreateTrainingJob", "train") == _one(
        "Value 'train' at 'request' failed to satisfy constraint: Member must be an object")
    assert shape_errors("CreateTrainingJob", training()) is None


PATTERN_NAME = "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


@pytest.mark.parametrize(("change", "message"), [
    ({"ResourceConfig": "big"},
     _one("Value 'big' at 'resourceConfig' failed to satisfy constraint: Member must be an object")),
    ({"AlgorithmSpecification": {"TrainingImage": IMAGE}}, _one(
        "Value null at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must not be "
        "null")),
    ({"AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "Stream"}}, _one(
        "Value 'Stream' at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must "
        "satisfy enum value set: [Pipe, File, FastFile]")),
    ({"TrainingJobName": 5}, _one("Value '5' at 'trainingJobName' failed to satisfy constraint: Member must be a "
                                  "string")),
    ({"TrainingJobName": "-train"}, _one(f"Value '-train' at 'trainingJobName' failed to satisfy constraint: "
                                         f"{PATTERN_NAME}")),
    ({"TrainingJobName": ""}, "2 validation errors detected: Value '' at 'trainingJobName' failed to satisfy "
                              "constraint: Member must have length greater than or equal to 1; Value '' at "
                              f"'trainingJobName' failed to satisfy constraint: {PATTERN_NAME}"),
    ({"TrainingJobName": "t" * 64}, f"2 validation errors detected: Value '{'t' * 64}' at 'trainingJobName' failed to "
                                    "satisfy constraint: Member must have length less than or equal to 63; Value "
                                    f"'{'t' * 64}' at 'trainingJobName' failed to satisfy constraint: {PATTERN_NAME}"),
    ({"Tags": "x"}, _one("Value 'x' at 'tags' failed to satisfy constraint: Member must be a list")),
    ({"Tags": [{"Key": "a", "Value": "1"}, {"Key": "", "Value": "2"}]}, _one(
        "Value '' at 'tags.2.member.key' failed to satisfy constraint: Member must have length greater than or equal "
        "to 1")),
    ({"Tags": [{"Key": "a", "Value": "1"}, {"Value": "2"}]},
     _one("Value null at 'tags.2.member.key' failed to satisfy constraint: Member must not be null")),
    ({"Environment": ["A=1"]},
     _one("Value '['A=1']' at 'environment' failed to satisfy constraint: Member must be a map")),
    ({"Environment": {"1A": "x", "B": 7}}, "2 validation errors detected: Value '1A' at 'environment.1A.key' failed to "
                                           "satisfy constraint: Member must satisfy regular expression pattern: "
                                           "^[a-zA-Z_][a-zA-Z0-9_]*; Value '7' at 'environment.B.value' failed to "
                                           "satisfy constraint: Member must be a string"),
    ({"ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": "1", "VolumeSizeInGB": True}},
     "2 validation errors detected: Value '1' at 'resourceConfig.instanceCount' failed to satisfy constraint: Member "
     "must be an integer; Value 'True' at 'resourceConfig.volumeSizeInGB' failed to satisfy constraint: Member must be "
     "an integer"),
    ({"StoppingCondition": {"MaxRuntimeInSeconds": 0}}, _one(
        "Value '0' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value "
        "greater than or equal to 1")),
    ({"ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50,
                         "KeepAlivePeriodInSeconds": 21601}}, _one(
        "Value '21601' at 'resourceConfig.keepAlivePeriodInSeconds' failed to satisfy constraint: Member must have "
        "value less than or equal to 21600")),
    ({"ProfilerConfig": {"ProfilingIntervalInMilliseconds": "500"}}, _one(  # a long
        "Value '500' at 'profilerConfig.profilingIntervalInMilliseconds' failed to satisfy constraint: Member must be "
        "an integer")),
    ({"EnableNetworkIsolation": "yes"},
     _one("Value 'yes' at 'enableNetworkIsolation' failed to satisfy constraint: Member must be a boolean")),
])
def test_each_kind_of_member_is_checked_with_awss_message(change, message):
    assert shape_errors("CreateTrainingJob", {**training(), **change}) == message


def test_valid_members_of_every_kind_pass():
    request = {**training(), "EnableNetworkIsolation": True, "Environment": {"A_1": "x" * 512},
               "ProfilerConfig": {"ProfilingIntervalInMilliseconds": 500}, "Tags": [{"Key": "k", "Value": "v"}],
               "HyperParameters": {}}
    assert shape_errors("CreateTrainingJob", request) is None
    assert shape_errors("ListTrainingJobs", {"CreationTimeAfter": datetime.datetime(2026, 1, 1),
                                             "CreationTimeBefore": "2026-01-02T00:00:00Z",
                                             "LastModifiedTimeAfter": 1767225600, "LastModifiedTimeBefore": 1.5e9,
                                             "MaxResults": 10}) is None
    config = endpoint_config("ml.m5.large")
    config["ProductionVariants"][0]["InitialVariantWeight"] = 1
    assert shape_errors("CreateEndpointConfig", config) is None
    config["ProductionVariants"][0]["InitialVariantWeight"] = 0.5
    assert shape_errors("CreateEndpointConfig", config) is None


def test_numbers_timestamps_and_maps_with_awss_messages():
    config = endpoint_config("ml.m5.large", "ml.m5.large", "ml.m5.large")
    for variant, weight in zip(config["ProductionVariants"], ("heavy", True, -1.5), strict=True):
        variant["InitialVariantWeight"] = weight
    assert shape_errors("CreateEndpointConfig", config) == (
        "3 validation errors detected: Value 'heavy' at 'productionVariants.1.member.initialVariantWeight' failed to "
        "satisfy constraint: Member must be a number; Value 'True' at "
        "'productionVariants.2.member.initialVariantWeight' failed to satisfy constraint: Member must be a number; "
        "Value '-1.5' at "
        "'productionVariants.3.member.initialVariantWeight' failed to satisfy constraint: Member must have value "
        "greater than or equal to 0")
    monitoring = schedule(1800)
    monitoring["MonitoringScheduleConfig"]["MonitoringJobDefinition"]["MonitoringInputs"][0]["EndpointInput"][
        "ProbabilityThresholdAttribute"] = "half"  # a double
    assert shape_errors("CreateMonitoringSchedule", monitoring) == _one(
        "Value 'half' at 'monitoringScheduleConfig.monitoringJobDefinition.monitoringInputs.1.member.endpointInput."
        "probabilityThresholdAttribute' failed to satisfy constraint: Member must be a number")
    assert shape_errors("ListTrainingJobs", {"CreationTimeAfter": [1]}) == _one(
        "Value '[1]' at 'creationTimeAfter' failed to satisfy constraint: Member must be a timestamp")
    variables = {f"V{i}": "x" for i in range(101)}
    shown = str(variables)[:117] + "..."
    assert shape_errors("CreateTrainingJob", {**training(), "Environment": variables}) == _one(
        f"Value '{shown}' at 'environment' failed to satisfy constraint: Member must have length less than or equal "
        "to 100")
    assert shape_errors("CreateTrainingJob", {**training(), "Environment": {"A": "x" * 513}}) == _one(
        f"Value '{'x' * 117}...' at 'environment.A.value' failed to satisfy constraint: Member must have length less "
        "than or equal to 512")


def test_list_lengths_with_awss_messages():
    tags = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    assert shape_errors("CreateTrainingJob", {**training(), "Tags": tags}) == _one(
        f"Value '{str(tags)[:117]}...' at 'tags' failed to satisfy constraint: Member must have length less than or "
        "equal to 50")
    assert shape_errors("CreateTrainingJob", {**training(), "Tags": tags[:50]}) is None
    request = training()
    request["AlgorithmSpecification"]["ContainerEntrypoint"] = []
    assert shape_errors("CreateTrainingJob", request) == _one(
        "Value '[]' at 'algorithmSpecification.containerEntrypoint' failed to satisfy constraint: Member must have "
        "length greater than or equal to 1")


@pytest.mark.parametrize(("length", "shown"), [(120, "#" + "n" * 119), (121, "#" + "n" * 116 + "...")])
def test_values_are_shown_up_to_120_characters(length, shown):
    key = "#" + "n" * (length - 1)
    assert shape_errors("CreateTrainingJob", {**training(), "Tags": [{"Key": key, "Value": "v"}]}) == _one(
        f"Value '{shown}' at 'tags.1.member.key' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)")


def test_a_pattern_is_shown_with_one_leading_caret():
    """As AWS writes it, whether or not the model's pattern has one (botocore's other services: models of any kind)."""
    model = ServiceModel({
        "metadata": {"protocol": "json", "apiVersion": "2026-01-01", "endpointPrefix": "t", "serviceId": "T"},
        "operations": {"Put": {"name": "Put", "http": {"method": "POST", "requestUri": "/"}, "input": {"shape": "In"}}},
        "shapes": {"In": {"type": "structure", "members": {
            "Plain": {"shape": "Plain"}, "Anchored": {"shape": "Anchored"}, "Spaced": {"shape": "Spaced"},
            "Caret": {"shape": "Caret"}}},
            "Plain": {"type": "string", "pattern": "X[a-z]+"}, "Anchored": {"type": "string", "pattern": "^[a-z]+$"},
            "Spaced": {"type": "string", "pattern": " [a-z]+"}, "Caret": {"type": "string", "pattern": "[a-z]+^?"}}})
    with pytest.raises(ValidationException) as info:
        validate(model.operation_model("Put"), {"Plain": "1", "Anchored": "1", "Spaced": "1", "Caret": "1"})
    assert info.value.message == (
        "4 validation errors detected: Value '1' at 'plain' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: ^X[a-z]+; Value '1' at 'anchored' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: ^[a-z]+$; Value '1' at 'spaced' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: ^ [a-z]+; Value '1' at 'caret' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: ^[a-z]+^?")


# -- the documented rules' messages, exactly --------------------------------------------------------------------------
def test_the_rules_messages_in_full():
    request = training()
    request["AlgorithmSpecification"]["AlgorithmName"] = "surgical-detector"
    request["EnableManagedSpotTraining"] = True
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 1800}
    assert problems("CreateTrainingJob", request) == (
        "2 validation errors detected: algorithmSpecification: AlgorithmName and TrainingImage are mutually exclusive: "
        "give one of them, not both.; stoppingCondition.maxWaitTimeInSeconds: Value 1800 is less than "
        "MaxRuntimeInSeconds (3600): the time a managed Spot training job may wait and run must be equal to or greater "
        "than MaxRuntimeInSeconds.")
    del request["AlgorithmSpecification"]["AlgorithmName"], request["AlgorithmSpecification"]["TrainingImage"]
    del request["StoppingCondition"]["MaxWaitTimeInSeconds"]
    assert problems("CreateTrainingJob", request) == _one(
        "algorithmSpecification: give either AlgorithmName (an algorithm resource) or TrainingImage (the image of the "
        "algorithm's container).")
    job = processing()
    job["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/data/video"
    assert problems("CreateProcessingJob", job) == _one(
        "processingInputs.1.member.s3Input.localPath: Value '/data/video' must begin with /opt/ml/processing/: a "
        "processing container's inputs and outputs are mounted under it.")
    missing = TEST_KEY_ARN.replace("123456789012", "210987654321")  # another account's key: not found here
    request = training()
    request["OutputDataConfig"]["KmsKeyId"] = missing
    assert problems("CreateTrainingJob", request) == _one(
        f"outputDataConfig.kmsKeyId: KMS key '{missing}' does not exist: kms:DescribeKey finds no such key (or alias) "
        "in this account and Region.")


def test_a_rule_on_the_request_itself_names_the_request():
    from local_aws.sagemaker import rules

    ctx = rules._Context("CreateTrainingJob")
    rules._algorithm(ctx, {}, "")
    rules._algorithm(ctx, {"TrainingImage": IMAGE, "AlgorithmName": "a"}, "")
    assert ctx.errors == [
        "request: give either AlgorithmName (an algorithm resource) or TrainingImage (the image of the algorithm's "
        "container).", "request: AlgorithmName and TrainingImage are mutually exclusive: give one of them, not both."]


def test_an_hourly_schedule_without_a_type_is_data_quality_and_an_unknown_type_gets_the_hour():
    request = schedule(3601)
    del request["MonitoringScheduleConfig"]["MonitoringType"]
    assert problems("CreateMonitoringSchedule", request) == _one(
        "monitoringScheduleConfig.monitoringJobDefinition.stoppingCondition.maxRuntimeInSeconds: Value 3601 exceeds "
        "the frequency of the schedule: the jobs of an hourly DataQuality schedule may run at most 3600 seconds.")
    with pytest.raises(ValidationException, match=r"hourly NewKind schedule may run at most 3600 seconds\.$"):
        check("CreateMonitoringSchedule", schedule(3601, kind="NewKind"), key_exists=key_exists)
    assert check("CreateMonitoringSchedule", schedule(3600, kind="NewKind"), key_exists=key_exists) is None


def test_the_rules_leave_what_is_not_a_structure_or_list_to_the_shapes():
    request = training()
    request["ResourceConfig"] = [{"VolumeKmsKeyId": "not-a-key", "InstanceType": "ml.g4dn.xlarge"}]
    request["ProcessingInputs"] = {"S3Input": {"LocalPath": "/data"}}  # not a member of this operation
    assert check("CreateTrainingJob", request, key_exists=key_exists) is None
    assert check("CreateTrainingJob", ["not", "a", "request"], key_exists=key_exists) is None


@pytest.mark.parametrize(("code", "exists"), [("NotFoundException", False), ("InvalidArnException", False),
                                              ("ValidationException", False), ("AccessDeniedException", None)])
def test_the_key_lookup_reads_kms_errors(code, exists):
    class Refusing:
        def describe_key(self, KeyId: str) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": code, "Message": "x"}}, "DescribeKey")

    keys = KmsKeys(Refusing())
    if exists is None:  # anything else is not an answer about the key
        with pytest.raises(ClientError):
            keys("alias/x")
    else:
        assert keys("alias/x") is exists
