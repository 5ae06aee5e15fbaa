"""A labeling job that cannot start (its label category file is missing) must fail its task with the reason."""

import os

import pendulum
from airflow.sdk import DAG
from surgical_mlops.ground_truth import SageMakerLabelingJobSensor, SageMakerLabelingOperator

from include.config import build_config
from include.labeling.ground_truth import labeling_job_request

RUN = os.environ.get("TOY_RUN", "local")
CONFIG = build_config("local")
REQUEST = labeling_job_request(
    name=f"broken-{RUN}", region=CONFIG.region, manifest_uri=f"s3://{CONFIG.annotations_bucket}/missing/in.manifest",
    label_config_uri=f"s3://{CONFIG.annotations_bucket}/missing/categories.json",
    output_uri=f"s3://{CONFIG.annotations_bucket}/broken", role_arn=CONFIG.sagemaker_role_arn,
    workteam_arn=CONFIG.workteam_arn, label_attribute="boxes", workers=1, kms_key=None)

with DAG("labeling_failure", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    label = SageMakerLabelingOperator(task_id="label", config=REQUEST, check_interval=1)
    label >> SageMakerLabelingJobSensor(task_id="sensor", job_name=f"broken-{RUN}", poke_interval=1,
                                        trigger_rule="all_done")
