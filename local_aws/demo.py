"""``make demo``: the whole loop on a laptop, run by the real Airflow scheduler, narrated as it goes.

The local AWS stack and the four Airflow services come up (``local_aws.stack``, ``local_aws.airflow_services``);
the ``pipeline_config`` Variable sizes the pipeline for the demo's small data (a short training, a promotion floor
that it can reach, drift statistics for windows of ~100 frames); synthetic surgical videos (their truth in the
stack's truth store, read only by the local labeling workforce) are uploaded to the raw bucket. From there the
scheduler runs the pipeline by itself, driven by the upload and the Assets:

    upload -> S3 -> Lambda -> SQS -> ingest_and_extract (cron */10; its first run waits on the queue)
           -> frames Asset -> labeling -> dataset Asset -> train_and_register -> approved_model Asset -> deploy
           -> POST <gateway>/detect

Then drift: drift-scenario videos (smoke, a darker scope) are uploaded and ingested (labeling is paused meanwhile:
in the field that traffic is not an upload, so nothing labels it until drift is found), their frames are sent to the
endpoint with ``InferenceId`` = the frame key, the monitoring schedule runs now, the alarms are evaluated now
(local-only calls standing in for SageMaker's hourly schedule and CloudWatch's minute), the alarm -> EventBridge ->
the trigger Lambda -> a drift_retrain run through the REST API -> relabel -> retrain -> promotion -> redeploy if
approved. Two things are triggered through the REST API instead of waiting for the clock, and the output says so:
drift_retrain's hourly check (it creates the baseline and the monitoring schedule) and, when the next */10 tick is
far, the ingest run of the drift videos.

``--labeling-backend label_studio`` (``make demo LABELING_BACKEND=label_studio``) labels in Label Studio instead of
the local Ground Truth: the stack's Label Studio comes up before Airflow (so the workers get its connection), the
``pipeline_config`` Variable names the backend, and the simulated annotators (``local_aws.label_studio.workforce``)
work the rounds' tasks over Label Studio's REST API while the loop runs; open the printed Label Studio URL to watch
(or label by hand: a task a person annotated counts).

``Loop`` is the loop itself; ``bench/loop.py`` and ``tests/e2e/test_loop.py`` run it with other data.
Exit status: 0 when every stage finished as expected, 1 when a run failed or a stage timed out.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from include.config import LABELING_BACKENDS, MONITORING_BACKENDS, build_config
from include.lambdas.s3_to_sqs import video_id_for
from include.monitoring import capture_prefix
from include.synthetic import generate_video
from local_aws import airflow_services, bootstrap, stack
from local_aws.airflow_services import AirflowApi, AirflowApiError, AirflowSettings
from local_aws.label_studio import server as label_studio
from local_aws.sagemaker.backend import CLOSED_SERVICES, OPT_INS_ENV
from local_aws.settings import StackSettings, iam_enforced, load_settings

DAG_IDS = ["ingest_and_extract", "labeling", "train_and_register", "deploy", "drift_retrain"]
# The labeling DAG's Label Studio round tasks; each returns its project's link.
LABEL_STUDIO_ROUNDS = {"first pass": "label_studio.first_pass.round.start", "review": "label_studio.review.start"}
STALE_SENSOR_GRACE_S = 20.0  # a failed-marked run's sensor: one 10 s long poll plus a task heartbeat


@dataclass(frozen=True)
class DemoData:
    """The data and the pipeline settings of one loop (the demo's defaults; the e2e test uses smaller ones)."""

    videos: int = 6
    seconds: float = 6.0
    width: int = 480
    height: int = 272
    fps: float = 25.0
    drift_scenarios: tuple[str, ...] = ("smoke", "dark")
    drift_seconds: float = 6.0
    drift_repeat: int = 2  # each drift frame is sent this many times (a window of ~120 requests)
    # The Airflow Variable pipeline_config: fields of include/config.py over the local preset.
    pipeline_config: dict[str, Any] = field(default_factory=lambda: {
        # ~1-2 minutes of CPU training. Measured on 2 loaded cores: this data and time do not teach the detector
        # (test mAP@0.5 ~0.0; README: 12 videos and 180 s reach 0.635), so the demo's floor is 0: the promotion
        # rule runs and records its figures, the level is the demo's (production floor: 0.8).
        "training_hyperparameters": {"epochs": 40, "max_train_seconds": 60, "image_size": 160, "batch_size": 8,
                                     "warmup_steps": 20},
        "promotion_floor_map50": 0.0,
        "promotion_resamples": 200,
        # windows of ~100-150 frames (production windows hold thousands)
        "drift_bins": 5, "drift_min_sample_size": 30, "drift_baseline_splits": "train,val,test",
    })


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    ok: bool = False
    run: str = ""
    detail: str = ""


class StageFailed(RuntimeError):
    pass


def _post(url: str, body: dict | None = None, timeout: float = 60.0) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",  # noqa: S310 - loopback
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http:// loopback
        return json.loads(response.read() or b"{}")


def bring_up(stack_settings: StackSettings, airflow: AirflowSettings, quiet: bool = False,
             labeling_backend: str = LABELING_BACKENDS[0]) -> None:
    """The stack, Label Studio (with its backend; before Airflow: the workers read its connection from the
    environment), then the Airflow services. The trigger Lambda is deployed with the Airflow URL and login (the
    bootstrap reads them from the environment), so they are fixed before the stack comes up."""
    os.environ["LOCAL_AIRFLOW_API_URL"] = airflow.url
    os.environ["LOCAL_AIRFLOW_API_USERNAME"] = airflow.username
    os.environ["LOCAL_AIRFLOW_API_PASSWORD"] = airflow.password()
    stack.up(stack_settings, quiet=quiet)
    if labeling_backend == "label_studio":
        label_studio.up(stack_settings)
    airflow_services.up(airflow, quiet=True)


class Loop:
    """The loop, stage by stage: each stage waits for what the scheduler does and records its wall time."""

    def __init__(self, stack_settings: StackSettings, airflow: AirflowSettings, data: DemoData | None = None, *,
                 workdir: Path | None = None, stage_timeout: float = 900.0, retrain: bool = True,
                 say: Callable[[str], None] = print) -> None:
        self.stack, self.airflow, self.data = stack_settings, airflow, data or DemoData()
        self.api = AirflowApi.for_settings(airflow)
        self.config = build_config("local", self.data.pipeline_config)
        self.workdir = workdir or stack_settings.home / "demo-videos"
        self.stage_timeout, self.retrain, self.say = stage_timeout, retrain, say
        self.stages: list[Stage] = []
        self.facts: dict[str, Any] = {}  # what the stages produced (the tests assert on it)
        self.seed = int(time.time()) % 100000
        self.stale_ingest_failed_at = 0.0
        self.uploaded_at = self.answered_at = self.last_upload_at = None
        self._seen: dict[str, set[str]] = {}

    # --- plumbing ----------------------------------------------------------------------------------------------
    def aws(self, service: str) -> Any:
        return bootstrap.client(self.stack, service)

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        record = Stage(name)
        self.stages.append(record)
        started = time.time()
        self.say(f"\n== {name}")
        try:
            yield record
            record.ok = True
        except (StageFailed, TimeoutError, AirflowApiError) as exc:
            record.detail = record.detail or str(exc)[:300]
            self.say(f"   FAILED: {exc}")
            raise StageFailed(f"{name}: {exc}") from exc
        finally:
            record.seconds = time.time() - started

    def mark_runs(self, *dag_ids: str) -> None:
        """Remember the runs that exist now: the next stage waits for a new one."""
        for dag_id in dag_ids:
            self._seen[dag_id] = {r["dag_run_id"] for r in self.api.runs(dag_id)}

    def new_run(self, dag_id: str, match: Callable[[dict], bool] = lambda r: True,
                timeout: float | None = None) -> dict:
        deadline = time.time() + (timeout or self.stage_timeout)
        while time.time() < deadline:
            fresh = [r for r in self.api.runs(dag_id) if r["dag_run_id"] not in self._seen.get(dag_id, set())
                     and match(r)]
            if fresh:
                run = min(fresh, key=lambda r: r.get("queued_at") or r.get("start_date") or "")
                self._seen.setdefault(dag_id, set()).add(run["dag_run_id"])
                self.say(f"   {dag_id} run {run['dag_run_id']} ({run['run_type']}) created")
                return run
            time.sleep(2)
        raise TimeoutError(f"no new {dag_id} run within {timeout or self.stage_timeout:.0f} s")

    def finish(self, dag_id: str, run: dict, stage: Stage, *, allow_failed: bool = False) -> dict:
        run = self.api.wait_for_run(dag_id, run["dag_run_id"], timeout=self.stage_timeout)
        stage.run = run["dag_run_id"]
        states = self.api.task_instances(dag_id, run["dag_run_id"])
        self.say(f"   {dag_id} {run['dag_run_id']}: {run['state']} ("
                 + ", ".join(f"{t} {s}" for t, s in sorted(states.items())) + ")")
        if run["state"] != "success" and not allow_failed:
            raise StageFailed(f"{dag_id} run {run['dag_run_id']} {run['state']}: "
                              f"{sorted(t for t, s in states.items() if s == 'failed')} failed")
        run["tasks"] = states
        return run

    def pause(self, dag_id: str, paused: bool) -> None:
        """PATCH the DAG; SQLite answers "database is locked" (HTTP 500) now and then while the scheduler writes."""
        for attempt in range(5):
            try:
                self.api.set_paused(dag_id, paused)
                return
            except AirflowApiError as exc:
                if exc.status != 500 or attempt == 4:
                    raise
                time.sleep(1 + attempt)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        try:
            return self.api.xcom(dag_id, run_id, task_id, key)
        except AirflowApiError:
            return None

    def json_object(self, bucket: str, key: str) -> Any:
        return json.loads(self.aws("s3").get_object(Bucket=bucket, Key=key)["Body"].read())

    # --- the stages ----------------------------------------------------------------------------------------------
    def configure(self) -> None:
        with self.stage("configure: Airflow Variable pipeline_config"):
            self.api.wait_for_dags(DAG_IDS, timeout=180)
            value = json.dumps(self.data.pipeline_config)
            try:
                self.api.request("POST", "/variables", {"key": "pipeline_config", "value": value})
            except AirflowApiError as exc:
                if exc.status != 409:
                    raise
                self.api.request("PATCH", "/variables/pipeline_config", {"key": "pipeline_config", "value": value})
            self.say(f"   pipeline_config = {value}")
            self.say(f"   NOTE: the demo's promotion floor is mAP@0.5 >= {self.config.promotion_floor_map50:g} "
                     f"(production: {build_config('local').promotion_floor_map50:g}): ~1 min of CPU training "
                     "on this little data does not reach a useful mAP, so the gate runs and records its figures "
                     "but approves what it gets")
            self.fail_stale_runs()
            self.mark_runs(*DAG_IDS)

    def fail_stale_runs(self) -> None:
        """Runs already queued or running when the loop starts (left by an earlier session: a stopped demo, an
        interrupted ``dag.test()`` in the same Airflow home; or created by the scheduler for a schedule that came due
        while the services started) would hold ``max_active_runs`` and stall this loop: they are marked failed, and
        said so."""
        for dag_id in DAG_IDS:
            for run in self.api.runs(dag_id):
                if run["state"] in ("queued", "running"):
                    self.api.request("PATCH", f"/dags/{dag_id}/dagRuns/{quote(run['dag_run_id'], safe='')}",
                                     {"state": "failed"})
                    self.say(f"   {dag_id} run {run['dag_run_id']} ({run['run_type']}) was {run['state']} before "
                             f"the loop started: marked failed (it would hold max_active_runs)")
                    if dag_id == "ingest_and_extract":
                        self.stale_ingest_failed_at = time.time()

    def generate(self, scenario: str, count: int, seconds: float, tag: str) -> list[Path]:
        d = self.data
        paths = []
        for index in range(count):
            path = self.workdir / f"{tag}-{self.seed}-{index:02d}.{('mp4', 'avi')[index % 2]}"
            video = generate_video(path, seconds=seconds, width=d.width, height=d.height, fps=d.fps,
                                   seed=self.seed * 10 + index + (0 if tag == "case" else 1000), scenario=scenario,
                                   truth_dir=self.stack.truth_dir)
            paths.append(video.path)
        return paths

    def upload(self, paths: list[Path]) -> list[str]:
        """Upload a batch whole: ingest_and_extract is held (paused, no sensor poke in flight) until the Lambda has
        queued every video, so one run takes the whole batch. The SQS sensor long-polls nearly all the time, and a
        poke during the uploads would take part of the batch and leave the rest to the next */10 run."""
        self.pause("ingest_and_extract", True)
        # A run just marked failed may still have its sensor process in a 10 s long poll until its next heartbeat
        # ends it: a message it received then would stay invisible for the queue's visibility timeout (900 s).
        time.sleep(max(0.0, self.stale_ingest_failed_at + STALE_SENSOR_GRACE_S - time.time()))
        deadline = time.time() + 60
        while any(state in ("running", "queued") for run in self.api.runs("ingest_and_extract")
                  if run["state"] in ("queued", "running")
                  for task, state in self.api.task_instances("ingest_and_extract", run["dag_run_id"]).items()
                  if task == "collect.wait_for_videos") and time.time() < deadline:
            time.sleep(1)
        s3 = self.aws("s3")
        ids = []
        self.last_upload_at = time.time()
        for path in paths:
            key = f"{self.config.video_prefix}{path.name}"
            with open(path, "rb") as fh:
                put = s3.put_object(Bucket=self.config.raw_bucket, Key=key, Body=fh)
            ids.append(video_id_for(self.config.raw_bucket, key, put["VersionId"]))
            self.say(f"   s3://{self.config.raw_bucket}/{key} -> video id {ids[-1]}")
        for line in self.queued(ids):
            self.say(f"   Lambda s3_to_sqs: {line}")
        self.pause("ingest_and_extract", False)
        return ids

    def queued(self, video_ids: list[str], timeout: float = 60.0) -> list[str]:
        """The ingest Lambda's log lines for these videos, once it queued them all (the queue itself is not read:
        every receive counts towards the redrive policy, and the messages belong to ingest_and_extract)."""
        logs, group = self.aws("logs"), "/aws/lambda/surgical-s3-to-sqs"
        deadline = time.time() + timeout
        while True:
            try:
                lines = [e["message"].split("\t")[-1].strip()
                         for st in logs.describe_log_streams(logGroupName=group)["logStreams"]
                         for e in logs.get_log_events(logGroupName=group, logStreamName=st["logStreamName"])["events"]
                         if "queued: message" in e["message"] and any(v in e["message"] for v in video_ids)]
            except logs.exceptions.ResourceNotFoundException:
                lines = []
            if len(lines) >= len(video_ids):
                return lines
            if time.time() > deadline:
                raise StageFailed(f"the s3_to_sqs Lambda queued {len(lines)} of {len(video_ids)} uploads within "
                                  f"{timeout:.0f} s; see {group}")
            time.sleep(0.5)

    def frames_ready(self, video_ids: list[str]) -> bool:
        s3 = self.aws("s3")
        for video_id in video_ids:
            try:
                s3.head_object(Bucket=self.config.frames_bucket, Key=f"frames/{video_id}/frames.json")
            except s3.exceptions.ClientError:
                return False
        return True

    def ingest(self, name: str, video_ids: list[str], trigger_after: float | None = None) -> None:
        """Wait for ingest_and_extract runs until every video has its frames (a run may take part of the batch)."""
        with self.stage(name) as stage:
            deadline = time.time() + self.stage_timeout
            triggered_at = time.time() + trigger_after if trigger_after is not None else None
            runs = []
            while not self.frames_ready(video_ids):
                if time.time() > deadline:
                    raise TimeoutError(f"frames of {video_ids} not extracted within {self.stage_timeout:.0f} s")
                active = [r for r in self.api.runs("ingest_and_extract") if r["state"] in ("queued", "running")]
                if triggered_at and time.time() > triggered_at and not active:
                    run = self.api.trigger("ingest_and_extract")
                    self.say(f"   triggered ingest_and_extract {run['dag_run_id']} through the REST API (not "
                             "waiting for the next */10 tick)")
                    triggered_at = None
                for r in active:
                    if r["dag_run_id"] not in runs:
                        runs.append(r["dag_run_id"])
                        self.say(f"   ingest_and_extract run {r['dag_run_id']} ({r['run_type']}) {r['state']}")
                time.sleep(2)
            if not runs:
                raise StageFailed("frames appeared without an ingest_and_extract run being seen")
            # the run that wrote the frames ends with settle (frames Asset): the last one seen whose plan ran (a
            # scheduled run queued behind it, e.g. a */10 tick during a triggered run, waits on an empty queue)
            writer = next((r for r in reversed(runs)
                           if self.api.task_instances("ingest_and_extract", r).get("plan") == "success"), runs[-1])
            self.finish("ingest_and_extract", {"dag_run_id": writer}, stage)
            frames = 0
            for video_id in video_ids:
                manifest = self.json_object(self.config.frames_bucket, f"frames/{video_id}/frames.json")
                frames += manifest["frame_count"]
                self.say(f"   {video_id}: {manifest['frame_count']} frames at {manifest['extraction']['fps']:g} fps "
                         f"-> s3://{self.config.frames_bucket}/frames/{video_id}/")
            stage.detail = f"{frames} frames from {len(video_ids)} videos"
            self.facts.setdefault("frames", {}).update({v: True for v in video_ids})

    def labeling(self, name: str, match: Callable[[dict], bool] = lambda r: True) -> dict:
        with self.stage(name) as stage:
            run = self.finish("labeling", self.new_run("labeling", match), stage)
            published = self.xcom("labeling", run["dag_run_id"], "publish") or {}
            for round_name, task_id in LABEL_STUDIO_ROUNDS.items():
                started = self.xcom("labeling", run["dag_run_id"], task_id)  # None with the Ground Truth backend
                if isinstance(started, dict) and started.get("project_url"):
                    self.say(f"   Label Studio {round_name}: {started['project_url']}")
            card = self.json_object(self.config.annotations_bucket, f"datasets/{published['version']}/card.json")
            self.say(f"   dataset {card['version']} (parent {card['parent']}): {card['frames']} frames; "
                     + ", ".join(f"{s} {i['frames']} frames/{len(i['videos'])} video(s)"
                                 for s, i in card["splits"].items()))
            stage.detail = f"dataset {card['version'][:12]}, {card['frames']} frames"
            self.facts.setdefault("datasets", []).append(card)
            return card

    def train(self, name: str) -> dict:
        with self.stage(name) as stage:
            run = self.finish("train_and_register", self.new_run("train_and_register"), stage, allow_failed=False)
            rid = run["dag_run_id"]
            candidate = self.xcom("train_and_register", rid, "evaluate") or {}
            decision = self.xcom("train_and_register", rid, "promote") or {}
            links = {}
            try:
                links = self.api.extra_links("train_and_register", rid, "fit.train").get("extra_links", {})
            except AirflowApiError:
                pass
            approved = bool(decision.get("approved"))
            self.say(f"   training job {candidate.get('training_job')}: test mAP@0.5 {candidate.get('map50', 0):.3f}, "
                     f"mAP@[.5:.95] {candidate.get('map', 0):.3f} on dataset {candidate.get('dataset_version')}")
            self.say(f"   package {decision.get('model_package_arn')}: {'APPROVED' if approved else 'REJECTED'} "
                     f"(floor {self.config.promotion_floor_map50}): {'; '.join(decision.get('reasons', []))}")
            self.say(f"   report: {candidate.get('report_uri')}  Model report link: {links.get('Model report')}")
            stage.detail = f"mAP@0.5 {candidate.get('map50', 0):.3f} -> {'approved' if approved else 'rejected'}"
            result = {"run_id": rid, "candidate": candidate, "decision": decision, "approved": approved,
                      "report_link": links.get("Model report")}
            self.facts.setdefault("trainings", []).append(result)
            return result

    def deploy(self, name: str) -> dict:
        with self.stage(name) as stage:
            run = self.finish("deploy", self.new_run("deploy"), stage)
            recorded = self.xcom("deploy", run["dag_run_id"], "record") or {}
            smoke = recorded.get("smoke_test", {})
            self.say(f"   endpoint {recorded.get('endpoint')} serves config {recorded.get('endpoint_config')} "
                     f"(package {recorded.get('model_package_arn')})")
            self.say(f"   smoke test: {json.dumps(smoke)[:300]}")
            stage.detail = f"{recorded.get('endpoint_config')}, smoke {'passed' if smoke.get('passed') else smoke}"
            self.facts.setdefault("deployments", []).append(recorded)
            return recorded

    def detect(self, video_id: str) -> dict:
        with self.stage("API: POST <gateway>/detect") as stage:
            manifest = self.json_object(self.config.frames_bucket, f"frames/{video_id}/frames.json")
            key = f"frames/{video_id}/{manifest['frames'][0]['file']}"
            frame = self.aws("s3").get_object(Bucket=self.config.frames_bucket, Key=key)["Body"].read()
            answer = _post(f"{self.stack.api_gateway_url}/detect", {"image": base64.b64encode(frame).decode()})
            self.answered_at = self.answered_at or time.time()  # the first answer: upload -> endpoint answering
            detections = answer.get("detections", [])
            self.say(f"   POST {self.stack.api_gateway_url}/detect ({key}): {len(detections)} "
                     f"detection(s): {json.dumps(detections[:3])}")
            stage.detail = f"{len(detections)} detections"
            self.facts["detect"] = answer
            self.facts["detect_frame"] = key
            return answer

    @property
    def model_monitor(self) -> bool:
        return self.config.monitoring_backend == "model_monitor"

    def hourly_check(self, stage: Stage) -> dict:
        """drift_retrain's hourly run, triggered now (never a run the alarm Lambda triggered, nor one followed
        before); with the Model Monitor backend, its schedule is run now once the run created it. A scheduled run
        already queued or running (the hour ticked during the loop) is waited for first, not adopted: its window is
        the hour before, which may end before the traffic just sent. Returns the finished run."""
        seen = self._seen.get("drift_retrain", set())
        for active in [r for r in self.api.runs("drift_retrain") if r["state"] in ("queued", "running")
                       and not r["dag_run_id"].startswith("drift_alarm__") and r["dag_run_id"] not in seen]:
            self.say(f"   waiting for drift_retrain run {active['dag_run_id']} ({active['run_type']}) first")
            self._seen.setdefault("drift_retrain", set()).add(active["dag_run_id"])
            self.api.wait_for_run("drift_retrain", active["dag_run_id"], timeout=self.stage_timeout)
        run = self.api.trigger("drift_retrain")
        self._seen.setdefault("drift_retrain", set()).add(run["dag_run_id"])
        self.say(f"   drift_retrain run {run['dag_run_id']} ({run['run_type']}), monitor backend "
                 f"{self.config.monitoring_backend}")
        if self.model_monitor:
            self.run_schedule_now(run["dag_run_id"])
        return self.finish("drift_retrain", run, stage)

    def drift_check(self) -> None:
        """drift_retrain's hourly check, now: the baseline, and the monitor (a Processing job in the run, or the
        monitoring schedule) on one window of normal traffic."""
        with self.stage("drift check (the @hourly drift_retrain, triggered now)") as stage:
            run = self.hourly_check(stage)
            verdict = self.xcom("drift_retrain", run["dag_run_id"], "assess") or {}
            self.say(f"   verdict on normal traffic: drift {verdict.get('drift')}: {verdict.get('causes')}")
            stage.detail = f"drift {verdict.get('drift')}"

    def run_schedule_now(self, run_id: str | None = None) -> dict:
        """The local-only run-now of the monitoring schedule (AWS runs it on the hour), once the run's
        monitor.schedule task created or updated it; waits for the execution to end."""
        name = self.config.monitoring_schedule_name
        if run_id:
            deadline = time.time() + self.stage_timeout
            while self.api.task_instances("drift_retrain", run_id).get("monitor.schedule") != "success":
                if time.time() > deadline or self.api.run("drift_retrain", run_id)["state"] in ("success", "failed"):
                    raise StageFailed(f"drift_retrain {run_id}: monitor.schedule did not succeed")
                time.sleep(2)
        execution = _post(f"{self.stack.sagemaker_url}/local/monitoring-schedules/{name}/executions", {})
        sagemaker = self.aws("sagemaker")
        deadline = time.time() + self.stage_timeout
        while True:
            summary = sagemaker.describe_monitoring_schedule(MonitoringScheduleName=name).get(
                "LastMonitoringExecutionSummary", {})
            if summary.get("MonitoringExecutionStatus") in ("Completed", "CompletedWithViolations", "Failed",
                                                            "Stopped"):
                break
            if time.time() > deadline:
                raise TimeoutError(f"monitoring execution of {name} still running")
            time.sleep(2)
        self.say(f"   monitoring execution (run now): {summary.get('MonitoringExecutionStatus')} "
                 f"{summary.get('ProcessingJobArn', '').rsplit('/', 1)[-1]} {execution.get('ScheduledTime', '')}")
        return summary

    def drift_traffic(self, video_ids: list[str]) -> int:
        with self.stage("drift traffic -> endpoint (InferenceId = frame key)") as stage:
            started = time.time()
            s3, runtime = self.aws("s3"), self.aws("sagemaker-runtime")
            frames = []
            for video_id in video_ids:
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.frames_bucket,
                                                                        Prefix=f"frames/{video_id}/"):
                    frames += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jpg")]
            bodies = {key: s3.get_object(Bucket=self.config.frames_bucket, Key=key)["Body"].read() for key in frames}
            sent = 0
            for _ in range(self.data.drift_repeat):
                for key, body in bodies.items():
                    runtime.invoke_endpoint(EndpointName=self.config.endpoint_name, ContentType="image/jpeg",
                                            Body=body, InferenceId=key)
                    sent += 1
            self.say(f"   {sent} requests ({len(bodies)} frames x {self.data.drift_repeat})")
            landed = self.wait_for_capture(set(bodies), sent, started)
            self.say(f"   data capture: {landed} of the {sent} records in S3 "
                     f"(s3://{self.config.models_bucket}/{capture_prefix(self.config)})")
            stage.detail = f"{sent} requests, {landed} captured"
            return sent

    def wait_for_capture(self, inference_ids: set[str], count: int, since: float, timeout: float = 60.0) -> int:
        """The captured records of these requests in S3 (the monitor reads only what has landed there): waits until
        ``count`` of them are, or ``timeout``; returns how many are."""
        s3, bucket = self.aws("s3"), self.config.models_bucket
        hours = {time.strftime("%Y/%m/%d/%H", time.gmtime(t)) for t in (since, time.time())}
        deadline, found, read = time.time() + timeout, 0, set()
        while True:
            for hour in sorted(hours):
                prefix = f"{capture_prefix(self.config)}AllTraffic/{hour}/"
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                    for item in page.get("Contents", []):
                        if item["Key"] in read or item["LastModified"].timestamp() < since - 1:
                            continue
                        read.add(item["Key"])
                        for line in s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().splitlines():
                            if json.loads(line).get("eventMetadata", {}).get("inferenceId") in inference_ids:
                                found += 1
            if found >= count or time.time() > deadline:
                return found
            time.sleep(1)

    def alarm(self) -> dict:
        """The monitor on the drift traffic -> metrics -> alarm -> EventBridge -> the trigger Lambda -> a drift_retrain
        run with the alarm's reason. Model Monitor: the schedule runs now and publishes the metrics. Processing
        backend: the hourly drift_retrain (triggered now) runs the monitor job, publishes its metrics, finds the drift
        and relabels; the alarm's own run follows (its relabel finds the frames already labeled and skips)."""
        title = ("monitor run-now -> alarm -> EventBridge -> Lambda -> drift_retrain" if self.model_monitor else
                 "drift_retrain (hourly, now): monitor job -> metrics -> alarm -> Lambda -> drift_retrain")
        with self.stage(title) as stage:
            hourly = None
            if self.model_monitor:
                summary = self.run_schedule_now()
            else:
                hourly = self.hourly_check(stage)
                summary = self.xcom("drift_retrain", hourly["dag_run_id"], "monitor.run_monitor") or {}
                found = self.xcom("drift_retrain", hourly["dag_run_id"], "assess") or {}
                self.say(f"   hourly verdict: drift {found.get('drift')}; causes: {found.get('causes')}")
            changes = _post(f"{self.stack.moto_url}/local/alarms/evaluate", {})
            self.say(f"   alarms evaluated now: {json.dumps(changes)[:400]}")
            # The alarm's run: raised by this monitor's metrics, or earlier (an alarm fires once per state change: the
            # normal-traffic check may already have raised it, and its run is the one the Lambda started then).
            alarm_run = self.new_run("drift_retrain", lambda r: r["dag_run_id"].startswith("drift_alarm__"),
                                     timeout=120)
            run = self.finish("drift_retrain", alarm_run, stage)
            self.say(f"   trigger (the Lambda's conf): alarm {run['conf'].get('alarm_name')} at "
                     f"{run['conf'].get('state_changed_at')}: {run['conf'].get('state_reason', '')[:200]}")
            alarm_verdict = self.xcom("drift_retrain", run["dag_run_id"], "assess") or {}
            self.say(f"   alarm run's verdict: drift {alarm_verdict.get('drift')}; "
                     f"causes: {alarm_verdict.get('causes')}")
            # The run whose relabel carries the drifted videos: the hourly run with the Processing backend (it judged
            # the drift traffic's window), the alarm's run with Model Monitor.
            primary = hourly or run
            rid = primary["dag_run_id"]
            verdict = self.xcom("drift_retrain", rid, "assess") or {}
            collected = self.xcom("drift_retrain", rid, "collect") or {}
            self.say(f"   relabel ({rid}): videos {collected.get('video_ids')}")
            stage.detail = f"drift {verdict.get('drift')}: {'; '.join(verdict.get('causes', []))[:80]}"
            result = {"run": run, "verdict": verdict, "collected": collected, "monitor": summary,
                      "alarm_changes": changes, "hourly_run": hourly, "alarm_verdict": alarm_verdict}
            self.facts["drift"] = result
            if not verdict.get("drift") or primary["tasks"].get("relabel") != "success":
                raise StageFailed(f"drift_retrain {rid} did not find drift and relabel: {primary['tasks']}")
            return result

    # --- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> bool:
        try:
            self.configure()
            with self.stage("generate videos (truth -> the stack's truth store)") as stage:
                d = self.data
                paths = self.generate("normal", d.videos, d.seconds, "case")
                stage.detail = f"{d.videos} x {d.seconds:g} s {d.width}x{d.height} @ {d.fps:g} fps"
            with self.stage("upload -> S3 raw bucket -> Lambda -> SQS"):
                video_ids = self.upload(paths)
                self.uploaded_at = self.last_upload_at
                self.facts["video_ids"] = video_ids
            self.ingest("ingest_and_extract (scheduled: cron */10, SQS sensor)", video_ids, trigger_after=60)
            self.labeling("labeling (frames Asset)")
            training = self.train("train_and_register (dataset Asset)")
            if not training["approved"]:
                raise StageFailed("the first model was rejected: nothing to deploy (see the promotion reasons)")
            self.deploy("deploy (approved_model Asset)")
            self.detect(video_ids[0])
            self.say(f"   upload -> endpoint answering: {self.answered_at - self.uploaded_at:.0f} s")

            with self.stage("drift videos: generate, upload, ingest (labeling paused)") as stage:
                self.pause("labeling", True)
                drift_paths = []
                for i, scenario in enumerate(self.data.drift_scenarios):
                    drift_paths += self.generate(scenario, 1, self.data.drift_seconds, f"drift{scenario}{i}")
                drift_ids = self.upload(drift_paths)
                self.facts["drift_video_ids"] = drift_ids
            self.ingest("ingest_and_extract (drift videos)", drift_ids, trigger_after=5)
            self.pause("labeling", False)
            self.mark_runs("labeling", "train_and_register", "deploy")
            self.drift_check()
            self.drift_traffic(drift_ids)
            drift = self.alarm()
            # the run whose relabel labels the drifted frames: the hourly run that found the drift first (Processing
            # backend), else the alarm's run
            relabel_id = f"drift__{(drift['hourly_run'] or drift['run'])['dag_run_id']}"
            if not self.retrain:
                with self.stage("relabel run created by drift_retrain"):
                    run = self.new_run("labeling", lambda r: r["dag_run_id"] == relabel_id, timeout=60)
                    self.facts["relabel_run"] = run
                return True
            self.labeling("relabel (labeling, triggered by drift_retrain)", lambda r: r["dag_run_id"] == relabel_id)
            retrained = self.train("retrain (train_and_register, dataset Asset)")
            if retrained["approved"]:
                self.deploy("redeploy (deploy, approved_model Asset)")
                self.detect(video_ids[0])
            else:
                self.say("   the retrained model was rejected by the promotion rule: the endpoint keeps the champion")
            return True
        except StageFailed as exc:
            self.say(f"\nSTOPPED: {exc}")
            return False
        finally:
            try:
                self.pause("labeling", False)
            except (AirflowApiError, OSError):
                pass

    def table(self) -> str:
        lines = [f"{'stage':<62} {'result':<6} {'wall s':>7}  details", "-" * 120]
        for s in self.stages:
            lines.append(f"{s.name[:62]:<62} {'ok' if s.ok else 'FAILED':<6} {s.seconds:>7.1f}  "
                         f"{(s.run + ' ' if s.run else '')}{s.detail}"[:250])
        total = sum(s.seconds for s in self.stages)
        lines.append("-" * 120)
        lines.append(f"{'whole loop':<62} {'':<6} {total:>7.1f}")
        if self.uploaded_at and self.answered_at:
            lines.append(f"{'upload -> endpoint answering through the gateway':<62} {'':<6} "
                         f"{self.answered_at - self.uploaded_at:>7.1f}  (target <= 300 s)")
        return "\n".join(lines)


@contextmanager
def annotators(stack_settings: StackSettings, backend: str) -> Iterator[None]:
    """With Label Studio, the simulated annotators work its tasks in a thread while the loop runs."""
    if backend != "label_studio":
        yield
        return
    from local_aws.label_studio import workforce

    stop = threading.Event()
    thread = threading.Thread(target=workforce.run, args=(stack_settings, stop), name="label-studio-workforce",
                              daemon=True)
    thread.start()
    print("   simulated annotators working Label Studio's tasks (local_aws.label_studio.workforce)")
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def fresh_start(stack_settings: StackSettings, airflow: AirflowSettings, label_studio_data: bool = False) -> None:
    """The demo shows the pipeline from an empty registry: a champion left by an earlier demo would (rightly) reject
    this run's first model. The previous demo's services are stopped and its state removed (S3 is moto's memory; the
    local SageMaker keeps its resources in ``sagemaker/``, Airflow its runs in ``airflow/``); the truth store, the
    generated videos' cache and the benchmarks' caches stay. ``label_studio_data`` (the Label Studio backend): its
    projects go too (their frames were in the old S3), its credentials stay and it recreates its admin at start."""
    import shutil

    airflow_services.down(airflow)
    stack.down(stack_settings)
    paths = [stack_settings.home / "sagemaker", airflow.home]
    if label_studio_data:
        label_studio.down(stack_settings)
        paths.append(label_studio.home(stack_settings) / "data")
    removed = [path for path in paths if path.exists()]
    for path in removed:
        shutil.rmtree(path)
    if removed:
        print(f"[fresh start] removed the previous demo's state: {', '.join(str(p) for p in removed)} "
              f"(--keep-state keeps it)")


def least_privilege(settings: StackSettings) -> bool:
    """Print the least-privilege report of the run (tools/iam_usage.py): per role, used vs granted; False when a
    role was refused something it needs."""
    from tools import iam_usage

    usages = iam_usage.stack_usage(settings)
    print(f"\n== least privilege (IAM enforced; every decision in {settings.iam_decisions})\n"
          + iam_usage.report(usages))
    return not any(u.missing for u in usages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--no-retrain", action="store_true", help="stop once drift_retrain sent the videos back")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the previous demo's registry, endpoints and Airflow runs (default: start afresh)")
    parser.add_argument("--labeling-backend", choices=LABELING_BACKENDS, default=LABELING_BACKENDS[0],
                        help="who labels: Label Studio with simulated annotators (default) or the local Ground Truth "
                             "(an opt-in: closed to new AWS customers)")
    parser.add_argument("--monitoring-backend", choices=MONITORING_BACKENDS, default=MONITORING_BACKENDS[0],
                        help="the drift monitor: a Processing job run by drift_retrain (default) or a Model Monitor "
                             "schedule (an opt-in: closed to new AWS customers)")
    args = parser.parse_args(argv)
    # The local SageMaker refuses the closed services the way a new account is refused; an opt-in backend makes the
    # demo's account an existing customer of that service.
    opted = {backend for backend in (args.labeling_backend, args.monitoring_backend) if backend in CLOSED_SERVICES}
    if opted:
        os.environ[OPT_INS_ENV] = ",".join(sorted(opted))
        print(f"[set-up] {OPT_INS_ENV}={os.environ[OPT_INS_ENV]}: the local SageMaker acts as an account that still "
              "has these services (closed to new AWS customers)")
    stack_settings = load_settings()
    airflow = airflow_services.load_airflow_settings(stack_settings)
    if not args.keep_state:
        fresh_start(stack_settings, airflow, label_studio_data=args.labeling_backend == "label_studio")
    started = time.time()
    data = DemoData()
    data = replace(data, pipeline_config={**data.pipeline_config, "labeling_backend": args.labeling_backend,
                                          "monitoring_backend": args.monitoring_backend})
    print(f"[set-up] labeling backend {args.labeling_backend}, drift monitor backend {args.monitoring_backend}")
    print("[set-up] the local AWS stack, " + ("Label Studio (before Airflow: the workers read its connection from "
                                             "the environment), " if args.labeling_backend == "label_studio" else "")
          + "the Airflow services (scheduler, dag-processor, triggerer, api-server)")
    bring_up(stack_settings, airflow, labeling_backend=args.labeling_backend)
    print(f"   up in {time.time() - started:.0f} s")
    loop = Loop(stack_settings, airflow, data, retrain=not args.no_retrain)
    with annotators(stack_settings, args.labeling_backend):
        ok = loop.run()
    print("\n== summary\n" + loop.table())
    if iam_enforced():
        ok = least_privilege(stack_settings) and ok
    trainings = loop.facts.get("trainings", [])
    print(f"\nAirflow UI:  {airflow.url}  (user {airflow.username!r}, password {airflow.password()!r}; "
          f"also in {airflow.env_file})")
    print(f"API:         POST {stack_settings.api_gateway_url}/detect  body {{\"image\": <base64 JPEG>}}")
    if args.labeling_backend == "label_studio":
        print(f"Label Studio: {label_studio.url(stack_settings)}  (login {label_studio.ADMIN_EMAIL}, password in "
              f"{label_studio.home(stack_settings) / 'credentials.env'}; one project per labeling round)")
    for t in trainings:
        print(f"Report:      {t['candidate'].get('report_uri')}  ->  {t['report_link']}  "
              f"(train_and_register {t['run_id']}, task fit.train, extra link 'Model report')")
    print(f"Shell:       source {stack_settings.env_file}; source {airflow.env_file}")
    print("Stop:        make demo-down")
    print("RESULT: " + ("every stage finished" if ok else "a stage FAILED (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
