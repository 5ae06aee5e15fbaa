"""Monitoring mode: one window of captured data against the baseline -> statistics, violations, metrics.

Outcomes (all exit 0, so the schedule keeps running; the job's exit message starts with the status Model Monitor
would give the execution):

- drift measured, none over threshold: ``Completed``;
- a feature over its threshold (``baseline_drift_check``), more undecodable records than allowed
  (``completeness_check``), no analysable frame or answer in the window (``no_data_check``), or too few to measure any
  feature (``insufficient_data_check``): ``CompletedWithViolations``.

Without data no PSI metric is published (an alarm on them sees missing data, not a false "no drift"); the counts are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import capture
import contract
import drift
import features
from contract import MonitorConfig


@dataclass(frozen=True)
class Outcome:
    violations: list[dict[str, str]]
    message: str


def load_baseline(config: MonitorConfig) -> tuple[dict[str, dict[str, Any]], drift.Thresholds]:
    """The baseline's features and the thresholds; raises BaselineError (the job fails)."""
    if config.baseline_statistics is None:
        raise drift.BaselineError("baseline_statistics is not set: the monitor needs the baseline's bins")
    try:
        statistics = contract.read_json(config.baseline_statistics, "baseline_statistics")
        constraints = (contract.read_json(config.baseline_constraints, "baseline_constraints")
                       if config.baseline_constraints else None)
    except ValueError as exc:
        raise drift.BaselineError(str(exc)) from None
    return drift.check_baseline(statistics), drift.thresholds(constraints)


def measure(config: MonitorConfig) -> tuple[drift.Sample, capture.ReadStats, int, int]:
    """(sample, read counts, frames measured, answers measured) of the window."""
    sample, stats = drift.Sample(), capture.ReadStats()
    frames = answers = 0
    started = time.monotonic()
    for record in capture.read_window(config.dataset_source, config.start_time, config.end_time, stats):
        problems = list(record.problems)
        usable = False
        for data in record.images:
            try:
                sample.add(features.frame_features(features.decode_image(data)))
                frames += 1
                usable = True
            except features.UndecodableError as exc:
                problems.append(str(exc))
        for answer in record.answers:
            try:
                sample.add(features.answer_features(answer))
                answers += 1
                usable = True
            except features.UndecodableError as exc:
                problems.append(str(exc))
        if usable:
            stats.used += 1
            for reason in sorted(set(problems)):
                stats.partial[reason] += 1
        else:
            stats.skipped["; ".join(sorted(set(problems))) or "line: nothing captured"] += 1
        if stats.in_window % 500 == 0:
            print(f"read {stats.in_window} records ({frames} frames, {answers} answers, "
                  f"{sum(stats.skipped.values())} skipped) in {time.monotonic() - started:.1f} s", flush=True)
    return sample, stats, frames, answers


def data_violations(stats: capture.ReadStats, frames: int, answers: int, comparison: drift.Comparison,
                    limits: drift.Thresholds, window: str) -> list[dict[str, str]]:
    skipped = sum(stats.skipped.values())
    reasons = ", ".join(f"{reason} ({count})" for reason, count in stats.skipped.most_common(5))
    found = []
    if frames == 0 and answers == 0:
        what = ("no captured records" if stats.in_window == 0
                else f"no decodable captured records ({skipped} of {stats.in_window} skipped: {reasons})")
        found.append({"feature_name": "captured_records", "constraint_check_type": "no_data_check",
                      "description": f"{what} in the window {window}: drift was not measured"})
        return found
    if stats.in_window and skipped / stats.in_window > limits.max_undecodable_fraction:
        found.append({"feature_name": "captured_records", "constraint_check_type": "completeness_check",
                      "description": f"{skipped} of {stats.in_window} captured records could not be decoded "
                                     f"(more than {limits.max_undecodable_fraction:.0%}): {reasons}"})
    if not comparison.psi:
        found.append({"feature_name": "captured_records", "constraint_check_type": "insufficient_data_check",
                      "description": f"{frames} frames and {answers} answers in the window {window}: no feature "
                                     f"has min_sample_size {limits.min_sample_size} observations, drift was not "
                                     f"evaluated"})
    return found


def metrics(stats: capture.ReadStats, frames: int, comparison: drift.Comparison,
            violations: list[dict[str, str]]) -> list[tuple[str, float, str]]:
    values = [("captured_records", stats.in_window, "Count"), ("analysed_frames", frames, "Count"),
              ("undecodable_records", sum(stats.skipped.values()), "Count"),
              ("constraint_violations", len(violations), "Count")]
    if "input" in comparison.group_max:
        values.append(("input_drift_psi", comparison.group_max["input"], "None"))
    if "prediction" in comparison.group_max:
        values.append(("prediction_drift_psi", comparison.group_max["prediction"], "None"))
    values += [(f"feature_psi_{name}", value, "None") for name, value in comparison.psi.items()]
    return values


def run(config: MonitorConfig) -> Outcome:
    for name in config.ignored:
        print(f"{name} is set but not supported by this container: ignored")
    baseline, limits = load_baseline(config)
    window = f"[{config.start_time.isoformat() if config.start_time else '-inf'}, " \
             f"{config.end_time.isoformat() if config.end_time else '+inf'})"
    print(f"endpoint {config.endpoint_name or '-'} schedule {config.schedule_name or '-'} window {window}; baseline "
          f"features: {', '.join(baseline)}; PSI threshold {limits.psi:g}, min sample {limits.min_sample_size}")
    if not config.dataset_source.is_dir():
        print(f"dataset_source {config.dataset_source} does not exist: no captured data")
    sample, stats, frames, answers = measure(config)
    print(f"read {stats.lines} lines in {stats.files} files: {stats.in_window} records in the window "
          f"({stats.outside_window} outside), {frames} frames, {answers} answers, "
          f"{sum(stats.skipped.values())} skipped")
    for reason, count in stats.skipped.most_common():
        print(f"  skipped {count}: {reason}")
    for reason, count in stats.partial.most_common():
        print(f"  partly used {count}: {reason}")
    comparison = drift.compare(baseline, limits, sample)
    for entry in comparison.features:
        d = entry["drift"]
        if "psi" in d:
            ks = f" KS p={d['ks_p_value']:.3g}" if "ks_p_value" in d else ""
            print(f"  {entry['group']:<10} {entry['name']:<21} n={d['sample_size']:<6} PSI={d['psi']:.4f} "
                  f"(threshold {d['threshold']:g}){ks} {d['status']}")
        else:
            print(f"  {entry['group']:<10} {entry['name']:<21} {d['status']}")
    violations = data_violations(stats, frames, answers, comparison, limits, window) + comparison.violations
    if not limits.evaluate:
        violations = [v for v in violations if v["constraint_check_type"] == "no_data_check"]
    summary = {"input_drift_psi": comparison.group_max.get("input"),
               "prediction_drift_psi": comparison.group_max.get("prediction"), "feature_psi": comparison.psi}
    if violations:
        message = f"CompletedWithViolations: Job completed successfully with {len(violations)} violations."
    else:
        message = "Completed: Job completed successfully with no violations."
    detail = (f" {stats.in_window} records, {frames} frames, {answers} answers, "
              f"{sum(stats.skipped.values())} undecodable")
    if frames == 0 and answers == 0:
        detail += "; no data in the window, drift not measured"
    for group in ("input", "prediction"):
        if group in comparison.group_max:
            detail += f"; {group}_drift_psi={comparison.group_max[group]:.3f}"
    statistics = {
        "version": drift.STATISTICS_VERSION,
        "dataset": {"item_count": frames},
        "monitoring": {
            "endpoint_name": config.endpoint_name, "monitoring_schedule_name": config.schedule_name,
            "start_time": config.start_time.isoformat() if config.start_time else None,
            "end_time": config.end_time.isoformat() if config.end_time else None,
            "files": stats.files, "lines": stats.lines, "captured_records": stats.in_window,
            "outside_window": stats.outside_window, "used_records": stats.used, "frames": frames,
            "answers": answers, "undecodable_records": sum(stats.skipped.values()),
            "skipped": dict(stats.skipped.most_common()), "partly_used": dict(stats.partial.most_common()),
            "message": (message + detail).strip(),
        },
        "drift_summary": summary,
        "features": comparison.features,
    }
    contract.write_json(config.output_path / "statistics.json", statistics)
    contract.write_json(config.output_path / "constraint_violations.json", {"violations": violations})
    print(f"wrote statistics.json and constraint_violations.json ({len(violations)} violations) to "
          f"{config.output_path}")
    for violation in violations:
        print(f"  violation {violation['constraint_check_type']} {violation['feature_name']}: "
              f"{violation['description']}")
    if config.publish_metrics and limits.emit_metrics:
        path = contract.write_metrics(config, metrics(stats, frames, comparison, violations))
        print(f"wrote CloudWatch metrics to {path}")
    return Outcome(violations, message + detail)
