"""Ground Truth built-in bounding-box jobs: the CreateLabelingJob request and its input files.

AWS runs the built-in task's pre-annotation and consolidation Lambdas from its own account in each region (listed
in the HumanTaskConfig API reference); the adjustment (review) workflow has its own pair of functions.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

# Region -> AWS's account that hosts the built-in Ground Truth Lambdas (HumanTaskConfig.PreHumanTaskLambdaArn docs).
BUILTIN_LAMBDA_ACCOUNTS = {
    "us-east-1": "432418664414", "us-east-2": "266458841044", "us-west-2": "081040173940",
    "ca-central-1": "918755190332", "eu-west-1": "568282634449", "eu-west-2": "487402164563",
    "eu-central-1": "203001061592", "ap-northeast-1": "477331159723", "ap-northeast-2": "845288260483",
    "ap-south-1": "565803892007", "ap-southeast-1": "377565633583", "ap-southeast-2": "454466003867",
}
HUMAN_TASK_UI_ACCOUNT = "394669845002"
LABEL_CONFIG_VERSION = "2018-11-28"
MAX_LABELS = 50  # Ground Truth's limit for a bounding-box label category configuration


class GroundTruthRegionError(ValueError):
    pass


def builtin_lambda_arn(region: str, step: str, adjustment: bool = False) -> str:
    """``step`` is ``PRE`` (pre-annotation) or ``ACS`` (annotation consolidation)."""
    if region not in BUILTIN_LAMBDA_ACCOUNTS:
        raise GroundTruthRegionError(f"Ground Truth built-in bounding-box tasks are not offered in {region}; "
                                     f"regions: {', '.join(sorted(BUILTIN_LAMBDA_ACCOUNTS))}")
    task = "AdjustmentBoundingBox" if adjustment else "BoundingBox"
    return f"arn:aws:lambda:{region}:{BUILTIN_LAMBDA_ACCOUNTS[region]}:function:{step}-{task}"


def label_category_config(classes: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {"document-version": LABEL_CONFIG_VERSION, "labels": [{"label": c} for c in classes]}


def parse_label_categories(text: str, uri: str = "the label category configuration") -> list[str]:
    """The labels of a label category configuration file, in order; ``ValueError`` with the reason if invalid."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"The label category configuration {uri} is not valid JSON: {exc}") from exc
    labels = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"The label category configuration {uri} has no \"labels\" list: expected "
                         '{"document-version": "2018-11-28", "labels": [{"label": "..."}, ...]}')
    names = []
    for index, entry in enumerate(labels):
        name = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"The label category configuration {uri}: labels[{index}] has no \"label\" string")
        names.append(name)
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"The label category configuration {uri} repeats the label(s) {', '.join(duplicates)}")
    if len(names) > MAX_LABELS:
        raise ValueError(f"The label category configuration {uri} has {len(names)} labels; a bounding box task "
                         f"takes at most {MAX_LABELS}")
    return names


def input_manifest(frame_uris: list[str]) -> str:
    return "".join(json.dumps({"source-ref": uri}) + "\n" for uri in frame_uris)


def labeling_job_request(*, name: str, region: str, manifest_uri: str, label_config_uri: str, output_uri: str,
                         role_arn: str, workteam_arn: str, label_attribute: str, workers: int,
                         kms_key: str | None, adjustment: bool = False,
                         tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """CreateLabelingJob for the built-in bounding-box task (or its label adjustment workflow); ``kms_key`` encrypts
    the output (the pipeline passes ``PipelineConfig.kms_key_arn``; None: the account's default S3 key)."""
    title = "Adjust the boxes of surgical instruments and tumors" if adjustment else \
        "Draw a box around each surgical instrument and tumor"
    return {
        "LabelingJobName": name,
        "LabelAttributeName": label_attribute,
        "InputConfig": {
            "DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_uri}},
            "DataAttributes": {"ContentClassifiers": ["FreeOfPersonallyIdentifiableInformation",
                                                      "FreeOfAdultContent"]},
        },
        "OutputConfig": {"S3OutputPath": output_uri, **({"KmsKeyId": kms_key} if kms_key else {})},
        "RoleArn": role_arn,
        "LabelCategoryConfigS3Uri": label_config_uri,
        "HumanTaskConfig": {
            "WorkteamArn": workteam_arn,
            "UiConfig": {"HumanTaskUiArn": f"arn:aws:sagemaker:{region}:{HUMAN_TASK_UI_ACCOUNT}:"
                                           "human-task-ui/BoundingBox"},
            "PreHumanTaskLambdaArn": builtin_lambda_arn(region, "PRE", adjustment),
            "TaskKeywords": ["Images", "bounding boxes", "object detection", "surgery"],
            "TaskTitle": title,
            "TaskDescription": f"{title}: scalpel, retractor, tumor. Leave frames with none of them empty.",
            "NumberOfHumanWorkersPerDataObject": workers,
            "TaskTimeLimitInSeconds": 600,
            "TaskAvailabilityLifetimeInSeconds": 864000,
            "MaxConcurrentTaskCount": 1000,
            "AnnotationConsolidationConfig": {
                "AnnotationConsolidationLambdaArn": builtin_lambda_arn(region, "ACS", adjustment)},
        },
        "Tags": tags or [],
    }
