"""Monitor probe: Model Monitor's container contract in a few lines, for the local SageMaker's tests.

Reads the captured records under ``dataset_source`` (toy endpoint: input ``{"x": ...}``, output ``{"y": ...}``),
skipping lines it cannot read; compares the mean input with ``baseline_statistics``; writes ``statistics.json`` and
``constraint_violations.json`` to ``output_path`` and, when ``publish_cloudwatch_metrics`` is Enabled, the metric
lines ``input_drift_psi``/``prediction_drift_psi`` (here |mean - baseline mean|) to /opt/ml/output/metrics/cloudwatch.
"""

import json
import os
from pathlib import Path


def records(source: Path) -> tuple[list[dict], int]:
    good, bad = [], 0
    for path in sorted(source.rglob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                capture = json.loads(line)["captureData"]
                good.append({"x": float(json.loads(capture["endpointInput"]["data"])["x"]),
                             "y": float(json.loads(capture["endpointOutput"]["data"])["y"])})
            except (ValueError, KeyError, TypeError):
                bad += 1
    return good, bad


def main() -> None:
    env = os.environ
    output = Path(env["output_path"])
    output.mkdir(parents=True, exist_ok=True)
    good, bad = records(Path(env["dataset_source"]))
    baseline = json.loads(Path(env["baseline_statistics"]).read_text()) if env.get("baseline_statistics") else {}
    limits = json.loads(Path(env["baseline_constraints"]).read_text()) if env.get("baseline_constraints") else {}
    threshold = float(limits.get("drift_threshold", 0.2))
    drift = {}
    if good:
        drift["input_drift_psi"] = abs(sum(r["x"] for r in good) / len(good) - baseline.get("x_mean", 0.0))
        drift["prediction_drift_psi"] = abs(sum(r["y"] for r in good) / len(good) - baseline.get("y_mean", 0.0))
    statistics = {"dataset": {"item_count": len(good), "malformed_count": bad},
                  "window": {"start_time": env["start_time"], "end_time": env["end_time"]},
                  "endpoint": env["sagemaker_endpoint_name"], "schedule": env["sagemaker_monitoring_schedule_name"],
                  "drift": drift, "message": "no captured data in the window" if not good else "ok"}
    (output / "statistics.json").write_text(json.dumps(statistics))
    violations = [{"feature_name": name, "constraint_check_type": "drift_check",
                   "description": f"{name} {value:.3f} above {threshold}"}
                  for name, value in drift.items() if value > threshold]
    (output / "constraint_violations.json").write_text(json.dumps({"violations": violations}))
    if env.get("publish_cloudwatch_metrics", "Disabled") == "Enabled" and drift:
        metrics = Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output")) / "metrics" / "cloudwatch"
        metrics.mkdir(parents=True, exist_ok=True)
        dimensions = [{"Name": "Endpoint", "Value": env["sagemaker_endpoint_name"]},
                      {"Name": "MonitoringSchedule", "Value": env["sagemaker_monitoring_schedule_name"]}]
        lines = [json.dumps({"MetricName": name, "Timestamp": env["metric_time"], "Dimensions": dimensions,
                             "Value": value}) for name, value in drift.items()]
        (metrics / "metrics.jsonl").write_text("\n".join([*lines, "not a metric line"]) + "\n")
    print(f"records={len(good)} malformed={bad} drift={drift} violations={len(violations)}", flush=True)


if __name__ == "__main__":
    main()
