"""The mAP promotion operator on real model package versions: first (floor), better (approved), weaker (rejected)."""

import json
import os

import pendulum
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerRegisterModelVersionOperator
from airflow.sdk import DAG, task
from surgical_mlops.promotion import MapPromotionOperator

RUN = os.environ.get("TOY_RUN", "local")
IMAGE = os.environ.get("TOY_IMAGE", "123456789012.dkr.ecr.us-east-1.amazonaws.com/test/toy:latest")
BUCKET = "surgical-models"
GROUP = f"promotion-{RUN}"
SKILLS = {"first": 0.85, "better": 0.995, "weaker": 0.6}


def evaluation_uri(name: str) -> str:
    return f"s3://{BUCKET}/promotion-{RUN}/{name}/evaluation.json"


with DAG("promotion_rule", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:

    @task
    def write_evaluations() -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from tests.evaluations import CLASSES, synthetic_eval

        for seed, (name, skill) in enumerate(SKILLS.items()):
            body = {"classes": list(CLASSES), "dataset_version": "toy", "per_image": synthetic_eval(seed, skill)}
            S3Hook().load_string(json.dumps(body), evaluation_uri(name).split(BUCKET + "/", 1)[1], BUCKET,
                                 replace=True)

    previous = write_evaluations()
    for name in SKILLS:
        register = SageMakerRegisterModelVersionOperator(
            task_id=f"register_{name}", image_uri=IMAGE, model_url=f"s3://{BUCKET}/promotion-{RUN}/model.tar.gz",
            package_group_name=GROUP, extras={"ModelMetrics": {"ModelQuality": {"Statistics": {
                "ContentType": "application/json", "S3Uri": evaluation_uri(name)}}}})
        promote = MapPromotionOperator(
            task_id=f"promote_{name}", evaluation_uri=evaluation_uri(name), resamples=300,
            model_package_arn=f"{{{{ ti.xcom_pull(task_ids='register_{name}') }}}}")
        previous >> register >> promote
        previous = promote
