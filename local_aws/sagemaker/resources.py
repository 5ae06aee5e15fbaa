"""The kinds of SageMaker resources the local service keeps, and the operations every kind shares.

Describe/List/Delete and tags behave the same way for every kind: this module holds them once, driven by a table
of kinds (name member, ARN member and resource type, status member, list key), with AWS's filters, sorting and
pagination. Summaries are the Describe response cut down to the members of the list's summary shape in botocore's
model, so they can never drift from what AWS returns.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from local_aws.sagemaker.exceptions import ResourceNotFound, SageMakerError, ValidationException
from local_aws.sagemaker.store import Store
from local_aws.sagemaker.validation import service_model
from local_aws.settings import ACCOUNT_ID, REGION


@dataclass(frozen=True)
class Kind:
    name: str            # TrainingJob
    name_member: str     # TrainingJobName
    arn_member: str      # TrainingJobArn
    arn_type: str        # training-job
    status_member: str | None
    list_operation: str  # ListTrainingJobs
    list_key: str        # TrainingJobSummaries
    not_found: str = "validation"  # which error a missing resource gives (see missing())

    def arn(self, name: str) -> str:
        # AWS lower-cases resource names in ARNs.
        return f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:{self.arn_type}/{name.lower()}"

    def missing(self, name: str) -> SageMakerError:
        """The error AWS returns for a resource that does not exist (codes and texts as the live service sends)."""
        arn = self.arn(name)
        messages = {
            "TrainingJob": "Requested resource not found.",
            "ProcessingJob": f"Could not find requested job with name {name}",
            "Model": f'Could not find model "{arn}".',
            "EndpointConfig": f'Could not find endpoint configuration "{arn}".',
            "Endpoint": f'Could not find endpoint "{arn}".',
            "ModelPackageGroup": f"ModelPackageGroup {arn} does not exist.",
            "ModelPackage": f"ModelPackage {name} does not exist.",
            "HyperParameterTuningJob": f"Amazon SageMaker can't find a tuning job called {name}. Type another name.",
        }
        message = messages.get(self.name, f"Requested resource not found: {self.name} {name}")
        return ResourceNotFound(message) if self.not_found == "resource" else ValidationException(message)


KINDS = {k.name: k for k in [
    Kind("ProcessingJob", "ProcessingJobName", "ProcessingJobArn", "processing-job", "ProcessingJobStatus",
         "ListProcessingJobs", "ProcessingJobSummaries"),
    Kind("TrainingJob", "TrainingJobName", "TrainingJobArn", "training-job", "TrainingJobStatus",
         "ListTrainingJobs", "TrainingJobSummaries"),
    Kind("HyperParameterTuningJob", "HyperParameterTuningJobName", "HyperParameterTuningJobArn",
         "hyper-parameter-tuning-job", "HyperParameterTuningJobStatus", "ListHyperParameterTuningJobs",
         "HyperParameterTuningJobSummaries", not_found="resource"),
    Kind("Model", "ModelName", "ModelArn", "model", None, "ListModels", "Models"),
    Kind("EndpointConfig", "EndpointConfigName", "EndpointConfigArn", "endpoint-config", None,
         "ListEndpointConfigs", "EndpointConfigs"),
    Kind("Endpoint", "EndpointName", "EndpointArn", "endpoint", "EndpointStatus", "ListEndpoints", "Endpoints"),
    Kind("ModelPackageGroup", "ModelPackageGroupName", "ModelPackageGroupArn", "model-package-group",
         "ModelPackageGroupStatus", "ListModelPackageGroups", "ModelPackageGroupSummaryList"),
    Kind("ModelPackage", "ModelPackageName", "ModelPackageArn", "model-package", "ModelPackageStatus",
         "ListModelPackages", "ModelPackageSummaryList"),
    Kind("LabelingJob", "LabelingJobName", "LabelingJobArn", "labeling-job", "LabelingJobStatus",
         "ListLabelingJobs", "LabelingJobSummaryList", not_found="resource"),
    Kind("MonitoringSchedule", "MonitoringScheduleName", "MonitoringScheduleArn", "monitoring-schedule",
         "MonitoringScheduleStatus", "ListMonitoringSchedules", "MonitoringScheduleSummaries", not_found="resource"),
    Kind("MonitoringExecution", "ProcessingJobArn", "ProcessingJobArn", "monitoring-execution",
         "MonitoringExecutionStatus", "ListMonitoringExecutions", "MonitoringExecutionSummaries"),
]}
# List filters that compare a request member with the same member of the description.
_EQUALITY_FILTERS = ("ModelPackageGroupName", "ModelApprovalStatus", "EndpointName", "MonitoringScheduleName",
                     "MonitoringJobDefinitionName", "ModelPackageType")
_SORT_KEYS = {"Name": None, "CreationTime": "CreationTime", "Status": None, "ScheduledTime": "ScheduledTime"}


def now() -> float:
    return time.time()


class Resources:
    """Describe / List / Delete / tags for every kind, over the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        data = self.store.get(kind, name)
        if data is None:
            raise KINDS[kind].missing(name)
        return data

    def create(self, kind: str, name: str, data: dict[str, Any], tags: list[dict[str, str]] | None,
               exists_error: SageMakerError) -> dict[str, Any]:
        spec = KINDS[kind]
        arn = data.setdefault(spec.arn_member, spec.arn(name))
        data.setdefault("CreationTime", now())
        if not self.store.create(kind, name, arn, data, data["CreationTime"]):
            raise exists_error
        if tags:
            self.store.set_tags(arn, tags)
        return data

    def update(self, kind: str, name: str, change: Any) -> dict[str, Any]:
        data = self.store.update(kind, name, change)
        if data is None:
            raise KINDS[kind].missing(name)
        return data

    def delete(self, kind: str, name: str) -> None:
        if not self.store.delete(kind, name):
            raise KINDS[kind].missing(name)

    def list(self, kind: str, request: dict[str, Any], items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        spec = KINDS[kind]
        rows = list(self.store.items(kind)) if items is None else items
        name_filter = request.get("NameContains")
        if name_filter:
            rows = [r for r in rows if name_filter.lower() in str(r.get(spec.name_member, "")).lower()]
        if request.get("StatusEquals") and spec.status_member:
            rows = [r for r in rows if r.get(spec.status_member) == request["StatusEquals"]]
        for member in _EQUALITY_FILTERS:
            if request.get(member) is not None:
                rows = [r for r in rows if r.get(member) == request[member]]
        for bound, field, keep in (("CreationTimeAfter", "CreationTime", lambda v, b: v > b),
                                   ("CreationTimeBefore", "CreationTime", lambda v, b: v < b),
                                   ("LastModifiedTimeAfter", "LastModifiedTime", lambda v, b: v > b),
                                   ("LastModifiedTimeBefore", "LastModifiedTime", lambda v, b: v < b)):
            if request.get(bound) is not None:
                limit = _epoch(request[bound])
                rows = [r for r in rows if keep(r.get(field, r.get("CreationTime", 0)), limit)]
        sort_by = request.get("SortBy", "CreationTime")
        if sort_by == "Name":
            key = lambda r: str(r.get(spec.name_member, ""))  # noqa: E731
        elif sort_by == "Status" and spec.status_member:
            key = lambda r: str(r.get(spec.status_member, ""))  # noqa: E731
        else:
            field = _SORT_KEYS.get(sort_by) or "CreationTime"
            key = lambda r: r.get(field) or 0  # noqa: E731
        rows.sort(key=key, reverse=request.get("SortOrder", "Descending") == "Descending")
        start = _decode_token(request.get("NextToken"))
        size = int(request.get("MaxResults") or 10)
        page = rows[start:start + size]
        response: dict[str, Any] = {spec.list_key: [summary(spec, row) for row in page]}
        if start + size < len(rows):
            response["NextToken"] = _encode_token(start + size)
        return response

    # -- tags -------------------------------------------------------------------------------------------------------
    def _require_arn(self, arn: str) -> None:
        if self.store.get_by_arn(arn) is None:
            raise ValidationException(f"Resource {arn} does not exist.")

    def add_tags(self, arn: str, tags: list[dict[str, str]]) -> dict[str, Any]:
        self._require_arn(arn)
        self.store.set_tags(arn, tags)
        return {"Tags": self.store.tags(arn)}

    def list_tags(self, arn: str) -> dict[str, Any]:
        self._require_arn(arn)
        return {"Tags": self.store.tags(arn)}

    def delete_tags(self, arn: str, keys: list[str]) -> dict[str, Any]:
        self._require_arn(arn)
        self.store.delete_tags(arn, keys)
        return {}


def summary(spec: Kind, row: dict[str, Any]) -> dict[str, Any]:
    shape = service_model().operation_model(spec.list_operation).output_shape.members[spec.list_key].member
    return {k: row[k] for k in shape.members if k in row}


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationException("Invalid pagination token (NextToken).") from exc
