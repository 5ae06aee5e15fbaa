"""Failing SageMaker jobs must fail their Airflow tasks with the job's reason (run by dag.test() in tests)."""

import os

import pendulum
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerProcessingOperator, SageMakerTrainingOperator
from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerTrainingSensor
from airflow.sdk import DAG

from tests.integration.dags.provider_green import processing, training

RUN = os.environ.get("TOY_RUN", "local")


def _with(config: dict, **changes: dict) -> dict:
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value}
    return config


with DAG("provider_failures", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    SageMakerProcessingOperator(
        task_id="process_fails", check_interval=1,
        config=_with(processing(f"proc-fail-{RUN}"), Environment={"TOY_MODE": "fail"}))
    # A job stopped by MaxRuntimeInSeconds ends "Stopped"; the training sensor counts that as a failure.
    start = SageMakerTrainingOperator(
        task_id="train_times_out", wait_for_completion=False,
        config=_with(training(f"train-timeout-{RUN}"), HyperParameters={"mode": "hang"},
                     StoppingCondition={"MaxRuntimeInSeconds": 2}))
    start >> SageMakerTrainingSensor(task_id="train_sensor", job_name=f"train-timeout-{RUN}", poke_interval=1)
