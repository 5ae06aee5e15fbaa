"""CI release steps of one stage (buildspec.yml, CI_STAGE=release): upload, then write the stacks' parameter files.

``lambdas``: the Lambda deployment zips (deterministic, content-addressed keys: ``lambda/<name>/<sha256>.zip``, the
same zips ``local_aws.bootstrap`` deploys locally) to the deployment bucket, and the CloudFormation template
configuration files (``{"Parameters": ..., "Tags": ...}``) of foundation, platform, monitoring and api. Every name
carries the stage (dev and prod may share one account): ``StageSuffix``/``BucketSuffix`` of foundation, platform
and mwaa (``StageSuffix`` suffixes the names of the stage's include/config.py preset, ``Stage`` the others), and the
endpoint and schedule names of that preset for monitoring and api.

``bundle``: ``make mwaa-bundle``'s output to the stage's MWAA source bucket (``dags/`` mirrored: files no longer in
the bundle are deleted, as MWAA syncs that prefix), plus ``plugins.zip``, ``requirements.txt`` and ``startup.sh``,
whose S3 object versions go into ``mwaa.json`` for infra/mwaa.yaml. An object whose bytes did not change keeps its
version (its sha256 is in the object's metadata), so an unchanged bundle does not update the MWAA environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from tools.mwaa_bundle import REPO_ROOT, Bundle, build

_LAMBDAS = REPO_ROOT / "include" / "lambdas"
# Template parameter -> the files of that function's zip (the handler first), as local_aws.bootstrap builds them.
LAMBDA_SOURCES = {
    "S3ToSqsCodeKey": [_LAMBDAS / "s3_to_sqs.py", _LAMBDAS / "quarantine.py"],
    "TriggerCodeKey": [_LAMBDAS / "trigger_drift_retrain.py"],
    "ApiDetectCodeKey": [_LAMBDAS / "api_detect.py"],
}
VERSIONED_OBJECTS = {"plugins.zip": "PluginsS3ObjectVersion", "requirements.txt": "RequirementsS3ObjectVersion",
                     "startup.sh": "StartupScriptS3ObjectVersion"}
DIGEST_METADATA = "sha256"


def bucket_suffix(stage: str) -> str:
    return f"-{stage}"  # include/config.py's dev/prod presets: surgical-videos-raw-<stage>, ...


def stage_suffix(stage: str) -> str:
    # infra/foundation.yaml, platform.yaml and mwaa.yaml StageSuffix: video-processing-queue-<stage>,
    # surgical-sagemaker-execution-<stage>, ... (one account, 2 stages)
    return f"-{stage}"


def connection_secret_name(stage: str) -> str:
    """The stage's Airflow connection secret for Label Studio (infra/mwaa.yaml and infra/label_studio.yaml
    ``ConnectionSecretName``): one per stage, so two stages' Label Studio stacks do not clash in one account."""
    return f"airflow/connections/{stage}/label_studio_default"


def stage_names(stage: str) -> dict[str, str]:
    """The SageMaker names the stacks must agree on with the DAGs: the stage's include/config.py preset."""
    from include.config import build_config

    config = build_config(stage)
    return {"EndpointName": config.endpoint_name, "MonitoringScheduleName": config.monitoring_schedule_name}


def mwaa_bucket(stage: str, account_id: str) -> str:
    return f"airflow-surgical-mlops-{stage}-{account_id}"  # infra/platform.yaml MwaaSourceBucket


def _template_config(parameters: dict[str, str], stage: str) -> dict[str, Any]:
    return {"Parameters": parameters, "Tags": {"project": "surgical-mlops", "stage": stage}}


def release_lambdas(s3: Any, bucket: str, stage: str, out: Path) -> dict[str, dict[str, Any]]:
    from local_aws.bootstrap import lambda_zip

    keys = {}
    for parameter, sources in LAMBDA_SOURCES.items():
        body = lambda_zip(sources)
        key = f"lambda/{sources[0].stem}/{hashlib.sha256(body).hexdigest()[:16]}.zip"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        keys[parameter] = key
    suffix = bucket_suffix(stage)
    # The stage's Label Studio origin (the CodeBuild project's LABEL_STUDIO_ORIGIN, e.g. https://labeling.dev.example.org):
    # the frames bucket's CORS rule; unset: no rule (the Ground Truth backend needs none).
    origin = os.environ.get("LABEL_STUDIO_ORIGIN", "")
    names = stage_names(stage)
    configs = {
        "foundation.json": _template_config({"BucketSuffix": suffix, "StageSuffix": stage_suffix(stage),
                                             "ArtifactsBucket": bucket, "S3ToSqsCodeKey": keys["S3ToSqsCodeKey"],
                                             **({"LabelStudioOrigin": origin} if origin else {})}, stage),
        "platform.json": _template_config({"Stage": stage, "StageSuffix": stage_suffix(stage),
                                           "BucketSuffix": suffix}, stage),
        "monitoring.json": _template_config({"Stage": stage, "ArtifactsBucket": bucket,
                                             "TriggerCodeKey": keys["TriggerCodeKey"],
                                             "EndpointName": names["EndpointName"],
                                             "MonitoringScheduleName": names["MonitoringScheduleName"]}, stage),
        "api.json": _template_config({"Stage": stage, "ArtifactsBucket": bucket,
                                      "ApiDetectCodeKey": keys["ApiDetectCodeKey"],
                                      "EndpointName": names["EndpointName"]}, stage),
    }
    _write(out, configs)
    return configs


def _put_if_changed(s3: Any, bucket: str, key: str, body: bytes) -> str | None:
    """Upload unless the current object has the same bytes; returns the version id MWAA should use."""
    digest = hashlib.sha256(body).hexdigest()
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get(DIGEST_METADATA) == digest:
            return head.get("VersionId")
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    return s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={DIGEST_METADATA: digest}).get("VersionId")


def release_bundle(s3: Any, bucket: str, stage: str, bundle: Bundle, out: Path) -> dict[str, Any]:
    wanted = {f"dags/{p.relative_to(bundle.dags).as_posix()}": p for p in sorted(bundle.dags.rglob("*"))
              if p.is_file()}
    for key, path in wanted.items():
        _put_if_changed(s3, bucket, key, path.read_bytes())
    stale = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="dags/")
             for o in page.get("Contents", []) if o["Key"] not in wanted]
    for key in stale:
        s3.delete_object(Bucket=bucket, Key=key)
    versions = {}
    for name, parameter in VERSIONED_OBJECTS.items():
        version = _put_if_changed(s3, bucket, name, (bundle.root / name).read_bytes())
        if not version:
            raise RuntimeError(f"s3://{bucket}/{name} has no version id: the MWAA source bucket must be versioned")
        versions[parameter] = version
    config = _template_config({"Stage": stage, "StageSuffix": stage_suffix(stage),
                               "BucketSuffix": bucket_suffix(stage),
                               "ConnectionSecretName": connection_secret_name(stage), **versions}, stage)
    _write(out, {"mwaa.json": config})
    return {**config, "dags_uploaded": len(wanted), "dags_deleted": stale}


def _write(out: Path, files: dict[str, dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    import boto3

    parser = argparse.ArgumentParser(prog="python -m tools.ci_release", description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["lambdas", "bundle"])
    parser.add_argument("--stage", required=True, choices=["dev", "prod"])
    parser.add_argument("--bucket", help="deployment bucket (lambdas) or MWAA source bucket (bundle; default: "
                                         "the stage's airflow-surgical-mlops-<stage>-<account>)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "cfn")
    args = parser.parse_args(argv)
    s3 = boto3.client("s3")
    if args.step == "lambdas":
        if not args.bucket:
            parser.error("--bucket (the deployment bucket) is required for lambdas")
        configs = release_lambdas(s3, args.bucket, args.stage, args.out)
        print(f"lambda zips in s3://{args.bucket}/lambda/; parameter files: {', '.join(sorted(configs))}")
    else:
        bucket = args.bucket or mwaa_bucket(args.stage, boto3.client("sts").get_caller_identity()["Account"])
        result = release_bundle(s3, bucket, args.stage, build(REPO_ROOT / "dist" / "mwaa"), args.out)
        print(f"MWAA bundle in s3://{bucket}/: {result['dags_uploaded']} file(s) under dags/, "
              f"{len(result['dags_deleted'])} removed; versions {json.dumps(result['Parameters'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
