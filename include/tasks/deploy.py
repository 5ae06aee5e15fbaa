"""Task bodies of deploy (the DAG file only wires them)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from include import deploy, training
from include.config import load_config
from include.s3 import read_json

log = logging.getLogger(__name__)
AWS_CONN_ID = "aws_default"


def _clients() -> tuple[Any, Any, Any]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    hook = SageMakerHook(aws_conn_id=AWS_CONN_ID)
    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn(), hook.conn, hook.get_session().client(
        "sagemaker-runtime", **({"region_name": hook.conn_region_name} if hook.conn_region_name else {}))


def _missing(client: Any, call: str, **kwargs: Any) -> dict[str, Any] | None:
    """The Describe* answer, or None when the resource does not exist."""
    try:
        return getattr(client, call)(**kwargs)
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def plan(params: Mapping[str, Any], events: list[Mapping[str, Any]], run_id: str) -> dict[str, Any]:
    """Which approved package, the requests for what does not exist yet, and the config to roll back to."""
    from airflow.sdk.exceptions import AirflowFailException

    config = load_config()
    _, sagemaker, _ = _clients()
    arn = params.get("model_package_arn") or next(
        (e["model_package_arn"] for e in reversed(events) if e.get("model_package_arn")), None)
    if not arn:
        latest = training.latest_approved(sagemaker, config.model_package_group)
        if latest is None:
            raise AirflowFailException(f"nothing to deploy: no Approved version in {config.model_package_group}")
        arn = latest["ModelPackageArn"]
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    if package["ModelApprovalStatus"] != "Approved":
        raise AirflowFailException(f"{arn} is {package['ModelApprovalStatus']}, not Approved: only approved versions "
                                   f"are deployed ({package.get('ApprovalDescription', '')})")
    name = deploy.resource_name(config, package)
    endpoint = _missing(sagemaker, "describe_endpoint", EndpointName=config.endpoint_name)
    if endpoint and endpoint["EndpointStatus"] == "Failed":
        # A creation that failed leaves an endpoint that can be neither updated nor used: start it afresh.
        log.warning("endpoint %s is Failed (%s): deleting it before creating it again", config.endpoint_name,
                    endpoint.get("FailureReason"))
        sagemaker.delete_endpoint(EndpointName=config.endpoint_name)
        # Deleting takes a while on AWS, and CreateEndpoint refuses a name that is still being deleted.
        sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=config.endpoint_name,
                                                     WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        endpoint = None
    current = endpoint["EndpointConfigName"] if endpoint else None
    result = {
        "package_arn": arn, "package_version": package["ModelPackageVersion"], "name": name,
        "evaluation_uri": package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"],
        "model": None if _missing(sagemaker, "describe_model", ModelName=name) else deploy.model_request(
            config, package, name, run_id),
        "endpoint_config": None if _missing(sagemaker, "describe_endpoint_config", EndpointConfigName=name)
        else deploy.endpoint_config_request(config, package, name, run_id),
        "endpoint": deploy.endpoint_request(config, package, name, run_id),
        "previous_config": current if current != name else None,
        "already_deployed": bool(endpoint and current == name and endpoint["EndpointStatus"] == "InService"),
    }
    log.info("package %s (v%s) -> endpoint %s as %s; now serving %s%s", arn, package["ModelPackageVersion"],
             config.endpoint_name, name, current or "nothing (new endpoint)",
             " (already deployed: nothing to change)" if result["already_deployed"] else "")
    return result


def to_create(planned: Mapping[str, Any]) -> list[str]:
    tasks = [task for task, key in (("deploy.create_model", "model"), ("deploy.create_endpoint_config",
                                                                       "endpoint_config")) if planned[key]]
    return tasks + (["deploy.verify"] if planned["already_deployed"] else ["deploy.update_endpoint"])


def verify(planned: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint serves the new config. SageMaker leaves a failed update InService on the old config (and the
    provider's waiter is satisfied by InService): the config name tells the truth."""
    config = load_config()
    _, sagemaker, _ = _clients()
    endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
    if endpoint["EndpointStatus"] != "InService" or endpoint["EndpointConfigName"] != planned["name"]:
        raise RuntimeError(f"endpoint {config.endpoint_name} is {endpoint['EndpointStatus']} on "
                           f"{endpoint['EndpointConfigName']}, not on {planned['name']}: "
                           f"{endpoint.get('FailureReason', 'no failure reason given')}")
    log.info("endpoint %s InService on %s", config.endpoint_name, planned["name"])
    return {"endpoint": config.endpoint_name, "config": planned["name"]}


def smoke_test(planned: Mapping[str, Any]) -> dict[str, Any]:
    """Held-out test frames of the package's evaluation through InvokeEndpoint: same boxes, latency in budget."""
    config = load_config()
    s3, _, runtime = _clients()
    evaluation = read_json(s3, planned["evaluation_uri"])
    images = sorted(evaluation["images"], key=lambda i: i["file_name"])
    step = max(1, len(images) // max(1, config.smoke_test_frames))
    chosen = images[::step][:config.smoke_test_frames]
    threshold = float(evaluation["score_threshold"])
    agreements, latencies = [], []
    for image in chosen:
        frame_key = image["file_name"] if image["file_name"].startswith("frames/") else f"frames/{image['file_name']}"
        body = s3.get_object(Bucket=config.frames_bucket, Key=frame_key)["Body"].read()
        started = time.perf_counter()
        response = runtime.invoke_endpoint(EndpointName=config.endpoint_name, ContentType="image/jpeg",
                                           Accept="application/json", Body=body,
                                           CustomAttributes=f"score_threshold={threshold:.6f}")
        answer = json.loads(response["Body"].read())
        latencies.append((time.perf_counter() - started) * 1000)
        agreements.append(deploy.agreement(deploy.expected_boxes(image, threshold), deploy.served_boxes(answer)))
    result = deploy.judge(agreements, latencies, config.smoke_min_agreement, config.smoke_latency_budget_ms)
    log.info("smoke test of %s: %s", planned["name"], json.dumps(result.to_dict()))
    if not result.passed:
        raise RuntimeError("smoke test failed: " + "; ".join(result.reasons))
    return result.to_dict()


def rollback(planned: Mapping[str, Any], failed: list[str]) -> None:
    """Put the endpoint back on the config it served before, then fail the run loudly."""
    from airflow.sdk.exceptions import AirflowFailException
    from botocore.exceptions import WaiterError

    config = load_config()
    _, sagemaker, _ = _clients()
    previous = planned["previous_config"]
    endpoint = _missing(sagemaker, "describe_endpoint", EndpointName=config.endpoint_name)
    what = f"deploying {planned['package_arn']} failed at {', '.join(failed)}: endpoint {config.endpoint_name}"
    if previous and endpoint and endpoint["EndpointConfigName"] != previous:
        log.warning("rolling %s back to %s", config.endpoint_name, previous)
        waiter = sagemaker.get_waiter("endpoint_in_service")
        try:
            waiter.wait(EndpointName=config.endpoint_name, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
            sagemaker.update_endpoint(EndpointName=config.endpoint_name, EndpointConfigName=previous)
            waiter.wait(EndpointName=config.endpoint_name, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        except WaiterError as exc:
            raise AirflowFailException(f"{what}; rolling back to {previous} did not complete ({exc}): see the "
                                       f"endpoint's FailureReason and fix it by hand") from exc
        state = f"rolled back to {previous}"
    elif previous and endpoint:
        state = f"still serving {previous} (the update did not take)"
    elif previous:
        state = f"no longer exists: nothing serves (it served {previous})"
    else:
        state = "no previous config to roll back to (first deployment)"
    raise AirflowFailException(f"{what} {state}")


def record(planned: Mapping[str, Any], smoke: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Which package serves, since when, by which run: ``deployments/<endpoint>/`` (history and latest)."""
    config = load_config()
    s3, sagemaker, _ = _clients()
    endpoint = sagemaker.describe_endpoint(EndpointName=config.endpoint_name)
    entry = {"endpoint": config.endpoint_name, "endpoint_config": planned["name"],
             "model_package_arn": planned["package_arn"], "model_package_version": planned["package_version"],
             "previous_config": planned["previous_config"], "dag_run_id": run_id,
             "deployed_at": endpoint["LastModifiedTime"].isoformat() if hasattr(endpoint["LastModifiedTime"],
                                                                                "isoformat")
             else str(endpoint["LastModifiedTime"]), "smoke_test": dict(smoke)}
    body = json.dumps(entry, indent=2).encode()
    prefix = f"deployments/{config.endpoint_name}"
    s3.put_object(Bucket=config.models_bucket, Key=f"{prefix}/{planned['name']}.json", Body=body,
                  ContentType="application/json")
    s3.put_object(Bucket=config.models_bucket, Key=f"{prefix}/latest.json", Body=body, ContentType="application/json")
    log.info("deployment recorded: %s", json.dumps(entry))
    return entry
