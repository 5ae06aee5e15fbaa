"""The Amazon provider's SageMaker operators and sensors against the local SageMaker (run by dag.test() in tests)."""

import os

import pendulum
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointConfigOperator,
    SageMakerEndpointOperator,
    SageMakerModelOperator,
    SageMakerProcessingOperator,
    SageMakerRegisterModelVersionOperator,
    SageMakerTrainingOperator,
    SageMakerTuningOperator,
)
from airflow.providers.amazon.aws.sensors.sagemaker import (
    SageMakerEndpointSensor,
    SageMakerProcessingSensor,
    SageMakerTrainingSensor,
    SageMakerTuningSensor,
)
from airflow.sdk import DAG

IMAGE = os.environ.get("TOY_IMAGE", "123456789012.dkr.ecr.us-east-1.amazonaws.com/test/toy:latest")
RUN = os.environ.get("TOY_RUN", "local")
ROLE = "arn:aws:iam::123456789012:role/surgical-sagemaker-execution"  # infra/platform.yaml (make up deploys it)
BUCKET = os.environ.get("TOY_BUCKET", "surgical-models")
CLUSTER = {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}}
RESOURCES = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5}
TRAIN_INPUT = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
    "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/toy-{RUN}/in", "S3DataDistributionType": "FullyReplicated"}}}]


def processing(name: str) -> dict:
    return {
        "ProcessingJobName": name, "RoleArn": ROLE, "ProcessingResources": CLUSTER,
        "AppSpecification": {"ImageUri": IMAGE, "ContainerArguments": [
            "--input", "/opt/ml/processing/input", "--output", "/opt/ml/processing/output"]},
        "ProcessingInputs": [{"InputName": "in", "S3Input": {
            "S3Uri": f"s3://{BUCKET}/toy-{RUN}/in", "LocalPath": "/opt/ml/processing/input",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": f"s3://{BUCKET}/toy-{RUN}/{name}", "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}]},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }


def training(name: str, epochs: str = "3") -> dict:
    return {
        "TrainingJobName": name, "RoleArn": ROLE, "HyperParameters": {"epochs": epochs},
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": [
            {"Name": "train:loss", "Regex": "loss=([0-9.]+)"},
            {"Name": "validation:score", "Regex": "score=(-?[0-9.]+)"}]},
        "InputDataConfig": TRAIN_INPUT, "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/toy-{RUN}/models"},
        "ResourceConfig": RESOURCES, "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        "CheckpointConfig": {"S3Uri": f"s3://{BUCKET}/toy-{RUN}/checkpoints/{name}"},
    }


def model(name: str, version: str) -> dict:
    return {"ModelName": name, "ExecutionRoleArn": ROLE, "PrimaryContainer": {
        "Image": IMAGE, "Environment": {"TOY_VERSION": version},
        "ModelDataUrl": "{{ ti.xcom_pull(task_ids='train')['Training']['ModelArtifacts']['S3ModelArtifacts'] }}"}}


def endpoint_config(name: str, model_name: str) -> dict:
    return {"EndpointConfigName": name, "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model_name,
                                                                "InitialInstanceCount": 1,
                                                                "InstanceType": "ml.m5.large"}]}


with DAG("provider_green", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    process = SageMakerProcessingOperator(task_id="process", config=processing(f"proc-{RUN}"), check_interval=1)
    process_async = SageMakerProcessingOperator(task_id="process_async", config=processing(f"proc-async-{RUN}"),
                                                wait_for_completion=False)
    process_sensor = SageMakerProcessingSensor(task_id="process_sensor", job_name=f"proc-async-{RUN}",
                                               poke_interval=1)
    train = SageMakerTrainingOperator(task_id="train", config=training(f"train-{RUN}"), print_log=True,
                                      check_interval=1)
    train_async = SageMakerTrainingOperator(task_id="train_async", config=training(f"train-async-{RUN}", "2"),
                                            wait_for_completion=False)
    train_sensor = SageMakerTrainingSensor(task_id="train_sensor", job_name=f"train-async-{RUN}",
                                           print_log=False, poke_interval=1)
    tune = SageMakerTuningOperator(task_id="tune", check_interval=1, config={
        "HyperParameterTuningJobName": f"tune-{RUN}",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Grid",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "scale", "Values": ["1.0", "1.4"]}]}},
        "TrainingJobDefinition": {k: v for k, v in training("unused").items()
                                  if k not in ("TrainingJobName", "HyperParameters", "CheckpointConfig")}
        | {"StaticHyperParameters": {"epochs": "1"}},
    })
    tune_sensor = SageMakerTuningSensor(task_id="tune_sensor", job_name=f"tune-{RUN}", poke_interval=1)
    model_v1 = SageMakerModelOperator(task_id="model_v1", config=model(f"model-v1-{RUN}", "v1"))
    config_v1 = SageMakerEndpointConfigOperator(task_id="config_v1", config=endpoint_config(f"cfg-v1-{RUN}",
                                                                                          f"model-v1-{RUN}"))
    create = SageMakerEndpointOperator(task_id="endpoint_create", operation="create", check_interval=1,
                                       config={"EndpointName": f"ep-{RUN}", "EndpointConfigName": f"cfg-v1-{RUN}"})
    endpoint_sensor = SageMakerEndpointSensor(task_id="endpoint_sensor", endpoint_name=f"ep-{RUN}", poke_interval=1)
    model_v2 = SageMakerModelOperator(task_id="model_v2", config=model(f"model-v2-{RUN}", "v2"))
    config_v2 = SageMakerEndpointConfigOperator(task_id="config_v2", config=endpoint_config(f"cfg-v2-{RUN}",
                                                                                          f"model-v2-{RUN}"))
    update = SageMakerEndpointOperator(task_id="endpoint_update", operation="update", check_interval=1,
                                       config={"EndpointName": f"ep-{RUN}", "EndpointConfigName": f"cfg-v2-{RUN}"})
    register = SageMakerRegisterModelVersionOperator(
        task_id="register", image_uri=IMAGE, package_group_name=f"toy-group-{RUN}", package_desc="toy model",
        model_url="{{ ti.xcom_pull(task_ids='train')['Training']['ModelArtifacts']['S3ModelArtifacts'] }}",
        extras={"CustomerMetadataProperties": {"dataset_version": "toy"},
                "ModelMetrics": {"ModelQuality": {"Statistics": {
                    "ContentType": "application/json", "S3Uri": f"s3://{BUCKET}/toy-{RUN}/evaluation.json"}}}})

    process >> process_async >> process_sensor >> train >> train_async >> train_sensor >> tune >> tune_sensor
    tune_sensor >> model_v1 >> config_v1 >> create >> endpoint_sensor >> model_v2 >> config_v2 >> update >> register
