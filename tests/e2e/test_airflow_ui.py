"""The local Airflow services in a browser: log in, see the pipeline DAGs, open a train_and_register run and follow
its "Model report" extra link to the report served from the local S3.

Debian's chromium (``make setup`` installs it) driven by Playwright through ``executable_path``. The run is a real
one, triggered through the REST API, and made cheap: its dataset version does not exist, so ``plan`` fails and
nothing trains. The report and the link's XCom (what the worker stores when ``fit.train`` ends, computed here with the
link's own functions and the services' ``MODEL_REPORTS_BASE_URL``) are seeded.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from surgical_mlops.links import report_uri_for_job, report_url

from include.config import build_config
from local_aws import airflow_services
from local_aws.airflow_services import AirflowApi, AirflowApiError, AirflowSettings
from local_aws.settings import StackSettings
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PIPELINE_DAGS = ["ingest_and_extract", "labeling", "train_and_register", "deploy"]
DAG_ID, RUN_ID, JOB = "train_and_register", "ui_test__model_report", "det-ui-test-0001"


@pytest.fixture(scope="module")
def airflow(local_stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowSettings]:
    """The four services as 'make airflow-up' starts them, with their own home and port."""
    settings = airflow_services.load_airflow_settings(local_stack, home=tmp_path_factory.mktemp("airflow-services"),
                                                      port=free_port(1))
    airflow_services.up(settings, quiet=True)
    try:
        yield settings
    finally:
        airflow_services.down(settings)


@pytest.fixture(scope="module")
def model_report_run(airflow: AirflowSettings, aws) -> str:
    """A train_and_register run whose fit.train links to a report in the local S3; returns the report's URL."""
    api = AirflowApi.for_settings(airflow)
    api.wait_for_dags(PIPELINE_DAGS)
    uri = report_uri_for_job(JOB, build_config("local").models_bucket)
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    aws("s3").put_object(Bucket=bucket, Key=key, ContentType="text/html",
                         Body=f"<html><head><title>Model report {JOB}</title></head>"
                              f"<body><h1>Model report: {JOB}</h1></body></html>".encode())
    api.trigger(DAG_ID, {"dataset_version": "does-not-exist"}, run_id=RUN_ID)
    url = report_url(uri, airflow_services.airflow_service_environment(airflow))
    deadline = time.time() + 60
    while True:  # the scheduler creates the run's task instances
        try:
            api.set_xcom(DAG_ID, RUN_ID, "fit.train", "_link_ModelReportLink", url)
            break
        except AirflowApiError as exc:
            if exc.status != 404 or time.time() > deadline:
                raise
            time.sleep(1)
    assert api.extra_links(DAG_ID, RUN_ID, "fit.train")["extra_links"] == {"Model report": url}
    return url


@pytest.fixture
def page(airflow: AirflowSettings):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: 'make setup' installs Debian's (apt-get, as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_model_report_link_opens_the_runs_report(airflow, model_report_run, page):
    page.goto(f"{airflow.url}/dags")
    page.fill("input[name=username]", airflow.username)
    page.fill("input[name=password]", airflow.password())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dags*")
    for dag_id in PIPELINE_DAGS:
        page.get_by_role("link", name=dag_id, exact=True).first.wait_for()

    page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{RUN_ID}/tasks/fit.train")
    page.get_by_text("SageMakerTrainingOperator").first.wait_for()
    page.get_by_text("Details", exact=True).click()
    link = page.get_by_role("link", name="Model report")
    assert link.get_attribute("href") == model_report_run
    with page.context.expect_page() as opened:
        link.click()
    report = opened.value
    report.wait_for_load_state()
    assert report.url == model_report_run
    assert report.locator("h1").inner_text() == f"Model report: {JOB}"
