"""Job runners: processing and training jobs as processes that follow the SageMaker container contract.

Each job gets a root folder that stands in for ``/opt/ml``: inputs are downloaded from S3 into it, the config files
SageMaker writes are written into it, the container's entrypoint runs as a process (own process group) with paths
under ``/opt/ml`` mapped to the root and the ``SM_*`` variables set, its output lines go to CloudWatch Logs, and on
exit the outputs are uploaded to S3 and the job's description is updated: ``/opt/ml/output/failure`` becomes the
``FailureReason``, a non-zero exit fails the job, ``MaxRuntimeInSeconds`` and StopXxxJob end it as AWS does.
Jobs share a bounded pool sized for this machine; a queued job stays ``InProgress`` and says it is waiting.
With ``LOCAL_AWS_IAM=enforce`` a job runs as its ``RoleArn``, as SageMaker runs it with the execution role: the
container gets the role's temporary credentials and the inputs and outputs move through S3 with them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from local_aws.sagemaker import authz
from local_aws.sagemaker.containers import ContainerImage, ContainerRegistry
from local_aws.sagemaker.logs import LogStream
from local_aws.sagemaker.resources import Resources, now
from local_aws.settings import StackSettings, iam_enforced

log = logging.getLogger("local_aws.sagemaker.runners")
RESTART_REASON = "InternalServerError: the local SageMaker service restarted while this {what} was running"
OPT_ML = "/opt/ml"
STOP_GRACE_S = 10


# -- S3 transfers --------------------------------------------------------------------------------------------------
class InputError(Exception):
    """An input cannot be downloaded (a bad manifest, a missing object): ``str(exc)`` says why."""


MANIFEST_SHAPE = 'a JSON array whose first element is {"prefix": "s3://bucket/prefix/"} followed by object keys ' \
                 'relative to that prefix'


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def download_prefix(s3: Any, uri: str, dest: Path) -> int:
    """S3Prefix semantics: every object under the prefix, at its path relative to the prefix. Returns the count."""
    bucket, prefix = split_s3(uri)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(prefix):].lstrip("/") or Path(obj["Key"]).name
            if obj["Key"].endswith("/"):
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    return count


def download_manifest(s3: Any, uri: str, dest: Path) -> int:
    """ManifestFile semantics: the manifest at ``uri`` is ``[{"prefix": "s3://b/p/"}, "key1", ...]``; each object
    ``<prefix><key>`` is downloaded to ``dest/<key>``. Returns the count; raises :class:`InputError` for a manifest
    that cannot be read or is not of that shape, or that names a missing object."""
    bucket, key = split_s3(uri)
    try:
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        raise InputError(f"cannot read the manifest {uri}: {exc.response['Error'].get('Code', 'Error')}") from exc
    except ValueError as exc:
        raise InputError(f"the manifest {uri} is not JSON ({exc}): expected {MANIFEST_SHAPE}") from exc
    head = manifest[0] if isinstance(manifest, list) and manifest else None
    if not isinstance(head, dict) or set(head) != {"prefix"} or not str(head["prefix"]).startswith("s3://"):
        raise InputError(f"the manifest {uri} does not start with a prefix: expected {MANIFEST_SHAPE}")
    prefix_bucket, prefix = split_s3(head["prefix"])
    for index, relative in enumerate(manifest[1:], start=2):
        if not isinstance(relative, str) or not relative or relative.startswith("/") or relative.endswith("/") \
                or ".." in relative.split("/"):
            raise InputError(f"the manifest {uri}: element {index} ({json.dumps(relative)[:200]}) is not an object "
                             f"key relative to the prefix: expected {MANIFEST_SHAPE}")
    dest.mkdir(parents=True, exist_ok=True)
    for relative in manifest[1:]:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            s3.download_file(prefix_bucket, prefix + relative, str(target))
        except ClientError as exc:
            code = exc.response["Error"].get("Code", "Error")
            raise InputError(f"the manifest {uri} names s3://{prefix_bucket}/{prefix}{relative}, which cannot be "
                             f"downloaded ({'NoSuchKey' if code in ('404', 'NoSuchKey') else code})") from exc
    return len(manifest) - 1


def upload_folder(s3: Any, folder: Path, uri: str) -> int:
    bucket, prefix = split_s3(uri)
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(folder).as_posix()]))
        s3.upload_file(str(path), bucket, key)
        count += 1
    return count


def tar_folder(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return target


# -- one container process -----------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    exit_code: int | None
    ended_by: str  # "exit" | "max_runtime" | "stop"


class ContainerProcess:
    """A container entrypoint as a process group, its lines to a log stream and to ``on_line``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_stream: LogStream,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.argv, self.env, self.cwd, self.log, self.on_line = argv, env, cwd, log_stream, on_line
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = threading.Event()

    def run(self, max_runtime_s: float | None) -> RunOutcome:
        self._proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        reader = threading.Thread(target=self._pump, daemon=True)
        reader.start()
        ended_by = "exit"
        try:
            self._proc.wait(timeout=max_runtime_s)
        except subprocess.TimeoutExpired:
            ended_by = "max_runtime"
            self._terminate()
        reader.join(timeout=10)
        self.log.flush()
        if self._stopped.is_set() and ended_by == "exit":
            ended_by = "stop"
        return RunOutcome(self._proc.returncode, ended_by)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        self._stopped.set()
        self._terminate(grace_s)

    def _terminate(self, grace_s: float = STOP_GRACE_S) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the container gets SIGTERM, then SIGKILL, as docker stop does
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.write(line)
            if self.on_line:
                self.on_line(line)


# -- the contract --------------------------------------------------------------------------------------------------
def local_path(root: Path, container_path: str) -> Path:
    """Where a path of the container's ``/opt/ml`` lives on this machine."""
    if container_path == OPT_ML or container_path.startswith(OPT_ML + "/"):
        return root / container_path[len(OPT_ML):].lstrip("/")
    return root / "rootfs" / container_path.lstrip("/")


def map_value(root: Path, value: str) -> str:
    return str(local_path(root, value)) if value.startswith(OPT_ML) else value


def failure_reason(root: Path, outcome: RunOutcome) -> str:
    failure = root / "output" / "failure"
    if failure.exists() and failure.read_text().strip():
        return f"AlgorithmError: {failure.read_text().strip()[:1024]}"
    return f"AlgorithmError: See job logs for more information (exit code {outcome.exit_code})"


def exit_message(root: Path) -> str | None:
    """``/opt/ml/output/message``: the first KB becomes the job's ``ExitMessage``."""
    message = root / "output" / "message"
    return message.read_bytes()[:1024].decode(errors="replace") if message.exists() else None


def base_environment(root: Path, image: ContainerImage, job_env: dict[str, str]) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME") if k in os.environ}
    # The job's own AWS calls go to the same endpoints as ours (on AWS: the region's endpoints).
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    env.update({k: map_value(root, v) for k, v in image.env.items()})
    env.update({k: map_value(root, v) for k, v in job_env.items()})
    env["SM_OUTPUT_DIR"] = str(root / "output")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class JobRunner:
    """Runs processing and training jobs in a bounded pool; updates their descriptions as they go."""

    def __init__(self, resources: Resources, registry: ContainerRegistry, settings: StackSettings,
                 max_parallel: int | None = None) -> None:
        self.resources, self.registry, self.settings = resources, registry, settings
        self._slots = threading.BoundedSemaphore(max_parallel or int(os.environ.get("LOCAL_SAGEMAKER_SLOTS", "2")))
        self._processes: dict[tuple[str, str], ContainerProcess] = {}
        self._stop_requested: set[tuple[str, str]] = set()
        self._shutting_down = threading.Event()
        self._lock = threading.Lock()
        self._s3 = boto3.client("s3")

    def shutdown(self) -> None:
        """Stop every running container (the service is going away)."""
        self._shutting_down.set()
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            process.stop(grace_s=2)

    def role_session(self, job: dict[str, Any]) -> tuple[dict[str, str], Any]:
        """(the container's credential variables, the S3 client for the job's transfers): the job's role in enforce
        mode (raises :class:`authz.RoleAssumptionError`), else nothing and the service's own client."""
        if not iam_enforced():
            return {}, self._s3
        credentials = authz.role_credentials(job["RoleArn"])
        return credentials, authz.s3_client(credentials)

    def _assume_or_fail(self, kind: str, name: str, job: dict[str, Any], stream: LogStream,
                        end_member: str) -> tuple[dict[str, str], Any] | None:
        try:
            return self.role_session(job)
        except authz.RoleAssumptionError as exc:  # the role went away or stopped trusting SageMaker since creation
            reason = f"ClientError: {exc}"
            stream.write(reason)
            stream.flush()
            self._finish(kind, name, "Failed", reason[:1024], **{end_member: now()})
            return None

    def job_root(self, kind: str, name: str) -> Path:
        return self.settings.home / "sagemaker" / "jobs" / kind / name

    def start(self, kind: str, name: str, on_done: Callable[[dict[str, Any]], None] | None = None) -> None:
        target = {"ProcessingJob": self._run_processing, "TrainingJob": self._run_training}[kind]
        thread = threading.Thread(target=self._guarded, args=(kind, name, target, on_done), daemon=True,
                                  name=f"{kind}:{name}")
        thread.start()

    def stop(self, kind: str, name: str) -> None:
        with self._lock:
            self._stop_requested.add((kind, name))
            process = self._processes.get((kind, name))
        if process:
            process.stop()

    def _stopping(self, kind: str, name: str) -> bool:
        with self._lock:
            return (kind, name) in self._stop_requested

    def _guarded(self, kind: str, name: str, target: Callable[[str], None],
                 on_done: Callable[[dict[str, Any]], None] | None) -> None:
        try:
            with self._slots:
                if not self._stopping(kind, name):
                    target(name)
                else:
                    self._finish(kind, name, "Stopped", "Stopped by request before it started")
        except Exception as exc:  # a runner bug must fail the job, not leave it InProgress forever
            log.exception("%s %s failed in the runner", kind, name)
            self._finish(kind, name, "Failed", f"InternalServerError: local runner error: {exc}")
        finally:
            with self._lock:
                self._processes.pop((kind, name), None)
                self._stop_requested.discard((kind, name))
            if on_done:
                on_done(self.resources.describe(kind, name))

    def _finish(self, kind: str, name: str, status: str, reason: str | None, **extra: Any) -> None:
        status_member = f"{kind}Status"
        if self._shutting_down.is_set() and status != "Completed":
            # Its container was killed because the service is stopping: not a stop the user asked for.
            status, reason = "Failed", RESTART_REASON.format(what="job")

        def change(d: dict[str, Any]) -> None:
            d[status_member] = status
            d["LastModifiedTime"] = now()
            if reason:
                d["FailureReason"] = reason
            d.update(extra)

        self.resources.update(kind, name, change)

    def _execute(self, kind: str, name: str, root: Path, image: ContainerImage, argv: list[str],
                 env: dict[str, str], log_stream: LogStream, max_runtime: float | None,
                 on_line: Callable[[str], None] | None = None) -> RunOutcome:
        cwd = image.workdir if image.workdir and image.workdir.exists() else root
        process = ContainerProcess(argv, env, cwd, log_stream, on_line)
        with self._lock:
            if (kind, name) in self._stop_requested:
                return RunOutcome(None, "stop")
            self._processes[(kind, name)] = process
        return process.run(max_runtime)

    # -- processing -------------------------------------------------------------------------------------------------
    def _run_processing(self, name: str) -> None:
        job = self.resources.describe("ProcessingJob", name)
        root = self.job_root("ProcessingJob", name)
        shutil.rmtree(root, ignore_errors=True)
        (root / "output").mkdir(parents=True)
        app = job["AppSpecification"]
        image = self.registry.resolve(app["ImageUri"])
        started = now()
        self.resources.update("ProcessingJob", name,
                              lambda d: d.update(ProcessingStartTime=started, LastModifiedTime=started))
        stream = LogStream("/aws/sagemaker/ProcessingJobs", f"{name}/algo-1-{int(started)}")
        stream.write(f"local SageMaker: processing job {name} on {image.repository} ({image.folder.name})")
        session = self._assume_or_fail("ProcessingJob", name, job, stream, "ProcessingEndTime")
        if session is None:
            return
        credentials, s3 = session
        for item in job.get("ProcessingInputs", []):
            s3_input = item.get("S3Input")
            if s3_input:
                download = download_manifest if s3_input.get("S3DataType") == "ManifestFile" else download_prefix
                try:
                    count = download(s3, s3_input["S3Uri"], local_path(root, s3_input["LocalPath"]))
                except InputError as exc:  # as AWS: the job fails before its container starts
                    reason = f"ClientError: ProcessingInput {item['InputName']}: {exc}"
                    stream.write(reason)
                    stream.flush()
                    self._finish("ProcessingJob", name, "Failed", reason[:1024], ProcessingEndTime=now())
                    return
                stream.write(f"input {item['InputName']}: {count} object(s) -> {s3_input['LocalPath']}")
        outputs = job.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            if "S3Output" in item:
                local_path(root, item["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
        config_dir = root / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "processingjobconfig.json").write_text(json.dumps(job, default=str))
        (config_dir / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
        argv = image.command([map_value(root, a) for a in app.get("ContainerEntrypoint", [])] or None,
                             [map_value(root, a) for a in app.get("ContainerArguments", [])])
        env = base_environment(root, image, job.get("Environment", {}))
        env.update(credentials)
        env["PROCESSING_JOB_NAME"] = name
        max_runtime = job.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        outcome = self._execute("ProcessingJob", name, root, image, argv, env, stream, max_runtime)
        ended = now()
        message = exit_message(root)
        extra = {"ProcessingEndTime": ended, **({"ExitMessage": message} if message else {})}
        if outcome.ended_by == "stop":
            self._finish("ProcessingJob", name, "Stopped", "Processing job stopped by request (StopProcessingJob)",
                         **extra)
        elif outcome.ended_by == "max_runtime":
            self._finish("ProcessingJob", name, "Stopped",
                         f"MaxRuntimeExceeded: the processing job ran longer than MaxRuntimeInSeconds ({max_runtime})",
                         **extra)
        elif outcome.exit_code != 0:
            self._finish("ProcessingJob", name, "Failed", failure_reason(root, outcome), **extra)
        else:
            for item in outputs:
                if "S3Output" in item:
                    out = item["S3Output"]
                    count = upload_folder(s3, local_path(root, out["LocalPath"]), out["S3Uri"])
                    stream.write(f"output {item['OutputName']}: {count} object(s) -> {out['S3Uri']}")
            stream.flush()
            self._finish("ProcessingJob", name, "Completed", None, **extra)

    # -- training ---------------------------------------------------------------------------------------------------
    def _secondary(self, name: str, status: str, message: str) -> None:
        t = now()

        def change(d: dict[str, Any]) -> None:
            transitions = d.setdefault("SecondaryStatusTransitions", [])
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = t
            transitions.append({"Status": status, "StartTime": t, "StatusMessage": message})
            d["SecondaryStatus"] = status
            d["LastModifiedTime"] = t

        self.resources.update("TrainingJob", name, change)

    def _run_training(self, name: str) -> None:
        job = self.resources.describe("TrainingJob", name)
        root = self.job_root("TrainingJob", name)
        shutil.rmtree(root, ignore_errors=True)
        for sub in ("model", "output/data", "input/config", "input/data"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        spec = job["AlgorithmSpecification"]
        image = self.registry.resolve(spec["TrainingImage"])
        started = now()
        self.resources.update("TrainingJob", name,
                              lambda d: d.update(TrainingStartTime=started, LastModifiedTime=started))
        self._secondary(name, "Starting", "Preparing the instances for training")
        stream = LogStream("/aws/sagemaker/TrainingJobs", f"{name}/algo-1-{int(started)}")
        session = self._assume_or_fail("TrainingJob", name, job, stream, "TrainingEndTime")
        if session is None:
            return
        credentials, s3 = session
        self._secondary(name, "Downloading", "Downloading input data")
        channels = []
        for channel in job.get("InputDataConfig", []):
            source = channel["DataSource"].get("S3DataSource")
            if source:
                count = download_prefix(s3, source["S3Uri"], root / "input" / "data" / channel["ChannelName"])
                stream.write(f"channel {channel['ChannelName']}: {count} object(s) downloaded")
            channels.append(channel["ChannelName"])
        checkpoint = job.get("CheckpointConfig")
        checkpoint_dir = local_path(root, (checkpoint or {}).get("LocalPath", "/opt/ml/checkpoints"))
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint:
            count = download_prefix(s3, checkpoint["S3Uri"], checkpoint_dir)
            stream.write(f"checkpoints: {count} object(s) restored from {checkpoint['S3Uri']}")
        hyperparameters = job.get("HyperParameters", {})
        config = root / "input" / "config"
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        (config / "inputdataconfig.json").write_text(json.dumps(
            {c["ChannelName"]: {k: v for k, v in c.items() if k != "ChannelName" and k != "DataSource"}
             for c in job.get("InputDataConfig", [])}))
        resource_config = {"current_host": "algo-1", "current_instance_type": job["ResourceConfig"]["InstanceType"],
                           "current_group_name": "homogeneousCluster", "hosts": ["algo-1"],
                           "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                                "instance_type": job["ResourceConfig"]["InstanceType"],
                                                "hosts": ["algo-1"]}],
                           "network_interface_name": "lo"}
        (config / "resourceconfig.json").write_text(json.dumps(resource_config))
        env = base_environment(root, image, job.get("Environment", {}))
        env.update(credentials)
        env.update(training_environment(root, name, job, channels, checkpoint_dir))
        metrics = MetricCollector(spec.get("MetricDefinitions", []))
        self._secondary(name, "Training", "Training image download completed. Training in progress.")
        max_runtime = job.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        outcome = self._execute("TrainingJob", name, root, image, image.command(None, ["train"]), env, stream,
                                max_runtime, on_line=metrics.feed)
        if checkpoint:  # saved whatever the outcome: a stopped job resumes from them
            upload_folder(s3, checkpoint_dir, checkpoint["S3Uri"])
        ended = now()
        final = {"FinalMetricDataList": metrics.final(), "TrainingEndTime": ended,
                 "TrainingTimeInSeconds": int(ended - started), "BillableTimeInSeconds": max(1, int(ended - started))}
        if (outcome.ended_by == "exit" and outcome.exit_code == 0) or outcome.ended_by == "max_runtime":
            self._secondary(name, "Uploading", "Uploading generated training model")
            artifacts = self._upload_training_outputs(root, name, job, s3)
            final["ModelArtifacts"] = {"S3ModelArtifacts": artifacts}
        if outcome.ended_by == "stop":
            self._secondary(name, "Stopped", "Training job stopped")
            self._finish("TrainingJob", name, "Stopped", "Training job stopped by request (StopTrainingJob)", **final)
        elif outcome.ended_by == "max_runtime":
            reason = f"MaxRuntimeExceeded: the training job ran longer than MaxRuntimeInSeconds ({max_runtime})"
            self._secondary(name, "MaxRuntimeExceeded",
                            "The job stopped because it exceeded the maximum allowed runtime")
            self._finish("TrainingJob", name, "Stopped", reason, **final)
        elif outcome.exit_code != 0:
            reason = failure_reason(root, outcome)
            self._secondary(name, "Failed", "Training job failed")
            self._finish("TrainingJob", name, "Failed", reason, **final)
        else:
            self._secondary(name, "Completed", "Training job completed")
            self._finish("TrainingJob", name, "Completed", None, **final)
        self._close_transitions(name)

    def _close_transitions(self, name: str) -> None:
        def change(d: dict[str, Any]) -> None:
            transitions = d.get("SecondaryStatusTransitions", [])
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = d.get("TrainingEndTime", now())

        self.resources.update("TrainingJob", name, change)

    def _upload_training_outputs(self, root: Path, name: str, job: dict[str, Any], s3: Any) -> str:
        output_path = job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        bucket, prefix = split_s3(f"{output_path}/{name}/output")
        model_tar = tar_folder(root / "model", root / "model.tar.gz")
        s3.upload_file(str(model_tar), bucket, f"{prefix}/model.tar.gz")
        if any((root / "output" / "data").iterdir()):
            data_tar = tar_folder(root / "output" / "data", root / "output.tar.gz")
            s3.upload_file(str(data_tar), bucket, f"{prefix}/output.tar.gz")
        return f"s3://{bucket}/{prefix}/model.tar.gz"


def training_environment(root: Path, name: str, job: dict[str, Any], channels: list[str],
                         checkpoint_dir: Path) -> dict[str, str]:
    """The variables the SageMaker training toolkit sets in a training container, at this job's paths."""
    hyperparameters = job.get("HyperParameters", {})
    decoded = {k: _decode(v) for k, v in hyperparameters.items()}
    env = {
        "TRAINING_JOB_NAME": name,
        "TRAINING_JOB_ARN": job["TrainingJobArn"],
        "SM_MODEL_DIR": str(root / "model"),
        "SM_INPUT_DIR": str(root / "input"),
        "SM_INPUT_DATA_DIR": str(root / "input" / "data"),
        "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_CHECKPOINT_DIR": str(checkpoint_dir),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_HPS": json.dumps(decoded),
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
        "SM_LOG_LEVEL": "20",
    }
    for channel in channels:
        env[f"SM_CHANNEL_{channel.upper()}"] = str(root / "input" / "data" / channel)
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = str(value)  # the toolkit keeps hyphens
    return env


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


class MetricCollector:
    """``MetricDefinitions`` regexes over the log lines: the last value of each metric, as AWS reports them."""

    def __init__(self, definitions: list[dict[str, str]]) -> None:
        self._patterns = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
        self.latest: dict[str, tuple[float, float]] = {}

    def feed(self, line: str) -> None:
        for metric, pattern in self._patterns:
            match = pattern.search(line)
            if match:
                try:
                    self.latest[metric] = (float(match.group(1)), now())
                except (IndexError, ValueError):
                    continue

    def final(self) -> list[dict[str, Any]]:
        return [{"MetricName": k, "Value": v, "Timestamp": t} for k, (v, t) in sorted(self.latest.items())]
