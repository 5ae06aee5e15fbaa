"""The Model Monitor bring-your-own-container contract: the environment a monitoring job gets, and the files it
leaves (``statistics.json`` and ``constraint_violations.json`` in ``output_path``, CloudWatch metric lines in
``/opt/ml/output/metrics/cloudwatch/``, the exit message and the failure reason in ``/opt/ml/output/``).

``/opt/ml/output`` is ``$SM_OUTPUT_DIR`` when set (the local SageMaker maps it to the job's folder).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capture import parse_time

DEFAULT_DATASET_SOURCE = "/opt/ml/processing/input/endpoint"
DEFAULT_OUTPUT_PATH = "/opt/ml/processing/resultdata"
DEFAULT_OUTPUT_DIR = "/opt/ml/output"
METRICS_FILE = "drift_monitor.jsonl"
RESULT_METRICS_FILE = "cloudwatch_metrics.jsonl"  # the same lines, kept with the results (see write_metrics)


class ConfigError(ValueError):
    """The job's environment cannot be used."""


def output_dir() -> Path:
    return Path(os.environ.get("SM_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)


def write_status_file(name: str, text: str) -> None:
    """``message`` (the job's ExitMessage) or ``failure`` (its FailureReason)."""
    try:
        folder = output_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text.rstrip("\n")[:1024] + "\n")
    except OSError as exc:  # the reason is still in the log
        print(f"cannot write the {name} file: {exc}", file=sys.stderr)


@dataclass(frozen=True)
class MonitorConfig:
    dataset_source: Path
    output_path: Path
    baseline_statistics: Path | None
    baseline_constraints: Path | None
    start_time: datetime | None
    end_time: datetime | None
    publish_metrics: bool
    endpoint_name: str
    schedule_name: str
    metric_time: datetime
    metrics_dir: Path
    ignored: tuple[str, ...]  # contract variables set but not supported (printed)


def _time(env: Mapping[str, str], name: str) -> datetime | None:
    value = (env.get(name) or "").strip()
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ConfigError(f"{name} is not an ISO 8601 time: {value!r}") from None


def _switch(env: Mapping[str, str], name: str, default: str) -> bool:
    value = (env.get(name) or default).strip().lower()
    if value in ("enabled", "true", "1", "yes"):
        return True
    if value in ("disabled", "false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be Enabled or Disabled, got {env.get(name)!r}")


def config_from_env(env: Mapping[str, str]) -> MonitorConfig:
    start, end = _time(env, "start_time"), _time(env, "end_time")
    if start and end and end <= start:
        raise ConfigError(f"end_time {end.isoformat()} is not after start_time {start.isoformat()}")
    path = lambda name: Path(env[name]) if env.get(name) else None  # noqa: E731
    return MonitorConfig(
        dataset_source=Path(env.get("dataset_source") or DEFAULT_DATASET_SOURCE),
        output_path=Path(env.get("output_path") or DEFAULT_OUTPUT_PATH),
        baseline_statistics=path("baseline_statistics"),
        baseline_constraints=path("baseline_constraints"),
        start_time=start,
        end_time=end,
        publish_metrics=_switch(env, "publish_cloudwatch_metrics", "Disabled"),
        endpoint_name=env.get("sagemaker_endpoint_name", ""),
        schedule_name=env.get("sagemaker_monitoring_schedule_name", ""),
        metric_time=_time(env, "metric_time") or end or datetime.now(UTC).replace(microsecond=0),
        metrics_dir=output_dir() / "metrics" / "cloudwatch",
        ignored=tuple(n for n in ("record_preprocessor_script", "post_analytics_processor_script")
                      if env.get(n)),
    )


def read_json(path: Path, what: str) -> Any:
    """A JSON document; raises ValueError naming ``what`` (the caller decides whether that fails the job)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{what} {path} is not readable JSON: {type(exc).__name__}") from None


def write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, allow_nan=False, default=_jsonable))
    tmp.replace(path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def metric_lines(config: MonitorConfig, values: list[tuple[str, float, str]]) -> list[str]:
    """CloudWatch metric lines of the contract: ``{"MetricName", "Timestamp", "Dimensions", "Value", "Unit"}``."""
    stamp = config.metric_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    dimensions = [{"Name": "Endpoint", "Value": config.endpoint_name},
                  {"Name": "MonitoringSchedule", "Value": config.schedule_name}]
    return [json.dumps({"MetricName": name, "Timestamp": stamp, "Dimensions": dimensions, "Value": float(value),
                        "Unit": unit}) for name, value, unit in values]


def write_metrics(config: MonitorConfig, values: list[tuple[str, float, str]]) -> Path:
    """The metric lines where Model Monitor publishes them from, and a copy beside the results
    (``output_path/cloudwatch_metrics.jsonl``): a Processing job publishes nothing itself, so whoever runs the monitor
    as one publishes that copy."""
    text = "".join(line + "\n" for line in metric_lines(config, values))
    config.metrics_dir.mkdir(parents=True, exist_ok=True)
    path = config.metrics_dir / METRICS_FILE
    path.write_text(text)
    config.output_path.mkdir(parents=True, exist_ok=True)
    (config.output_path / RESULT_METRICS_FILE).write_text(text)
    return path
