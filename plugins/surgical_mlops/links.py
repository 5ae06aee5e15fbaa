"""The "Model report" extra link: from a training or promotion task in the Airflow UI to its model's report.

``publish_evaluation`` (``include/training.py``) copies each training job's report to
``s3://<models bucket>/reports/<training job>/index.html``; the ``evaluate`` task returns it as the XCom
``report_uri``. As in Airflow 3 every operator link, :meth:`ModelReportLink.get_link` runs on the worker when the task
ends (the Task SDK stores the URL as the XCom ``_link_ModelReportLink``; the UI reads that, and never imports this
code or calls AWS). The report is found from the run's ``evaluate`` XCom (the promotion task runs after it), else
from the task's own result (the training task, before ``evaluate``: the training job's name).

Where it points:

- locally (``MODEL_REPORTS_BASE_URL`` set: the local Airflow services set it to the local API gateway, which serves
  ``GET /reports/<job>/<file>`` from the local S3) to the report itself, so it opens in the browser;
- on AWS to the report object's page in the S3 console. Not a presigned URL: the link is computed once, when the
  task ends, and stored, while a presigned URL dies with the worker's role session (hours); the console page never
  expires and keeps access to the models bucket behind the viewer's own IAM permissions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

EVALUATE_TASK_ID = "evaluate"


def report_uri_for_job(training_job: str, models_bucket: str) -> str:
    """Where ``publish_evaluation`` puts a training job's report."""
    from include.training import report_key

    return f"s3://{models_bucket}/{report_key(training_job)}"


def report_url(report_uri: str, environ: Mapping[str, str] | None = None) -> str:
    """The browser URL of an ``s3://`` report: the local gateway's route, else the S3 console's object page."""
    environ = os.environ if environ is None else environ
    from include.s3 import split_uri

    bucket, key = split_uri(report_uri)
    local = environ.get("MODEL_REPORTS_BASE_URL")
    if local:
        return f"{local.rstrip('/')}/{quote(key)}"
    region = environ.get("AWS_DEFAULT_REGION") or environ.get("AWS_REGION") or "us-east-1"
    return (f"https://s3.console.aws.amazon.com/s3/object/{quote(bucket)}?region={quote(region)}"
            f"&bucketType=general&prefix={quote(key, safe='')}")


def _training_job(result: Any) -> str | None:
    """The job name in a SageMakerTrainingOperator result (``{"Training": describe_training_job}``)."""
    if isinstance(result, Mapping):
        return (result.get("Training") or {}).get("TrainingJobName")
    return None


class ModelReportLink(BaseOperatorLink):
    """"Model report": the report of the model this run trained (attach with :func:`with_model_report`)."""

    name = "Model report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom  # at task end only: the DAG file imports this module

        uri = XCom.get_one(key="report_uri", dag_id=ti_key.dag_id, run_id=ti_key.run_id, task_id=EVALUATE_TASK_ID)
        if not uri:
            job = _training_job(XCom.get_value(ti_key=ti_key, key="return_value"))
            if not job:
                return ""  # nothing trained (a failed or skipped job): Airflow shows the link disabled
            from include.config import build_config

            uri = report_uri_for_job(job, build_config().models_bucket)
        return report_url(uri)


def with_model_report(operator: Any) -> Any:
    """``operator`` with the "Model report" link added to its class's links (a DAG-side attachment)."""
    operator.operator_extra_links = (*operator.operator_extra_links, ModelReportLink())
    return operator
