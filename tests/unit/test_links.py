"""The "Model report" extra link: which report it finds, where it points, and that the training DAG carries it."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from surgical_mlops.links import ModelReportLink, report_uri_for_job, report_url, with_model_report

from include.config import build_config
from local_aws.settings import REPO_ROOT

TI = SimpleNamespace(dag_id="train_and_register", task_id="promote", run_id="manual__1", map_index=-1)


@pytest.fixture
def xcoms(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], object]:
    """XComs of the run by (task_id, key), served to the link as the Task SDK's XCom would at task end."""
    from airflow.sdk.execution_time import xcom

    store: dict[tuple[str, str], object] = {}

    def get_one(*, key, dag_id, task_id, run_id, map_index=None, include_prior_dates=False):
        assert (dag_id, run_id) == (TI.dag_id, TI.run_id)
        return store.get((task_id, key))

    monkeypatch.setattr(xcom.XCom, "get_one", staticmethod(get_one))
    monkeypatch.setattr(xcom.XCom, "get_value", staticmethod(
        lambda *, ti_key, key: get_one(key=key, dag_id=ti_key.dag_id, task_id=ti_key.task_id, run_id=ti_key.run_id)))
    return store


def test_promotion_task_links_the_report_that_evaluate_published(xcoms, monkeypatch):
    monkeypatch.setenv("MODEL_REPORTS_BASE_URL", "http://127.0.0.1:4568/")
    xcoms[("evaluate", "report_uri")] = "s3://surgical-models/reports/det-abc-123/index.html"
    assert ModelReportLink().get_link(None, ti_key=TI) == "http://127.0.0.1:4568/reports/det-abc-123/index.html"


def test_training_task_links_its_own_jobs_report_before_evaluate_ran(xcoms, monkeypatch):
    monkeypatch.delenv("MODEL_REPORTS_BASE_URL", raising=False)
    ti = SimpleNamespace(**{**vars(TI), "task_id": "fit.train"})
    xcoms[("fit.train", "return_value")] = {"Training": {"TrainingJobName": "det-abc-123", "TrainingJobStatus": "x"}}
    url = ModelReportLink().get_link(None, ti_key=ti)
    bucket = build_config().models_bucket
    assert url.startswith(f"https://s3.console.aws.amazon.com/s3/object/{bucket}?")
    assert parse_qs(urlsplit(url).query)["prefix"] == ["reports/det-abc-123/index.html"]


def test_no_trained_job_gives_an_empty_link(xcoms):
    assert ModelReportLink().get_link(None, ti_key=TI) == ""


def test_aws_link_is_the_s3_console_page_of_the_report_object():
    url = report_url("s3://surgical-models-prod/reports/job 1/index.html", {"AWS_DEFAULT_REGION": "eu-west-1"})
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("s3.console.aws.amazon.com", "/s3/object/surgical-models-prod")
    assert parse_qs(parts.query) == {"region": ["eu-west-1"], "bucketType": ["general"],
                                     "prefix": ["reports/job 1/index.html"]}


def test_local_link_is_the_gateways_reports_route():
    uri = report_uri_for_job("job-7", "surgical-models")
    assert report_url(uri, {"MODEL_REPORTS_BASE_URL": "http://h:1"}) == "http://h:1/reports/job-7/index.html"


def test_attaching_the_link_leaves_the_operator_class_alone():
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator

    before = tuple(SageMakerTrainingOperator.operator_extra_links)
    op = with_model_report(SageMakerTrainingOperator(task_id="t", config={}))
    assert [link.name for link in op.operator_extra_links] == [*(link.name for link in before), "Model report"]
    assert tuple(SageMakerTrainingOperator.operator_extra_links) == before


def test_training_dag_serializes_the_link_on_training_and_promotion():
    from airflow.serialization.serialized_objects import OperatorSerialization

    sys.path.insert(0, str(REPO_ROOT / "dags"))
    try:
        dag = importlib.import_module("train_and_register").dag
    finally:
        sys.path.remove(str(REPO_ROOT / "dags"))
    for task_id in ("fit.train", "promote"):
        encoded = OperatorSerialization.serialize_operator(dag.get_task(task_id))
        assert encoded["_operator_extra_links"] == {"Model report": "_link_ModelReportLink"}


def test_plugin_registers_the_link():
    from surgical_mlops.plugin import SurgicalMlopsPlugin

    assert [type(link) for link in SurgicalMlopsPlugin.operator_extra_links] == [ModelReportLink]
