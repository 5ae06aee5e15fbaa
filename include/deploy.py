"""deploy's requests and checks: model, endpoint config (data capture, KMS), endpoint, the smoke test, the record.

Names are deterministic per model package version, so a re-run finds what it created before: model
``<endpoint>-v<N>-<hash>`` and endpoint config of the same name (the hash covers the package, the inference image
and the config's variant settings, so a change of any of them gives new resources instead of silently reusing old
ones). The endpoint is created the first time and updated afterwards (SageMaker's blue/green update: the old variant
serves until the new one is healthy).

The smoke test sends held-out test frames of the package's own evaluation to the endpoint and checks that the
endpoint finds what the evaluation recorded for the same frames (same classes, boxes overlapping at IoU >= 0.8, at
the model's score threshold), and that latency is within budget. Written by hand: it is a comparison of two lists of
boxes, no library does that for a deployment check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from include.config import PipelineConfig
from include.instances import has_local_storage

CAPTURE_PREFIX = "data-capture"


def resource_name(config: PipelineConfig, package: Mapping[str, Any]) -> str:
    container = package["InferenceSpecification"]["Containers"][0]
    digest = hashlib.sha256(json.dumps({
        "package": package["ModelPackageArn"], "image": container["Image"], "data": container["ModelDataUrl"],
        "instance": config.inference_instance_type, "count": config.inference_instance_count,
        "capture": config.data_capture_percent, "kms": config.kms_key_arn}, sort_keys=True).encode()).hexdigest()
    return f"{config.endpoint_name}-v{package['ModelPackageVersion']}-{digest[:8]}"[:63]


def model_request(config: PipelineConfig, package: Mapping[str, Any], name: str, run_id: str) -> dict[str, Any]:
    """CreateModel from the approved package (its container and artifact), no network for the container."""
    return {
        "ModelName": name,
        "PrimaryContainer": {"ModelPackageName": package["ModelPackageArn"]},
        "ExecutionRoleArn": config.sagemaker_role_arn,
        "EnableNetworkIsolation": True,
        "Tags": _tags(config, package, run_id),
    }


def endpoint_config_request(config: PipelineConfig, package: Mapping[str, Any], name: str,
                            run_id: str) -> dict[str, Any]:
    """CreateEndpointConfig: one variant, data capture of requests and responses (for the drift monitor), KMS."""
    kms = {"KmsKeyId": config.kms_key_arn} if config.kms_key_arn else {}
    variants = [{"VariantName": "AllTraffic", "ModelName": name, "InstanceType": config.inference_instance_type,
                 "InitialInstanceCount": config.inference_instance_count, "InitialVariantWeight": 1.0}]
    # The endpoint config's KmsKeyId encrypts the variants' ML storage volumes; on instance types with local (NVMe)
    # storage it "does not encrypt instance local storage" (botocore 1.44's CreateEndpointConfig documentation: the
    # instance's hardware encrypts that storage), so when every variant has local storage the key would encrypt
    # nothing and is left out. The captured data is written to S3 under the key either way.
    volumes = kms if not all(has_local_storage(v["InstanceType"]) for v in variants) else {}
    return {
        "EndpointConfigName": name,
        "ProductionVariants": variants,
        "DataCaptureConfig": {
            "EnableCapture": True, "InitialSamplingPercentage": config.data_capture_percent,
            "DestinationS3Uri": f"s3://{config.models_bucket}/{CAPTURE_PREFIX}",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}, **kms},
        **volumes,
        "EnableNetworkIsolation": True,  # medical data: the serving containers have no network
        "Tags": _tags(config, package, run_id),
    }


def endpoint_request(config: PipelineConfig, package: Mapping[str, Any], name: str, run_id: str) -> dict[str, Any]:
    return {"EndpointName": config.endpoint_name, "EndpointConfigName": name,
            "Tags": _tags(config, package, run_id)}


def _tags(config: PipelineConfig, package: Mapping[str, Any], run_id: str) -> list[dict[str, str]]:
    return [{"Key": "model_package_version", "Value": str(package["ModelPackageVersion"])},
            {"Key": "dag_run_id", "Value": run_id[:256]}, *({"Key": k, "Value": v} for k, v in config.tags.items())]


# -- the smoke test -----------------------------------------------------------------------------------------------
def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def expected_boxes(image: Mapping[str, Any], threshold: float) -> list[tuple[str, list[float]]]:
    """The evaluation's detections of one frame at the score threshold, as (class, [x1, y1, x2, y2])."""
    return [(d["category"], [d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]])
            for d in image["detections"] if d["score"] >= threshold]


def agreement(expected: list[tuple[str, list[float]]], served: list[tuple[str, list[float]]],
              min_iou: float = 0.8) -> float:
    """Matched boxes (same class, IoU >= ``min_iou``, greedy) over the larger of the two counts; 1 when both are
    empty."""
    if not expected and not served:
        return 1.0
    used = [False] * len(served)
    matched = 0
    for label, box in expected:
        best, best_iou = -1, min_iou
        for i, (other_label, other) in enumerate(served):
            if not used[i] and other_label == label and (score := _iou(box, other)) >= best_iou:
                best, best_iou = i, score
        if best >= 0:
            used[best] = True
            matched += 1
    return matched / max(len(expected), len(served))


@dataclass
class SmokeResult:
    frames: int
    mean_agreement: float
    min_agreement: float
    p50_ms: float
    p95_ms: float
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(agreements: list[float], latencies_ms: list[float], min_agreement: float,
          latency_budget_ms: float) -> SmokeResult:
    import numpy as np

    if not agreements:
        return SmokeResult(0, 0.0, 0.0, 0.0, 0.0, False, ["no test frame could be sent to the endpoint"])
    mean, low = float(np.mean(agreements)), float(np.min(agreements))
    p50, p95 = float(np.percentile(latencies_ms, 50)), float(np.percentile(latencies_ms, 95))
    reasons = []
    if mean < min_agreement:
        reasons.append(f"detections agree with the package's evaluation on {mean:.0%} of boxes, below "
                       f"{min_agreement:.0%}")
    if p95 > latency_budget_ms:
        reasons.append(f"p95 latency {p95:.0f} ms is over the budget of {latency_budget_ms:.0f} ms")
    return SmokeResult(len(agreements), round(mean, 4), round(low, 4), round(p50, 1), round(p95, 1), not reasons,
                       reasons or [f"{len(agreements)} frames: agreement {mean:.0%}, p50 {p50:.0f} ms, "
                                   f"p95 {p95:.0f} ms"])


def served_boxes(response: Mapping[str, Any]) -> list[tuple[str, list[float]]]:
    return [(d["label"], [float(v) for v in d["box"]]) for d in response.get("detections", [])]
