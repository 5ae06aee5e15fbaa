"""The whole loop under the real scheduler (``make demo``'s ``Loop`` with smaller data): an upload reaches a served
model through ingest_and_extract -> labeling -> train_and_register -> deploy, driven only by the S3 upload and the
Assets; drift traffic raises the alarm, the trigger Lambda starts drift_retrain through the REST API and it sends the
drifted videos back to labeling.

Its own stack and Airflow services on free ports (the trigger Lambda is deployed with that Airflow's URL and login).
Cut to ~5 minutes on 2 cores: 3 videos of 4 s at 320x192, a ~30 s training with the promotion floor at 0 (the
gate's maths is covered by tests/unit/test_promotion*.py and the promotion against a champion by
tests/e2e/test_train_and_register.py), and the chain stops once the labeling run that drift_retrain triggers exists:
relabel -> retrain -> redeploy are the same DAGs on the same Assets (covered here for the first pass, and each alone in
test_labeling/test_train_and_register/test_deploy); ``make demo`` and ``bench/loop.py`` run the full loop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from local_aws import airflow_services, stack
from local_aws.demo import DemoData, Loop, annotators, bring_up
from local_aws.label_studio import server as label_studio
from local_aws.label_studio.workforce import LabelStudioWorkforce
from local_aws.settings import load_settings
from tests.conftest import free_port
from tools import iam_usage

# the module's fixture runs the whole loop (~8 min on 2 idle cores): more than the suite's 600 s per test
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(1500)]

SMALL = DemoData(
    videos=3, seconds=4, width=320, height=192, drift_scenarios=("smoke", "dark"), drift_seconds=3, drift_repeat=2,
    pipeline_config={
        "training_hyperparameters": {"epochs": 3, "max_train_seconds": 30, "image_size": 160, "batch_size": 8,
                                     "warmup_steps": 5},
        "promotion_floor_map50": 0.0, "promotion_resamples": 100, "smoke_test_frames": 4,
        "drift_bins": 5, "drift_min_sample_size": 30, "drift_baseline_splits": "train,val,test",
    })


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    home = tmp_path_factory.mktemp("loop")
    stack_settings = load_settings(home=home / "aws", base_port=free_port())
    airflow = airflow_services.load_airflow_settings(stack_settings, home=home / "airflow", port=free_port(1))
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as env:  # bring_up sets the trigger Lambda's LOCAL_AIRFLOW_API_*: undone after
        for name in ("LOCAL_AIRFLOW_API_URL", "LOCAL_AIRFLOW_API_USERNAME", "LOCAL_AIRFLOW_API_PASSWORD"):
            env.setenv(name, os.environ.get(name, ""))
        env.setenv("LOCAL_LAMBDA_RETRY_DELAYS", "0.2,0.2")
        env.setenv("LOCAL_AWS_IAM", "enforce")  # every component as its role from infra/, as on AWS
        try:
            bring_up(stack_settings, airflow, quiet=True)  # the defaults: Label Studio labels
            started = time.time()
            the_loop = Loop(stack_settings, airflow, SMALL, workdir=home / "videos", stage_timeout=400,
                            retrain=False, say=lines.append)
            with annotators(stack_settings, the_loop.config.labeling_backend):
                the_loop.ok = the_loop.run()
            the_loop.log = "\n".join(lines) + "\n" + the_loop.table() + f"\nloop: {time.time() - started:.0f} s"
            the_loop.iam_usage = iam_usage.stack_usage(stack_settings)
            print(the_loop.log)
            report = iam_usage.report(the_loop.iam_usage)
            print(report)
            (home / "iam_usage.txt").write_text(report + "\n", encoding="utf-8")  # the README's figures
            yield the_loop
        finally:
            airflow_services.down(airflow)
            label_studio.down(stack_settings)
            stack.down(stack_settings)


def test_the_loop_finishes_every_stage(loop):
    assert loop.ok, loop.log
    assert [s for s in loop.stages if not s.ok] == [], loop.log


def test_every_role_had_what_it_needed_under_enforcement(loop):
    """LOCAL_AWS_IAM=enforce: Airflow ran as the MWAA execution role, jobs and endpoints as the SageMaker execution
    role, Lambdas as theirs; none was refused anything (the least-privilege report: 0 missing)."""
    usage = {u.role.rsplit("/", 1)[-1]: u for u in loop.iam_usage}
    report = iam_usage.report(loop.iam_usage)
    assert {"surgical-mwaa-execution-local", "surgical-sagemaker-execution"} <= set(usage), report
    assert usage["surgical-mwaa-execution-local"].used and usage["surgical-sagemaker-execution"].used, report
    assert usage["surgical-mwaa-execution-local"].used.keys() >= {"sagemaker:CreateProcessingJob",
                                                                  "sagemaker:CreateTrainingJob", "iam:PassRole"}
    assert [u.role for u in loop.iam_usage if u.missing] == [], report


def test_uploads_become_frames_and_a_dataset_version(loop):
    s3, config = loop.aws("s3"), loop.config
    for video_id in loop.facts["video_ids"]:
        manifest = loop.json_object(config.frames_bucket, f"frames/{video_id}/frames.json")
        assert manifest["frame_count"] == 20, manifest  # 4 s at 5 fps
        keys = s3.list_objects_v2(Bucket=config.frames_bucket, Prefix=f"frames/{video_id}/")["Contents"]
        assert sum(k["Key"].endswith(".jpg") for k in keys) == manifest["frame_count"]
    card = loop.facts["datasets"][0]
    assert card["frames"] == 60 and card["parent"] is None, card
    assert loop.json_object(config.annotations_bucket, "datasets/latest.json")["version"] == card["version"]


def test_the_model_is_registered_with_metrics_approved_and_served_through_the_gateway(loop):
    assert loop.ok, loop.log
    training = loop.facts["trainings"][0]
    package = loop.aws("sagemaker").describe_model_package(
        ModelPackageName=training["decision"]["model_package_arn"])
    assert package["ModelApprovalStatus"] == "Approved", package
    assert package["CustomerMetadataProperties"]["dataset_version"] == loop.facts["datasets"][0]["version"]
    evaluation = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    bucket, key = evaluation.removeprefix("s3://").split("/", 1)
    registered = loop.json_object(bucket, key)
    assert registered["map50"] == training["candidate"]["map50"], (registered["map50"], training["candidate"])
    assert training["approved"] == training["decision"]["approved"] and \
        registered["map50"] >= loop.config.promotion_floor_map50  # an approved version met the floor
    assert training["report_link"], "no Model report extra link on fit.train"
    endpoint = loop.aws("sagemaker").describe_endpoint(EndpointName=loop.config.endpoint_name)
    assert endpoint["EndpointStatus"] == "InService"
    assert loop.facts["deployments"][0]["smoke_test"]["passed"]
    # the gateway answers what the endpoint answers for the same frame (the Lambda adds and drops nothing)
    frame = loop.aws("s3").get_object(Bucket=loop.config.frames_bucket, Key=loop.facts["detect_frame"])["Body"].read()
    direct = json.loads(loop.aws("sagemaker-runtime").invoke_endpoint(
        EndpointName=loop.config.endpoint_name, ContentType="image/jpeg", Accept="application/json",
        Body=frame)["Body"].read())
    assert loop.facts["detect"]["detections"] == direct["detections"], (loop.facts["detect"], direct)


def test_drift_is_found_by_the_monitor_job_whose_metrics_raise_the_alarm_whose_lambda_runs_drift_retrain(loop):
    """The default monitor is a Processing job in the hourly drift_retrain: that run judged the drift traffic's window
    from the job's violations, published the job's metrics (the alarm rose on them, or on the normal-traffic check's:
    an alarm changes state once) and sent the drifted videos to labeling; the alarm's Lambda started a drift_retrain
    run of its own, with the alarm's reason."""
    assert loop.ok, loop.log
    drift = loop.facts["drift"]
    hourly, alarm_run = drift["hourly_run"], drift["run"]
    assert hourly is not None and hourly["tasks"]["monitor.run_monitor"] == "success", hourly
    assert hourly["tasks"].get("monitor.schedule") in (None, "skipped"), hourly["tasks"]
    assert drift["verdict"]["drift"] and drift["verdict"]["causes"], drift["verdict"]
    assert set(drift["collected"]["video_ids"]) == set(loop.facts["drift_video_ids"])
    assert alarm_run["dag_run_id"].startswith("drift_alarm__") and alarm_run["state"] == "success", alarm_run
    assert alarm_run["conf"]["trigger"] == "cloudwatch-alarm"
    assert alarm_run["conf"]["alarm_name"].endswith("-drift-local")
    # every metric line the hourly monitor job left beside its results is in CloudWatch; the input PSI always (the
    # frames are many), the prediction PSI only where the baseline held min_sample_size detections (a 30 s training
    # may detect fewer: then the feature is not evaluated and its metric is absent, not 0)
    job = loop.aws("sagemaker").describe_processing_job(ProcessingJobName=drift["verdict"]["monitor_job"])
    bucket, _, prefix = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"][5:].partition("/")
    lines = loop.aws("s3").get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/cloudwatch_metrics.jsonl")["Body"]
    written = {json.loads(line)["MetricName"] for line in lines.read().decode().splitlines() if line.strip()}
    metrics = loop.aws("cloudwatch").list_metrics(Namespace="aws/sagemaker/Endpoints/data-metrics")["Metrics"]
    published = {m["MetricName"] for m in metrics}
    assert "input_drift_psi" in written and written <= published, (written, metrics)
    decisions = loop.aws("s3").list_objects_v2(Bucket=loop.config.models_bucket,
                                               Prefix="monitoring/decisions/")["Contents"]
    recorded = {r["run_id"]: r for r in (loop.json_object(loop.config.models_bucket, d["Key"]) for d in decisions)}
    assert recorded[hourly["dag_run_id"]]["drift"], json.dumps(recorded)[:2000]
    assert alarm_run["dag_run_id"] in recorded
    relabel = loop.facts["relabel_run"]
    assert relabel["dag_run_id"] == f"drift__{hourly['dag_run_id']}"
    assert set(relabel["conf"]["video_ids"]) == set(loop.facts["drift_video_ids"]), relabel


def test_the_loop_ran_on_the_backends_a_new_account_has(loop):
    """Label Studio labeled (its rounds' projects exist) and no Ground Truth job or Model Monitor schedule exists."""
    assert (loop.config.labeling_backend, loop.config.monitoring_backend) == ("label_studio", "processing")
    sagemaker = loop.aws("sagemaker")
    assert sagemaker.list_labeling_jobs()["LabelingJobSummaryList"] == []
    assert sagemaker.list_monitoring_schedules()["MonitoringScheduleSummaries"] == []
    # the rounds before drift were annotated; the relabel run's round may be newer than the annotators (the loop stops
    # once that run exists)
    relabel = loop.facts["relabel_run"]
    relabel_at = _utc(relabel.get("queued_at") or relabel["run_after"])
    projects = LabelStudioWorkforce(loop.stack).projects()
    earlier = [p for p in projects if _utc(p["created_at"]) < relabel_at]
    assert earlier and all(p["num_tasks_with_annotations"] for p in earlier), projects


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
