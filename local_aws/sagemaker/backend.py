"""The SageMaker operations: what each call does to the resources, and the lifecycles it starts.

``SageMakerBackend.dispatch(operation, request)`` is called by the wire protocol after validation. Describe, List,
Delete and tags are shared by every kind (``resources``); this module holds the creates, updates, stops and the
state machines (jobs via ``runners``, endpoints via ``endpoints``, tuning jobs here on top of training jobs).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import random
import threading
from collections.abc import Callable
from typing import Any

from local_aws.sagemaker.containers import ContainerRegistry
from local_aws.sagemaker.endpoints import EndpointRuntime
from local_aws.sagemaker.exceptions import (
    AccessDeniedException,
    ConflictException,
    ResourceInUse,
    ResourceLimitExceeded,
    ResourceNotFound,
    SageMakerError,
    UnknownOperation,
    ValidationException,
)
from local_aws.sagemaker.labeling import LabelingRunner
from local_aws.sagemaker.monitoring import MonitoringService, validate_schedule_config
from local_aws.sagemaker.resources import KINDS, Resources, now
from local_aws.sagemaker.runners import RESTART_REASON, JobRunner
from local_aws.sagemaker.store import Store
from local_aws.settings import ACCOUNT_ID, REGION, StackSettings

log = logging.getLogger("local_aws.sagemaker.backend")
# Job kinds whose state machine is "InProgress -> Completed | Failed | Stopping -> Stopped".
JOB_KINDS = ("ProcessingJob", "TrainingJob", "HyperParameterTuningJob", "LabelingJob")
# Services closed to new AWS customers (2026), by the operations that start using them. An account opened today is
# refused; LOCAL_SAGEMAKER_OPT_INS (comma-separated keys of this table) emulates an existing customer who has them.
OPT_INS_ENV = "LOCAL_SAGEMAKER_OPT_INS"
CLOSED_SERVICES = {
    "ground_truth": ("Amazon SageMaker Ground Truth", (
        "CreateLabelingJob", "CreateWorkteam", "CreateWorkforce")),
    "model_monitor": ("Amazon SageMaker Model Monitor", (
        "CreateMonitoringSchedule", "CreateDataQualityJobDefinition", "CreateModelQualityJobDefinition",
        "CreateModelBiasJobDefinition", "CreateModelExplainabilityJobDefinition")),
}
MAX_TUNING_TRIALS = 500


def opt_ins(environ: dict[str, str] | None = None) -> set[str]:
    raw = (os.environ if environ is None else environ).get(OPT_INS_ENV, "")
    chosen = {item.strip() for item in raw.split(",") if item.strip()}
    unknown = chosen - set(CLOSED_SERVICES)
    if unknown:
        raise ValueError(f"{OPT_INS_ENV}: unknown service(s) {sorted(unknown)}; known: {sorted(CLOSED_SERVICES)}")
    return chosen


def refuse_closed_service(operation: str) -> None:
    """An operation of a service closed to new customers, in an account that does not have it: refused."""
    for key, (service, operations) in CLOSED_SERVICES.items():
        if operation in operations and key not in opt_ins():
            raise AccessDeniedException(
                f"{service} is no longer open to new customers, and this account is not an existing customer: "
                f"{operation} is not allowed. (Local stack: {OPT_INS_ENV}={key} emulates an existing customer.)")


class SageMakerBackend:
    def __init__(self, settings: StackSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings.home / "sagemaker" / "state.db")
        self.resources = Resources(self.store)
        self.registry = ContainerRegistry(settings)
        self.jobs = JobRunner(self.resources, self.registry, settings)
        self.endpoints = EndpointRuntime(self.resources, self.registry, settings)
        self.labeling = LabelingRunner(self.resources, settings)
        self.monitoring = MonitoringService(self)
        self._tuning_lock = threading.Lock()

    # -- dispatch ---------------------------------------------------------------------------------------------------
    def dispatch(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        refuse_closed_service(operation)
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(self, f"op_{operation}", None)
        if handler is not None:
            return handler(request)
        for prefix, action in (("Describe", self._describe), ("List", self._list), ("Delete", self._delete)):
            kind = operation[len(prefix):]
            if operation.startswith(prefix) and kind in KINDS:
                return action(kind, request)
            if operation.startswith(prefix) and kind.endswith("s") and kind[:-1] in KINDS:
                return action(kind[:-1], request)
        raise UnknownOperation(f"Operation {operation} is not supported by the local SageMaker service.")

    def _describe(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        name = request[KINDS[kind].name_member]
        if kind == "ModelPackage":
            return self._package(name)
        return self.resources.describe(kind, name)

    def _list(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        return self.resources.list(kind, request)

    def _delete(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        self.resources.delete(kind, request[KINDS[kind].name_member])
        return {}

    # -- startup ----------------------------------------------------------------------------------------------------
    def recover(self) -> None:
        """After a restart: nothing stays InProgress forever, and InService endpoints serve again."""
        for kind in JOB_KINDS:
            status_member = KINDS[kind].status_member
            assert status_member
            for item in list(self.store.items(kind)):
                if item.get(status_member) in ("InProgress", "Stopping"):
                    name = item[KINDS[kind].name_member]

                    def fail(d: dict[str, Any], sm: str = status_member) -> None:
                        d[sm] = "Failed"
                        d["FailureReason"] = RESTART_REASON.format(what="job")
                        d["LastModifiedTime"] = now()
                        if "SecondaryStatus" in d:
                            d["SecondaryStatus"] = "Failed"

                    self.resources.update(kind, name, fail)
                    log.warning("%s %s was running when the service stopped: marked Failed", kind, name)
        for item in list(self.store.items("Endpoint")):
            name, status = item["EndpointName"], item["EndpointStatus"]
            if status in ("Creating", "Updating", "RollingBack", "SystemUpdating"):
                self.resources.update("Endpoint", name, lambda d: d.update(
                    EndpointStatus="Failed", FailureReason=RESTART_REASON.format(what="endpoint operation"),
                    LastModifiedTime=now()))
            if status in ("InService", "Updating", "SystemUpdating") and item.get("EndpointConfigName"):
                threading.Thread(target=self._restore_endpoint, args=(name, item["EndpointConfigName"]),
                                 daemon=True).start()
        self.monitoring.recover()

    def _restore_endpoint(self, name: str, config: str) -> None:
        try:
            self.endpoints.deploy(name, config)
            self.resources.update("Endpoint", name, lambda d: d.update(EndpointStatus="InService"))
        except Exception as exc:
            log.error("endpoint %s could not be restored: %s", name, exc)
            self._endpoint_failed(name, "Failed", str(exc))

    def shutdown(self) -> None:
        self.monitoring.stop()
        self.jobs.shutdown()
        self.endpoints.shutdown()

    # -- shared helpers ---------------------------------------------------------------------------------------------
    def _job_exists(self, kind: str, name: str) -> SageMakerError:
        arn = KINDS[kind].arn(name)
        if kind == "HyperParameterTuningJob":
            return ResourceInUse(f"A hyperparameter tuning job with the name, {name}, already exists. "
                                 "Choose a different name.")
        words = {"ProcessingJob": "processing job", "TrainingJob": "training job", "LabelingJob": "labeling job"}[kind]
        return ResourceInUse(f"{words[0].upper() + words[1:]} names must be unique within an AWS account and region, "
                             f"and a {words} with this name already exists ({arn})")

    def _stop_job(self, kind: str, name: str) -> dict[str, Any]:
        status_member = KINDS[kind].status_member
        job = self.resources.describe(kind, name)
        if job[status_member] != "InProgress":
            words = "".join(f" {c.lower()}" if c.isupper() else c for c in kind).strip()
            raise ValidationException(f"The request was rejected because the {words} is in status "
                                      f"{job[status_member]}.")
        self.resources.update(kind, name, lambda d: d.update({status_member: "Stopping", "LastModifiedTime": now()}))
        return job

    # -- processing jobs --------------------------------------------------------------------------------------------
    def _check_quota(self, kind: str, instance_type: str) -> None:
        """AWS's per-account limit on concurrent jobs (``LOCAL_SAGEMAKER_MAX_JOBS`` per kind, default 20)."""
        limit = int(os.environ.get("LOCAL_SAGEMAKER_MAX_JOBS", "20"))
        status_member = KINDS[kind].status_member
        running = sum(1 for job in self.store.items(kind) if job.get(status_member) in ("InProgress", "Stopping"))
        if running + 1 > limit:
            usage = "processing job usage" if kind == "ProcessingJob" else "training job usage"
            raise ResourceLimitExceeded(
                f"The account-level service limit '{instance_type} for {usage}' is {limit} Instances, with current "
                f"utilization of {running} Instances and a request delta of 1 Instances. Please use AWS Service "
                "Quotas to request an increase for this quota.")

    def op_CreateProcessingJob(self, request: dict[str, Any],
                               on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        name = request["ProcessingJobName"]
        self.registry.resolve(request["AppSpecification"]["ImageUri"])
        self._check_quota("ProcessingJob", request["ProcessingResources"]["ClusterConfig"]["InstanceType"])
        job = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        job.update(ProcessingJobStatus="InProgress", LastModifiedTime=now())
        job = self.resources.create("ProcessingJob", name, job, request.get("Tags"),
                                    self._job_exists("ProcessingJob", name))
        self.jobs.start("ProcessingJob", name, on_done)
        return {"ProcessingJobArn": job["ProcessingJobArn"]}

    def op_StopProcessingJob(self, request: dict[str, Any]) -> dict[str, Any]:
        self._stop_job("ProcessingJob", request["ProcessingJobName"])
        self.jobs.stop("ProcessingJob", request["ProcessingJobName"])
        return {}

    # -- training jobs ----------------------------------------------------------------------------------------------
    def op_CreateTrainingJob(self, request: dict[str, Any], on_done: Callable[[dict[str, Any]], None] | None = None,
                             extra: dict[str, Any] | None = None) -> dict[str, Any]:
        name = request["TrainingJobName"]
        spec = request["AlgorithmSpecification"]
        if "TrainingImage" not in spec:
            raise ValidationException("AlgorithmSpecification.TrainingImage is required by the local SageMaker "
                                      "(algorithm resources are not supported).")
        self.registry.resolve(spec["TrainingImage"])
        self._check_quota("TrainingJob", request["ResourceConfig"]["InstanceType"])
        job = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        job.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
        job.update(TrainingJobStatus="InProgress", SecondaryStatus="Starting", LastModifiedTime=now(),
                   SecondaryStatusTransitions=[], ModelArtifacts={"S3ModelArtifacts": ""},
                   EnableNetworkIsolation=request.get("EnableNetworkIsolation", False),
                   EnableInterContainerTrafficEncryption=request.get("EnableInterContainerTrafficEncryption", False),
                   EnableManagedSpotTraining=request.get("EnableManagedSpotTraining", False), **(extra or {}))
        job = self.resources.create("TrainingJob", name, job, request.get("Tags"),
                                    self._job_exists("TrainingJob", name))
        self.jobs.start("TrainingJob", name, on_done)
        return {"TrainingJobArn": job["TrainingJobArn"]}

    def op_StopTrainingJob(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["TrainingJobName"]
        self._stop_job("TrainingJob", name)
        self.resources.update("TrainingJob", name, lambda d: d.update(SecondaryStatus="Stopping"))
        self.jobs.stop("TrainingJob", name)
        return {}

    # -- tuning jobs: random or grid search, each trial a real training job -----------------------------------------
    def op_CreateHyperParameterTuningJob(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        config = request["HyperParameterTuningJobConfig"]
        definition = request.get("TrainingJobDefinition")
        if definition is None:
            raise ValidationException("TrainingJobDefinition is required by the local SageMaker "
                                      "(TrainingJobDefinitions with several definitions are not supported).")
        self.registry.resolve(definition["AlgorithmSpecification"]["TrainingImage"])
        candidates = tuning_candidates(config)
        limits = config["ResourceLimits"]
        job = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        job.update(HyperParameterTuningJobStatus="InProgress", LastModifiedTime=now(),
                   TrainingJobStatusCounters={"Completed": 0, "InProgress": 0, "RetryableError": 0,
                                              "NonRetryableError": 0, "Stopped": 0},
                   ObjectiveStatusCounters={"Succeeded": 0, "Pending": 0, "Failed": 0})
        job = self.resources.create("HyperParameterTuningJob", name, job, request.get("Tags"),
                                    self._job_exists("HyperParameterTuningJob", name))
        total = min(limits.get("MaxNumberOfTrainingJobs", len(candidates)), len(candidates), MAX_TUNING_TRIALS)
        parallel = max(1, limits.get("MaxParallelTrainingJobs", 1))
        threading.Thread(target=self._run_tuning, args=(name, candidates[:total], parallel), daemon=True).start()
        return {"HyperParameterTuningJobArn": job["HyperParameterTuningJobArn"]}

    def _run_tuning(self, name: str, candidates: list[dict[str, str]], parallel: int) -> None:
        tuning = self.resources.describe("HyperParameterTuningJob", name)
        definition = tuning["TrainingJobDefinition"]
        objective = tuning["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
        slots = threading.BoundedSemaphore(parallel)
        running: list[threading.Event] = []
        for index, hyperparameters in enumerate(candidates, start=1):
            slots.acquire()
            status = self.resources.describe("HyperParameterTuningJob", name)["HyperParameterTuningJobStatus"]
            if status != "InProgress":  # stopped: launch no more trials
                slots.release()
                break
            finished = threading.Event()

            def done(trial: dict[str, Any], finished: threading.Event = finished) -> None:
                self._record_trial(name, trial, objective)
                slots.release()
                finished.set()

            trial = f"{name[:23]}-{index:03d}-{random.getrandbits(32):08x}"
            request = {
                "TrainingJobName": trial,
                "HyperParameters": {**definition.get("StaticHyperParameters", {}), **hyperparameters},
                **{k: copy.deepcopy(definition[k]) for k in (
                    "AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig",
                    "StoppingCondition", "VpcConfig", "CheckpointConfig", "Environment", "EnableNetworkIsolation")
                   if k in definition},
            }
            self._count(name, "InProgress", +1)
            try:
                self.op_CreateTrainingJob(request, on_done=done, extra={
                    "TuningJobArn": tuning["HyperParameterTuningJobArn"], "TunedHyperParameters": hyperparameters})
            except SageMakerError as exc:
                log.error("tuning %s: trial %s could not start: %s", name, trial, exc)
                slots.release()
                self._count(name, "InProgress", -1)
                self._count(name, "NonRetryableError", +1)
                continue
            running.append(finished)
        for finished in running:
            finished.wait()
        self._finish_tuning(name)

    def _count(self, name: str, counter: str, delta: int) -> None:
        self.resources.update("HyperParameterTuningJob", name, lambda d: d["TrainingJobStatusCounters"].update(
            {counter: d["TrainingJobStatusCounters"][counter] + delta}))

    def _record_trial(self, name: str, trial: dict[str, Any], objective: dict[str, Any]) -> None:
        metric = next((m for m in trial.get("FinalMetricDataList", []) if m["MetricName"] == objective["MetricName"]),
                      None)
        status = trial["TrainingJobStatus"]
        counter = {"Completed": "Completed", "Stopped": "Stopped"}.get(status, "NonRetryableError")
        summary = {
            "TrainingJobName": trial["TrainingJobName"], "TrainingJobArn": trial["TrainingJobArn"],
            "TuningJobName": name, "CreationTime": trial["CreationTime"],
            "TrainingStartTime": trial.get("TrainingStartTime"), "TrainingEndTime": trial.get("TrainingEndTime"),
            "TrainingJobStatus": status, "TunedHyperParameters": trial.get("TunedHyperParameters", {}),
            "ObjectiveStatus": "Succeeded" if metric and status == "Completed" else "Failed",
        }
        if metric:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": objective["Type"], "MetricName": metric["MetricName"], "Value": metric["Value"]}
        if trial.get("FailureReason"):
            summary["FailureReason"] = trial["FailureReason"]

        def change(d: dict[str, Any]) -> None:
            counters = d["TrainingJobStatusCounters"]
            counters["InProgress"] -= 1
            counters[counter] += 1
            d["ObjectiveStatusCounters"][summary["ObjectiveStatus"]] += 1
            d.setdefault("_trials", []).append(summary)
            d["LastModifiedTime"] = now()
            if summary["ObjectiveStatus"] == "Succeeded":
                best = d.get("BestTrainingJob")
                value = metric["Value"] if metric else math.nan
                better = (best is None or (objective["Type"] == "Maximize" and value > best[
                    "FinalHyperParameterTuningJobObjectiveMetric"]["Value"]) or (objective["Type"] == "Minimize" and
                    value < best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]))
                if better:
                    d["BestTrainingJob"] = summary

        self.resources.update("HyperParameterTuningJob", name, change)

    def _finish_tuning(self, name: str) -> None:
        def change(d: dict[str, Any]) -> None:
            if d["HyperParameterTuningJobStatus"] == "Stopping":
                d["HyperParameterTuningJobStatus"] = "Stopped"
            elif d.get("BestTrainingJob"):
                d["HyperParameterTuningJobStatus"] = "Completed"
            else:
                d["HyperParameterTuningJobStatus"] = "Failed"
                d["FailureReason"] = "No training job succeeded with the objective metric " \
                    f"{d['HyperParameterTuningJobConfig']['HyperParameterTuningJobObjective']['MetricName']}."
            d["HyperParameterTuningEndTime"] = now()
            d["LastModifiedTime"] = now()

        self.resources.update("HyperParameterTuningJob", name, change)

    def op_DescribeHyperParameterTuningJob(self, request: dict[str, Any]) -> dict[str, Any]:
        data = self.resources.describe("HyperParameterTuningJob", request["HyperParameterTuningJobName"])
        return {k: v for k, v in data.items() if not k.startswith("_")}

    def op_ListTrainingJobsForHyperParameterTuningJob(self, request: dict[str, Any]) -> dict[str, Any]:
        data = self.resources.describe("HyperParameterTuningJob", request["HyperParameterTuningJobName"])
        trials = list(data.get("_trials", []))
        if request.get("StatusEquals"):
            trials = [t for t in trials if t["TrainingJobStatus"] == request["StatusEquals"]]
        sort_by = request.get("SortBy", "CreationTime")
        if sort_by == "FinalObjectiveMetricValue":
            key = lambda t: t.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value", -math.inf)  # noqa: E731
        else:
            key = lambda t: t.get({"Name": "TrainingJobName", "Status": "TrainingJobStatus"}.get(sort_by,  # noqa: E731
                                                                                                  "CreationTime"))
        trials.sort(key=key, reverse=request.get("SortOrder", "Descending") == "Descending")
        return {"TrainingJobSummaries": trials[: int(request.get("MaxResults") or 10)]}

    def op_StopHyperParameterTuningJob(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        data = self._stop_job("HyperParameterTuningJob", name)
        for trial in data.get("_trials", []):
            if trial["TrainingJobStatus"] == "InProgress":
                self.jobs.stop("TrainingJob", trial["TrainingJobName"])
        for job in self.store.items("TrainingJob"):
            if job.get("TuningJobArn") == data["HyperParameterTuningJobArn"] and job["TrainingJobStatus"] == \
                    "InProgress":
                self.op_StopTrainingJob({"TrainingJobName": job["TrainingJobName"]})
        return {}

    # -- models and endpoint configs --------------------------------------------------------------------------------
    def op_CreateModel(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelName"]
        containers = [request["PrimaryContainer"]] if "PrimaryContainer" in request else request.get("Containers", [])
        if not containers:
            raise ValidationException("Either PrimaryContainer or Containers must be specified.")
        model = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        resolved = [model["PrimaryContainer"]] if "PrimaryContainer" in model else model.get("Containers", [])
        for container in resolved:
            if container.get("ModelPackageName"):
                # A versioned package: AWS deploys its inference container and artifact (and only once Approved).
                package = self._package(container["ModelPackageName"])
                if package.get("ModelApprovalStatus") != "Approved":
                    raise ValidationException(f"Model Package {package['ModelPackageArn']} is not approved "
                                              f"(status {package.get('ModelApprovalStatus')}).")
                spec = package["InferenceSpecification"]["Containers"][0]
                container.setdefault("Image", spec["Image"])
                if spec.get("ModelDataUrl"):
                    container.setdefault("ModelDataUrl", spec["ModelDataUrl"])
                container["Environment"] = {**spec.get("Environment", {}), **container.get("Environment", {})}
            if "Image" not in container:
                raise ValidationException("Each container needs an Image or a ModelPackageName.")
            self.registry.resolve(container["Image"])
        model.setdefault("EnableNetworkIsolation", False)
        arn = KINDS["Model"].arn(name)
        model = self.resources.create("Model", name, model, request.get("Tags"),
                                      ValidationException(f'Cannot create already existing model "{arn}".'))
        return {"ModelArn": model["ModelArn"]}

    def op_CreateEndpointConfig(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointConfigName"]
        for variant in request["ProductionVariants"]:
            self.resources.describe("Model", variant["ModelName"])
        config = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        arn = KINDS["EndpointConfig"].arn(name)
        config = self.resources.create(
            "EndpointConfig", name, config, request.get("Tags"),
            ValidationException(f'Cannot create already existing endpoint configuration "{arn}".'))
        return {"EndpointConfigArn": config["EndpointConfigArn"]}

    # -- endpoints --------------------------------------------------------------------------------------------------
    def _variant_summaries(self, config_name: str) -> list[dict[str, Any]]:
        config = self.resources.describe("EndpointConfig", config_name)
        return [{"VariantName": v["VariantName"],
                 "DeployedImages": [{"SpecifiedImage": self._image_of(v["ModelName"]),
                                     "ResolvedImage": self._image_of(v["ModelName"]),
                                     "ResolutionTime": now()}],
                 "CurrentWeight": float(v.get("InitialVariantWeight", 1.0)),
                 "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)),
                 "CurrentInstanceCount": v.get("InitialInstanceCount", 1),
                 "DesiredInstanceCount": v.get("InitialInstanceCount", 1)}
                for v in config["ProductionVariants"]]

    def _image_of(self, model_name: str) -> str:
        model = self.resources.describe("Model", model_name)
        return (model.get("PrimaryContainer") or model["Containers"][0])["Image"]

    def _capture_status(self, config_name: str) -> dict[str, Any] | None:
        capture = self.resources.describe("EndpointConfig", config_name).get("DataCaptureConfig")
        if not capture:
            return None
        return {"EnableCapture": capture.get("EnableCapture", True), "CaptureStatus": "Started",
                "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                "DestinationS3Uri": capture["DestinationS3Uri"], **({"KmsKeyId": capture["KmsKeyId"]}
                                                                     if capture.get("KmsKeyId") else {})}

    def op_CreateEndpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        name, config_name = request["EndpointName"], request["EndpointConfigName"]
        self.resources.describe("EndpointConfig", config_name)
        arn = KINDS["Endpoint"].arn(name)
        endpoint = {"EndpointName": name, "EndpointConfigName": config_name, "EndpointStatus": "Creating",
                    "LastModifiedTime": now()}
        endpoint = self.resources.create("Endpoint", name, endpoint, request.get("Tags"),
                                         ValidationException(f'Cannot create already existing endpoint "{arn}".'))
        threading.Thread(target=self._create_endpoint, args=(name, config_name), daemon=True).start()
        return {"EndpointArn": endpoint["EndpointArn"]}

    def _create_endpoint(self, name: str, config_name: str) -> None:
        try:
            self.endpoints.deploy(name, config_name)
        except Exception as exc:
            log.error("endpoint %s failed to start: %s", name, exc)
            self._endpoint_failed(name, "Failed", str(exc))
            return
        variants, capture = self._variant_summaries(config_name), self._capture_status(config_name)
        self.resources.update("Endpoint", name, lambda d: d.update(
            EndpointStatus="InService", LastModifiedTime=now(), ProductionVariants=variants,
            **({"DataCaptureConfig": capture} if capture else {})))

    def _endpoint_failed(self, name: str, status: str, reason: str) -> None:
        self.resources.update("Endpoint", name, lambda d: d.update(
            EndpointStatus=status, FailureReason=reason, LastModifiedTime=now()))

    def op_UpdateEndpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        name, config_name = request["EndpointName"], request["EndpointConfigName"]
        endpoint = self.resources.describe("Endpoint", name)
        self.resources.describe("EndpointConfig", config_name)
        if endpoint["EndpointStatus"] != "InService":
            raise ValidationException(f"Cannot update in-progress endpoint \"{endpoint['EndpointArn']}\".")
        self.resources.update("Endpoint", name, lambda d: d.update(EndpointStatus="Updating", LastModifiedTime=now()))
        threading.Thread(target=self._update_endpoint, args=(name, config_name), daemon=True).start()
        return {"EndpointArn": endpoint["EndpointArn"]}

    def _update_endpoint(self, name: str, config_name: str) -> None:
        try:
            self.endpoints.deploy(name, config_name)
        except Exception as exc:
            # Blue/green: the old variants never stopped; the endpoint keeps serving its previous config.
            log.error("endpoint %s update to %s failed, the previous config keeps serving: %s", name, config_name,
                      exc)
            self._endpoint_failed(name, "InService", f"Update to endpoint configuration {config_name} failed: {exc}")
            return
        variants, capture = self._variant_summaries(config_name), self._capture_status(config_name)

        def change(d: dict[str, Any]) -> None:
            d.update(EndpointStatus="InService", EndpointConfigName=config_name, LastModifiedTime=now(),
                     ProductionVariants=variants)
            d.pop("FailureReason", None)
            d.pop("DataCaptureConfig", None)
            if capture:
                d["DataCaptureConfig"] = capture

        self.resources.update("Endpoint", name, change)

    def op_DeleteEndpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointName"]
        self.resources.describe("Endpoint", name)
        self.endpoints.undeploy(name)
        self.resources.delete("Endpoint", name)
        return {}

    def invoke_endpoint(self, name: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        endpoint = self.store.get("Endpoint", name)
        if endpoint is None:
            raise ValidationException(f"Endpoint {name} of account {ACCOUNT_ID} not found.")
        if endpoint["EndpointStatus"] not in ("InService", "Updating"):
            raise ValidationException(f"Endpoint {name} of account {ACCOUNT_ID} is not in service "
                                      f"(status {endpoint['EndpointStatus']}).")
        return self.endpoints.invoke(name, body, headers)

    # -- model registry ---------------------------------------------------------------------------------------------
    def op_CreateModelPackageGroup(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelPackageGroupName"]
        group = {k: v for k, v in request.items() if k != "Tags"}
        group.update(ModelPackageGroupStatus="Completed", CreatedBy={})
        arn = KINDS["ModelPackageGroup"].arn(name)
        group = self.resources.create("ModelPackageGroup", name, group, request.get("Tags"),
                                      ValidationException(f"Model Package Group already exists: {arn}"))
        return {"ModelPackageGroupArn": group["ModelPackageGroupArn"]}

    def op_DeleteModelPackageGroup(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelPackageGroupName"]
        self.resources.describe("ModelPackageGroup", name)
        if any(p.get("ModelPackageGroupName") == name for p in self.store.items("ModelPackage")):
            raise ConflictException(f"Model Package Group {name} still has model packages; delete them first.")
        self.resources.delete("ModelPackageGroup", name)
        return {}

    def op_CreateModelPackage(self, request: dict[str, Any]) -> dict[str, Any]:
        group = request.get("ModelPackageGroupName")
        if not group:
            raise ValidationException("The local SageMaker supports versioned model packages only "
                                      "(ModelPackageGroupName is required).")
        group = group.split("/")[-1]
        self.resources.describe("ModelPackageGroup", group)
        for container in request.get("InferenceSpecification", {}).get("Containers", []):
            self.registry.resolve(container["Image"])
        with self._tuning_lock:  # versions are numbered 1, 2, ... per group without gaps
            version = 1 + max((p["ModelPackageVersion"] for p in self.store.items("ModelPackage")
                               if p["ModelPackageGroupName"] == group), default=0)
            arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:model-package/{group.lower()}/{version}"
            package = {k: copy.deepcopy(v) for k, v in request.items() if k not in ("Tags", "ClientToken")}
            package.update(ModelPackageName=group, ModelPackageGroupName=group, ModelPackageVersion=version,
                           ModelPackageArn=arn, ModelPackageStatus="Completed",
                           ModelApprovalStatus=request.get("ModelApprovalStatus", "PendingManualApproval"),
                           ModelPackageStatusDetails={"ValidationStatuses": [], "ImageScanStatuses": []},
                           CertifyForMarketplace=request.get("CertifyForMarketplace", False),
                           LastModifiedTime=now(), CreatedBy={})
            self.resources.create("ModelPackage", arn, package, request.get("Tags"),
                                  ResourceLimitExceeded(f"Model package {arn} already exists."))
        return {"ModelPackageArn": arn}

    def _package(self, name_or_arn: str) -> dict[str, Any]:
        data = self.store.get("ModelPackage", name_or_arn)
        if data is None:
            raise KINDS["ModelPackage"].missing(name_or_arn)
        return data

    def op_UpdateModelPackage(self, request: dict[str, Any]) -> dict[str, Any]:
        arn = request["ModelPackageArn"]
        self._package(arn)
        updatable = ("ModelApprovalStatus", "ApprovalDescription", "CustomerMetadataProperties",
                     "AdditionalInferenceSpecificationsToAdd", "InferenceSpecification", "SourceUri", "ModelCard",
                     "ModelLifeCycle", "ModelPackageRegistrationType")

        def change(d: dict[str, Any]) -> None:
            for key in updatable:
                if key in request:
                    if key == "CustomerMetadataProperties":
                        d.setdefault(key, {}).update(request[key])
                    else:
                        d[key] = copy.deepcopy(request[key])
            for key in request.get("CustomerMetadataPropertiesToRemove", []):
                d.get("CustomerMetadataProperties", {}).pop(key, None)
            d["LastModifiedTime"] = now()
            d["LastModifiedBy"] = {}

        self.resources.update("ModelPackage", arn, change)
        return {"ModelPackageArn": arn}

    def op_DescribeModelPackage(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._package(request["ModelPackageName"])

    def op_DeleteModelPackage(self, request: dict[str, Any]) -> dict[str, Any]:
        self._package(request["ModelPackageName"])
        self.resources.delete("ModelPackage", request["ModelPackageName"])
        return {}

    # -- labeling jobs and monitoring schedules (their executions: labeling.py, monitoring.py) -----------------
    def op_CreateLabelingJob(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["LabelingJobName"]
        job = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        job.update(LabelingJobStatus="InProgress", LastModifiedTime=now(), JobReferenceCode=f"{name}-local",
                   LabelCounters={"TotalLabeled": 0, "HumanLabeled": 0, "MachineLabeled": 0,
                                  "FailedNonRetryableError": 0, "Unlabeled": 0})
        job = self.resources.create("LabelingJob", name, job, request.get("Tags"),
                                    self._job_exists("LabelingJob", name))
        self.labeling.start(name)
        return {"LabelingJobArn": job["LabelingJobArn"]}

    def op_StopLabelingJob(self, request: dict[str, Any]) -> dict[str, Any]:
        self._stop_job("LabelingJob", request["LabelingJobName"])
        self.labeling.stop(request["LabelingJobName"])
        return {}

    def op_CreateMonitoringSchedule(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["MonitoringScheduleName"]
        validate_schedule_config(request["MonitoringScheduleConfig"])
        schedule = {k: copy.deepcopy(v) for k, v in request.items() if k != "Tags"}
        definition = request["MonitoringScheduleConfig"].get("MonitoringJobDefinition", {})
        endpoint = definition.get("MonitoringInputs", [{}])[0].get("EndpointInput", {}).get("EndpointName")
        schedule.update(MonitoringScheduleStatus="Scheduled", LastModifiedTime=now(),
                        MonitoringType=request["MonitoringScheduleConfig"].get("MonitoringType", "DataQuality"),
                        **({"EndpointName": endpoint} if endpoint else {}))
        arn = KINDS["MonitoringSchedule"].arn(name)
        schedule = self.resources.create("MonitoringSchedule", name, schedule, request.get("Tags"),
                                         ResourceInUse(f"Monitoring schedule {arn} already exists."))
        return {"MonitoringScheduleArn": schedule["MonitoringScheduleArn"]}

    def op_UpdateMonitoringSchedule(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["MonitoringScheduleName"]
        validate_schedule_config(request["MonitoringScheduleConfig"])
        data = self.resources.update("MonitoringSchedule", name, lambda d: d.update(
            MonitoringScheduleConfig=copy.deepcopy(request["MonitoringScheduleConfig"]), LastModifiedTime=now()))
        return {"MonitoringScheduleArn": data["MonitoringScheduleArn"]}

    def op_StartMonitoringSchedule(self, request: dict[str, Any]) -> dict[str, Any]:
        self.resources.update("MonitoringSchedule", request["MonitoringScheduleName"],
                              lambda d: d.update(MonitoringScheduleStatus="Scheduled", LastModifiedTime=now()))
        return {}

    def op_StopMonitoringSchedule(self, request: dict[str, Any]) -> dict[str, Any]:
        self.resources.update("MonitoringSchedule", request["MonitoringScheduleName"],
                              lambda d: d.update(MonitoringScheduleStatus="Stopped", LastModifiedTime=now()))
        return {}

    def op_ListMonitoringExecutions(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.monitoring.list_executions(request)

    # -- tags -------------------------------------------------------------------------------------------------------
    def op_AddTags(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.resources.add_tags(request["ResourceArn"], request["Tags"])

    def op_ListTags(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.resources.list_tags(request["ResourceArn"])

    def op_DeleteTags(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.resources.delete_tags(request["ResourceArn"], request["TagKeys"])


def tuning_candidates(config: dict[str, Any]) -> list[dict[str, str]]:
    """Hyperparameter sets to try: the full grid for ``Grid``, seeded random draws otherwise.

    ``Bayesian`` and ``Hyperband`` are run as random search locally (documented); values are strings, as
    SageMaker passes them to the container.
    """
    ranges = config.get("ParameterRanges", {})
    strategy = config.get("Strategy", "Bayesian")
    limit = config["ResourceLimits"].get("MaxNumberOfTrainingJobs", 10)
    integer = ranges.get("IntegerParameterRanges", [])
    continuous = ranges.get("ContinuousParameterRanges", [])
    categorical = ranges.get("CategoricalParameterRanges", [])
    if strategy == "Grid":
        if continuous:
            raise ValidationException("Grid search supports only categorical parameter ranges "
                                      "(and integer ranges), not continuous ones.")
        axes = [(r["Name"], [str(v) for v in range(int(r["MinValue"]), int(r["MaxValue"]) + 1)]) for r in integer]
        axes += [(r["Name"], list(r["Values"])) for r in categorical]
        return [dict(zip([a[0] for a in axes], combo, strict=True))
                for combo in itertools.product(*[a[1] for a in axes])]
    rng = random.Random(config.get("RandomSeed", 0))  # noqa: S311 - search, not security
    draws = []
    for _ in range(limit):
        draw: dict[str, str] = {}
        for r in integer:
            low, high = int(r["MinValue"]), int(r["MaxValue"])
            if r.get("ScalingType") == "Logarithmic" and low > 0:
                draw[r["Name"]] = str(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
            else:
                draw[r["Name"]] = str(rng.randint(low, high))
        for r in continuous:
            low, high = float(r["MinValue"]), float(r["MaxValue"])
            if r.get("ScalingType") == "Logarithmic" and low > 0:
                draw[r["Name"]] = repr(math.exp(rng.uniform(math.log(low), math.log(high))))
            else:
                draw[r["Name"]] = repr(rng.uniform(low, high))
        for r in categorical:
            draw[r["Name"]] = rng.choice(r["Values"])
        draws.append(draw)
    return draws


__all__ = ["ResourceNotFound", "SageMakerBackend", "tuning_candidates"]
