"""CloudWatch metric alarms that evaluate: moto stores alarms but never looks at them; this evaluator does.

Runs as a thread inside the moto server process (``local_aws.moto_server``), next to moto's CloudWatch and
EventBridge backends: every ``LOCAL_ALARM_INTERVAL_S`` seconds (default 5) each metric alarm is evaluated against
moto's metric data as CloudWatch does (Statistic or ExtendedStatistic pNN, Period, EvaluationPeriods,
DatapointsToAlarm, Threshold, ComparisonOperator, TreatMissingData), its state is set with SetAlarmState semantics
(StateValue, StateReason with the figures, StateReasonData as CloudWatch writes it) and every change of state puts
AWS's "CloudWatch Alarm State Change" event on the default event bus, where the rules deliver it.

Local simplifications (documented): periods are aligned to multiples of Period since the epoch and the current,
still open period counts as the latest one (so a metric just published is seen at once); alarms on metric math or
anomaly bands and composite alarms are left alone. ``POST /local/alarms/evaluate`` on moto's port runs one pass now.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("local_aws.alarms")
_COMPARE = {
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}


@dataclass(frozen=True)
class Verdict:
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str
    reason_data: str


def _cw_time(moment: datetime) -> str:
    """CloudWatch's timestamp spelling in reasons and events: 2026-11-25T10:15:00.123+0000."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _short_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d/%m/%y %H:%M:%S")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _samples(datum: Any) -> tuple[list[float], dict[str, float]]:
    """Values of a datum (a single value) or its statistic set (min, max, sum, count)."""
    if hasattr(datum, "value"):
        return [float(datum.value)], {}
    return [], {"min": datum.min, "max": datum.max, "sum": datum.sum, "count": datum.sample_count}


def aggregate(data: list[Any], statistic: str) -> tuple[float, float] | None:
    """(value, sample count) of one period's data for a statistic; None when the period has no data."""
    values: list[float] = []
    sets: list[dict[str, float]] = []
    for datum in data:
        v, s = _samples(datum)
        values += v
        if s:
            sets.append(s)
    count = len(values) + sum(s["count"] for s in sets)
    if count == 0:
        return None
    if statistic == "SampleCount":
        return count, count
    if statistic == "Sum":
        return sum(values) + sum(s["sum"] for s in sets), count
    if statistic == "Average":
        return (sum(values) + sum(s["sum"] for s in sets)) / count, count
    if statistic == "Minimum":
        return min(values + [s["min"] for s in sets]), count
    if statistic == "Maximum":
        return max(values + [s["max"] for s in sets]), count
    if statistic.startswith("p") and values:  # percentiles of raw values (nearest rank)
        ordered = sorted(values)
        rank = max(1, math.ceil(float(statistic[1:]) / 100 * len(ordered)))
        return ordered[rank - 1], count
    return None


def evaluate(alarm: Any, data: list[Any], now: datetime) -> Verdict | None:
    """The state one metric alarm should be in now, or None when it keeps its state (``ignore``, unsupported)."""
    if alarm.comparison_operator not in _COMPARE or alarm.metric_data_queries or getattr(alarm, "rule", None):
        return None
    compare, words = _COMPARE[alarm.comparison_operator]
    statistic = alarm.statistic or alarm.extended_statistic
    period, periods = int(alarm.period), int(alarm.evaluation_periods)
    needed = int(alarm.datapoints_to_alarm or periods)
    threshold = float(alarm.threshold)
    wanted = {(d.name, d.value) for d in alarm.dimensions}
    matching = [d for d in data if d.namespace == alarm.namespace and d.name == alarm.metric_name
                and {(x.name, x.value) for x in d.dimensions} == wanted]
    latest = int(now.timestamp()) // period * period
    starts = [latest - i * period for i in range(periods - 1, -1, -1)]  # oldest first
    points: list[tuple[datetime, tuple[float, float] | None]] = []
    for start in starts:
        in_period = [d for d in matching if start <= _aware(d.timestamp).timestamp() < start + period]
        points.append((datetime.fromtimestamp(start, UTC), aggregate(in_period, statistic)))
    present = [(t, p) for t, p in points if p is not None]
    treat = alarm.treat_missing_data or "missing"
    reason_data = {
        "version": "1.0", "queryDate": _cw_time(now), "startDate": _cw_time(points[0][0]), "statistic": statistic,
        "period": period, "recentDatapoints": [round(p[0], 6) for _, p in present], "threshold": threshold,
        "evaluatedDatapoints": [{"timestamp": _cw_time(t), "sampleCount": p[1], "value": p[0]}
                                for t, p in reversed(present)],
    }
    if not present:
        if treat == "ignore":
            return None
        state = {"breaching": "ALARM", "notBreaching": "OK"}.get(treat, "INSUFFICIENT_DATA")
        noun = "datapoint was" if periods == 1 else "datapoints were"
        reason = (f"Insufficient Data: {periods} {noun} unknown." if state == "INSUFFICIENT_DATA" else
                  f"Threshold Crossed: no datapoints were received for {periods} period"
                  f"{'s' if periods > 1 else ''} and {periods} missing datapoint"
                  f"{'s were' if periods > 1 else ' was'} treated as [{treat[0].upper() + treat[1:]}].")
        return Verdict(state, reason, json.dumps(reason_data))
    breaching = sum(1 for _, p in present if compare(p[0], threshold))
    missing = len(points) - len(present)
    if treat == "breaching":
        breaching += missing
    state = "ALARM" if breaching >= needed else "OK"
    shown = ", ".join(f"{p[0]:g} ({_short_time(t)})" for t, p in reversed(present))
    count = len(present)
    if state == "ALARM":
        verb = "was" if count == 1 else "were"
        head = (f"{count} datapoint" if count == 1 else
                f"{breaching} out of the last {periods} datapoints")
        reason = f"Threshold Crossed: {head} [{shown}] {verb} {words} the threshold ({threshold:g})."
    else:
        head = f"{count} datapoint" if count == 1 else f"{count} datapoints"
        verb = "was" if count == 1 else "were"
        reason = f"Threshold Crossed: {head} [{shown}] {verb} not {words} the threshold ({threshold:g})."
    return Verdict(state, reason, json.dumps(reason_data))


def state_change_event(alarm: Any, previous: dict[str, Any], account: str, region: str) -> dict[str, Any]:
    """The PutEvents entry of a "CloudWatch Alarm State Change" (the detail as CloudWatch sends it)."""
    dimensions = {d.name: d.value for d in alarm.dimensions}
    stat = alarm.statistic or alarm.extended_statistic
    detail = {
        "alarmName": alarm.name,
        "state": {"value": alarm.state_value, "reason": alarm.state_reason, "reasonData": alarm.state_reason_data,
                  "timestamp": _cw_time(_aware(alarm.state_updated_timestamp))},
        "previousState": previous,
        "configuration": {
            "description": alarm.description or "",
            "metrics": [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, alarm.alarm_arn)),
                         "metricStat": {"metric": {"namespace": alarm.namespace, "name": alarm.metric_name,
                                                   "dimensions": dimensions},
                                        "period": int(alarm.period), "stat": stat},
                         "returnData": True}],
        },
    }
    return {"Source": "aws.cloudwatch", "DetailType": "CloudWatch Alarm State Change", "Resources": [alarm.alarm_arn],
            "Detail": json.dumps(detail), "EventBusName": "default"}


class AlarmEvaluator:
    """Evaluates every metric alarm of every account/region of moto's CloudWatch, now and then."""

    def __init__(self, interval_s: float | None = None) -> None:
        self.interval_s = interval_s or float(os.environ.get("LOCAL_ALARM_INTERVAL_S", "5"))
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, daemon=True, name="alarm-evaluator").start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.evaluate_all()
            except Exception:  # one bad alarm must not end evaluation for good
                log.exception("alarm evaluation failed")

    def evaluate_all(self, names: list[str] | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
        """One pass; returns the state changes made."""
        from moto.cloudwatch.models import cloudwatch_backends
        from moto.events.models import events_backends

        now = now or datetime.now(UTC)
        changes = []
        with self._lock:  # the timer and an evaluate-now never interleave
            for account, regions in list(cloudwatch_backends.items()):
                for region, backend in list(regions.items()):
                    data = list(backend.get_all_metrics())
                    for alarm in list(backend.alarms.values()):
                        if names and alarm.name not in names:
                            continue
                        verdict = evaluate(alarm, data, now)
                        if verdict is None or verdict.state == alarm.state_value:
                            continue
                        previous = {"value": alarm.state_value, "reason": alarm.state_reason,
                                    "reasonData": alarm.state_reason_data,
                                    "timestamp": _cw_time(_aware(alarm.state_updated_timestamp))}
                        backend.set_alarm_state(alarm.name, verdict.reason, verdict.reason_data, verdict.state)
                        log.info("alarm %s: %s -> %s (%s)", alarm.name, previous["value"], verdict.state,
                                 verdict.reason)
                        events_backends[account][region].put_events(
                            [state_change_event(alarm, previous, account, region)])
                        changes.append({"AlarmName": alarm.name, "PreviousStateValue": previous["value"],
                                        "StateValue": verdict.state, "StateReason": verdict.reason})
        return changes
