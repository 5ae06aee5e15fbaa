"""SageMaker's documented rules beyond the shape model: what AWS refuses although botocore's shapes allow it.

``validation.validate`` checks a request against botocore's shapes (types, enums, patterns, lengths); AWS also
enforces rules written only in the documentation of the members. ``check`` applies these, after ``validate``, and
raises one ``ValidationException`` listing every rule a request breaks, each message naming the member and the rule:

- Volume KMS key on local storage: "Certain Nitro-based instances include local storage [...] You can't request a
  VolumeKmsKeyId when using an instance type with local storage" (botocore's ``ResourceConfig``,
  ``ProcessingClusterConfig``, ``TransformResources``, ``HyperParameterTuningResourceConfig``; applied as well to
  ``MonitoringClusterConfig``, a monitoring job being a processing job, and to the instance groups / instance configs
  of a training or tuning job). AWS's message, as reported in aws/sagemaker-python-sdk#3677: "KMS key is not
  supported for NVMe instance storage". The instance types with local storage: ``include/instances.py``.
- KMS key formats: a volume key (``*.VolumeKmsKeyId``) is a key ID or a key ARN (``ResourceConfig.VolumeKmsKeyId``
  lists only those two); an output key (``OutputDataConfig``, ``ProcessingOutputConfig``, ``DataCaptureConfig``,
  ``MonitoringOutputConfig``, ``LabelingJobOutputConfig``, ``CreateEndpointConfig``'s ``KmsKeyId``) is a key ID, a
  key ARN, an alias name or an alias ARN (the formats each member's documentation lists).
- KMS keys exist: AWS refuses a key it cannot describe; here each key is looked up in the local KMS (moto) with
  ``kms:DescribeKey`` (``KmsKeys``; positive answers cached). Unit tests inject their own ``key_exists``.
  ``CreateEndpointConfig.KmsKeyId`` with local-storage variants is accepted: botocore 1.43.56's documentation says the
  key then "does not encrypt instance local storage" (older versions said the call fails).
- Training time: ``StoppingCondition.MaxRuntimeInSeconds`` "The maximum value is 28 days" (CreateTrainingJob and the
  training definitions of CreateHyperParameterTuningJob); ``MaxWaitTimeInSeconds`` "must be equal to or greater than
  MaxRuntimeInSeconds".
- ``AlgorithmName`` "is mutually exclusive with the TrainingImage parameter" and one of them must be given.
- ``ProcessingS3Input.LocalPath`` "must begin with /opt/ml/processing/" (so must ``ProcessingS3Output.LocalPath``:
  the platform creates output directories only there).
- Monitoring schedules: ``MaxRuntimeInSeconds`` "cannot exceed the frequency of the job": at most 3600 s for an hourly
  data quality or model explainability schedule, 1800 s for an hourly model bias or model quality schedule.

Written by hand: no library applies SageMaker's server-side rules (botocore's ``ParamValidator`` checks only what a
client checks, and these rules are prose in the documentation, not part of the model).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.model import Shape

from include.instances import has_local_storage
from local_aws.sagemaker.exceptions import ValidationException
from local_aws.sagemaker.validation import service_model

KeyExists = Callable[[str], bool]

MAX_TRAINING_RUNTIME_S = 28 * 24 * 3600
PROCESSING_ROOT = "/opt/ml/processing/"
HOURLY = "cron(0 * ? * * *)"
# Hourly schedules: the longest a monitoring job may run, by monitoring type (default DataQuality).
HOURLY_MONITORING_LIMIT_S = {"DataQuality": 3600, "ModelExplainability": 3600, "ModelBias": 1800,
                             "ModelQuality": 1800}
TRAINING_OPERATIONS = frozenset({"CreateTrainingJob", "CreateHyperParameterTuningJob"})

_KEY_ID = r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|mrk-[0-9a-fA-F]{32})"
_ARN = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:"
_ALIAS = r"alias/[a-zA-Z0-9/_-]+"
KEY_FORMS = re.compile(rf"{_KEY_ID}|{_ARN}key/{_KEY_ID}")
ALIAS_FORMS = re.compile(rf"{_ALIAS}|{_ARN}{_ALIAS}")
VOLUME_FORMATS = ("a key ID (1234abcd-12ab-34cd-56ef-1234567890ab, or mrk-... for a multi-Region key) or a key ARN "
                  "(arn:aws:kms:<region>:<account>:key/<key id>)")
OUTPUT_FORMATS = ("a key ID, a key ARN (arn:aws:kms:<region>:<account>:key/<key id>), an alias name (alias/<name>) "
                  "or an alias ARN (arn:aws:kms:<region>:<account>:alias/<name>)")
NVME = ("KMS key is not supported for NVMe instance storage ({instance} has local instance storage). Remove the KMS "
        "key in the request or choose a different instance type.")

# Structures (botocore shape names) with a volume key, and the member listing more instances (heterogeneous clusters)
VOLUME_KEY_SHAPES = {"ResourceConfig": "InstanceGroups", "HyperParameterTuningResourceConfig": "InstanceConfigs",
                     "ProcessingClusterConfig": None, "TransformResources": None, "MonitoringClusterConfig": None}
OUTPUT_KEY_SHAPES = frozenset({"OutputDataConfig", "ProcessingOutputConfig", "DataCaptureConfig",
                               "MonitoringOutputConfig", "LabelingJobOutputConfig", "CreateEndpointConfigInput"})


class KmsKeys:
    """``key_exists`` against the KMS the process's standard variables point at (``AWS_ENDPOINT_URL``: the local
    stack's moto): ``kms:DescribeKey`` of a key ID, key ARN, alias name or alias ARN. Keys found are remembered
    (a key is not deleted under a running stack in a way a job would notice); a missing key is asked again."""

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> bool:
        if key in self._known:
            return True
        from botocore.exceptions import ClientError

        with self._lock:
            if self._client is None:
                import boto3

                self._client = boto3.client("kms")
        try:
            self._client.describe_key(KeyId=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NotFoundException", "InvalidArnException", "ValidationException"):
                return False
            raise
        self._known.add(key)
        return True


_default_keys = KmsKeys()


@dataclass
class _Context:
    operation: str
    errors: list[str] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)  # (member path, key) of well-formed keys


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _join(path: str, member: str) -> str:
    return f"{path}.{_camel(member)}" if path else _camel(member)


def _volume_key(ctx: _Context, shape: Shape, value: dict[str, Any], path: str) -> None:
    key = value.get("VolumeKmsKeyId")
    if not key:
        return
    where = _join(path, "VolumeKmsKeyId")
    if KEY_FORMS.fullmatch(key):
        ctx.keys.append((where, key))
    else:
        what = "an alias, which a volume key cannot be" if ALIAS_FORMS.fullmatch(key) else "not a key ID or key ARN"
        ctx.errors.append(f"{where}: Value '{key}' is {what}: this member accepts {VOLUME_FORMATS}.")
    instances = [value.get("InstanceType")]
    group_member = VOLUME_KEY_SHAPES[shape.name]
    if group_member:
        instances += [group.get("InstanceType") for group in value.get(group_member) or [] if isinstance(group, dict)]
    for instance in dict.fromkeys(i for i in instances if isinstance(i, str) and has_local_storage(i)):
        ctx.errors.append(f"{where}: {NVME.format(instance=instance)}")


def _output_key(ctx: _Context, value: dict[str, Any], path: str) -> None:
    key = value.get("KmsKeyId")
    if not key:
        return
    where = _join(path, "KmsKeyId")
    if KEY_FORMS.fullmatch(key) or ALIAS_FORMS.fullmatch(key):
        ctx.keys.append((where, key))
    else:
        ctx.errors.append(f"{where}: Value '{key}' is not a KMS key reference: this member accepts {OUTPUT_FORMATS}.")


def _stopping_condition(ctx: _Context, value: dict[str, Any], path: str) -> None:
    runtime, wait = value.get("MaxRuntimeInSeconds"), value.get("MaxWaitTimeInSeconds")
    if ctx.operation in TRAINING_OPERATIONS and isinstance(runtime, int) and runtime > MAX_TRAINING_RUNTIME_S:
        ctx.errors.append(f"{_join(path, 'MaxRuntimeInSeconds')}: Value {runtime} exceeds the longest a training job "
                          f"may run: the maximum value is 28 days ({MAX_TRAINING_RUNTIME_S} seconds).")
    if isinstance(runtime, int) and isinstance(wait, int) and wait < runtime:
        ctx.errors.append(f"{_join(path, 'MaxWaitTimeInSeconds')}: Value {wait} is less than MaxRuntimeInSeconds "
                          f"({runtime}): the time a managed Spot training job may wait and run must be equal to or "
                          "greater than MaxRuntimeInSeconds.")


def _algorithm(ctx: _Context, value: dict[str, Any], path: str) -> None:
    image, algorithm = value.get("TrainingImage"), value.get("AlgorithmName")
    where = path or "request"
    if image and algorithm:
        ctx.errors.append(f"{where}: AlgorithmName and TrainingImage are mutually exclusive: give one of them, not "
                          "both.")
    elif not image and not algorithm:
        ctx.errors.append(f"{where}: give either AlgorithmName (an algorithm resource) or TrainingImage (the image "
                          "of the algorithm's container).")


def _processing_path(ctx: _Context, value: dict[str, Any], path: str) -> None:
    local = value.get("LocalPath")
    if isinstance(local, str) and not local.startswith(PROCESSING_ROOT):
        ctx.errors.append(f"{_join(path, 'LocalPath')}: Value '{local}' must begin with {PROCESSING_ROOT}: a "
                          "processing container's inputs and outputs are mounted under it.")


def _monitoring_schedule(ctx: _Context, value: dict[str, Any], path: str) -> None:
    expression = (value.get("ScheduleConfig") or {}).get("ScheduleExpression")
    definition = value.get("MonitoringJobDefinition")
    if expression != HOURLY or not isinstance(definition, dict):
        return
    kind = value.get("MonitoringType") or "DataQuality"
    limit = HOURLY_MONITORING_LIMIT_S.get(kind, 3600)
    runtime = (definition.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    if isinstance(runtime, int) and runtime > limit:
        where = _join(_join(_join(path, "MonitoringJobDefinition"), "StoppingCondition"), "MaxRuntimeInSeconds")
        ctx.errors.append(f"{where}: Value {runtime} exceeds the frequency of the schedule: the jobs of an hourly "
                          f"{kind} schedule may run at most {limit} seconds.")


_RULES: dict[str, Callable[[_Context, Shape, dict[str, Any], str], None]] = {
    **{name: _volume_key for name in VOLUME_KEY_SHAPES},
    **{name: lambda ctx, shape, value, path: _output_key(ctx, value, path) for name in OUTPUT_KEY_SHAPES},
    "StoppingCondition": lambda ctx, shape, value, path: _stopping_condition(ctx, value, path),
    "AlgorithmSpecification": lambda ctx, shape, value, path: _algorithm(ctx, value, path),
    "HyperParameterAlgorithmSpecification": lambda ctx, shape, value, path: _algorithm(ctx, value, path),
    "ProcessingS3Input": lambda ctx, shape, value, path: _processing_path(ctx, value, path),
    "ProcessingS3Output": lambda ctx, shape, value, path: _processing_path(ctx, value, path),
    "MonitoringScheduleConfig": lambda ctx, shape, value, path: _monitoring_schedule(ctx, value, path),
}


def _walk(ctx: _Context, shape: Shape, value: Any, path: str) -> None:
    if shape.type_name == "structure" and isinstance(value, dict):
        rule = _RULES.get(shape.name)
        if rule is not None:
            rule(ctx, shape, value, path)
        for member, member_value in value.items():
            if member in shape.members:
                _walk(ctx, shape.members[member], member_value, _join(path, member))
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value, start=1):
            _walk(ctx, shape.member, item, f"{path}.{index}.member")


def check(operation: str, request: dict[str, Any], key_exists: KeyExists | None = None) -> None:
    """Raise ``ValidationException`` listing every documented rule ``request`` breaks (after ``validate``).

    ``key_exists`` answers whether a KMS key (any of the four forms) exists; default: the stack's KMS (``KmsKeys``).
    """
    model = service_model("sagemaker").operation_model(operation)
    ctx = _Context(operation)
    if model.input_shape is not None and isinstance(request, dict):
        _walk(ctx, model.input_shape, request, "")
    lookup = key_exists or _default_keys
    answers: dict[str, bool] = {}
    for where, key in ctx.keys:
        if key not in answers:
            answers[key] = lookup(key)
        if not answers[key]:
            ctx.errors.append(f"{where}: KMS key '{key}' does not exist: kms:DescribeKey finds no such key (or "
                              "alias) in this account and Region.")
    if ctx.errors:
        noun = "error" if len(ctx.errors) == 1 else "errors"
        raise ValidationException(f"{len(ctx.errors)} validation {noun} detected: " + "; ".join(ctx.errors))
