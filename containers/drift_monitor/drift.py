"""Drift statistics of the drift monitor: the features it watches, fixed bins from a baseline, PSI, the two-sample
Kolmogorov-Smirnov p-value, Model Monitor-style ``statistics.json`` / ``constraints.json`` documents, and the
comparison of one captured window with its baseline (violations and the values the metrics publish).

Pure numpy/scipy on feature values: decoding images and captured records is elsewhere (``features.py``,
``capture.py``), so every rule here can be tested on known distributions.

Bins. A numeric feature's bins are fixed by the baseline: the cut points are its deciles (``bins`` - 1 inner cut
points; a feature with at most ``bins`` distinct values, such as detections per frame, gets one bin per value plus
one below and one above the baseline's range; values within ``SAME_VALUE_RTOL`` of each other count as one). Bin
``i`` is ``[cut[i-1], cut[i])`` with open outer bins, so no value of a window falls outside the bins. The class mix
is a categorical histogram over the baseline's classes plus ``__other__``; the hue histogram has fixed 10-degree
bins.

PSI. ``sum((a - e) * ln(a / e))`` over the bins, ``e`` and ``a`` the baseline's and the window's proportions, each
floored at ``EPSILON`` (1e-4) so an empty bin costs a bounded amount instead of infinity. It is the symmetric
(Jeffreys) divergence of the two binned distributions: >= 0, 0 for identical proportions. Usual reading: < 0.1 no
shift, 0.1-0.2 moderate, > 0.2 significant (the default threshold).

KS. For continuous per-frame or per-detection features: the two-sample statistic ``D`` against the baseline's stored
reference values (all of them up to ``KS_REFERENCE_SIZE``, else that many evenly spaced order statistics), p-value as
``scipy.stats.ks_2samp(method="asymp")`` computes it from the real sample sizes. Reported, not a violation by
default: frames of a video are strongly correlated, so the test's i.i.d. assumption fails and p-values are far too
small; a ``ks_p_value_threshold`` in the constraints turns it into a check.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EPSILON = 1e-4
DEFAULT_BINS = 10
SAME_VALUE_RTOL = 1e-9  # baseline values closer than this (relative to the largest) count as one value
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_MIN_SAMPLE_SIZE = 100
DEFAULT_MAX_UNDECODABLE_FRACTION = 0.1
KS_REFERENCE_SIZE = 1000
OTHER = "__other__"
HUE_BIN_EDGES = tuple(range(0, 181, 10))  # OpenCV's hue: 0..179 (degrees / 2)
STATISTICS_VERSION = 0.0


@dataclass(frozen=True)
class Feature:
    name: str
    group: str  # "input" (the frames) or "prediction" (the endpoint's answers)
    kind: str  # "numeric", "categorical" or "histogram" (a distribution pooled over frames)
    unit: str  # what one observation is
    ks: bool  # whether the KS test is meaningful (continuous values)
    description: str


FEATURES = (
    Feature("brightness", "input", "numeric", "frame", True, "mean luma (BT.601) of the frame, 0..1"),
    Feature("contrast", "input", "numeric", "frame", True, "standard deviation of the luma (RMS contrast), 0..1"),
    Feature("sharpness", "input", "numeric", "frame", True,
            "variance of the Laplacian of the luma (8-bit scale), frame scaled to at most 320 px"),
    Feature("saturation", "input", "numeric", "frame", True, "mean HSV saturation, 0..1"),
    Feature("red", "input", "numeric", "frame", True, "mean red channel, 0..1"),
    Feature("green", "input", "numeric", "frame", True, "mean green channel, 0..1"),
    Feature("blue", "input", "numeric", "frame", True, "mean blue channel, 0..1"),
    Feature("hue", "input", "histogram", "frame", False,
            "hue histogram of the pixels with saturation >= 40/255 (10-degree bins), averaged over frames"),
    Feature("score", "prediction", "numeric", "detection", True, "score of each returned detection"),
    Feature("detections_per_frame", "prediction", "numeric", "frame", False, "number of detections returned"),
    Feature("box_area", "prediction", "numeric", "detection", True, "box area / frame area of each detection"),
    Feature("class", "prediction", "categorical", "detection", False, "label of each returned detection"),
)
FEATURE_BY_NAME = {f.name: f for f in FEATURES}


class BaselineError(ValueError):
    """The baseline statistics or constraints cannot be used."""


# -- maths -------------------------------------------------------------------------------------------------------------
def cut_points(values: Any, bins: int = DEFAULT_BINS) -> list[float]:
    """Inner cut points of ``bins`` baseline-quantile bins (fewer when quantiles tie; see the module docstring)."""
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    distinct = np.unique(v)
    # Values a few ulps apart are one value: the same box computed at two positions gives areas differing in the last
    # bit, and cut points between them would round onto them (not strictly increasing: the monitor rejects them).
    tolerance = SAME_VALUE_RTOL * max(1.0, float(np.max(np.abs(distinct))))
    distinct = distinct[np.concatenate([[True], np.diff(distinct) > tolerance])]
    if distinct.size == 1:
        half = max(abs(float(distinct[0])) * 1e-3, 1e-6)
        return [float(distinct[0]) - half, float(distinct[0]) + half]
    if distinct.size <= bins:  # discrete: a bin per value, and one each side of the baseline's range
        mids = (distinct[1:] + distinct[:-1]) / 2
        low = distinct[0] - (distinct[1] - distinct[0]) / 2
        high = distinct[-1] + (distinct[-1] - distinct[-2]) / 2
        return [float(x) for x in (low, *mids, high)]
    return [float(x) for x in np.unique(np.quantile(v, np.arange(1, bins) / bins))]


def bin_counts(values: Any, cuts: list[float]) -> np.ndarray:
    """Counts of ``values`` in the bins ``(-inf, c0), [c0, c1), ..., [c_last, inf)``; non-finite values dropped."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return np.bincount(np.searchsorted(np.asarray(cuts, float), v, side="right"), minlength=len(cuts) + 1)


def proportions(counts: Any) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    total = c.sum()
    if total <= 0:
        raise ValueError("no observations")
    return c / total


def psi(expected_counts: Any, actual_counts: Any, epsilon: float = EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts or proportions over the same bins)."""
    e = np.maximum(proportions(expected_counts), epsilon)
    a = np.maximum(proportions(actual_counts), epsilon)
    if e.shape != a.shape:
        raise ValueError(f"bin counts differ: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def ks_reference(values: Any, size: int = KS_REFERENCE_SIZE) -> list[float]:
    """What the baseline keeps for the KS test: the sorted values, or ``size`` evenly spaced order statistics."""
    v = np.sort(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if v.size > size:
        v = np.quantile(v, np.linspace(0, 1, size))
    return [float(x) for x in v]


def ks_p_value(reference: Any, reference_n: int, values: Any) -> tuple[float, float]:
    """(D, two-sided asymptotic p-value) of ``values`` against the baseline's reference sample of ``reference_n``."""
    ref = np.sort(np.asarray(reference, dtype=float))
    sample = np.sort(np.asarray(values, dtype=float))
    sample = sample[np.isfinite(sample)]
    if ref.size == 0 or sample.size == 0 or reference_n <= 0:
        return math.nan, math.nan
    grid = np.concatenate([ref, sample])
    d = float(np.max(np.abs(np.searchsorted(ref, grid, side="right") / ref.size
                            - np.searchsorted(sample, grid, side="right") / sample.size)))
    from scipy import stats as scipy_stats  # a second to import: only when there is something to test

    en = reference_n * sample.size / (reference_n + sample.size)
    return d, float(np.clip(scipy_stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def numerical_summary(values: Any) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    present = v[np.isfinite(v)]
    common = {"num_present": int(present.size), "num_missing": int(v.size - present.size)}
    if not present.size:
        return {"common": common}
    return {"common": common, "mean": float(present.mean()), "sum": float(present.sum()),
            "std_dev": float(present.std()), "min": float(present.min()), "max": float(present.max())}


def kll_buckets(cuts: list[float], counts: Any, low: float, high: float) -> list[dict[str, float]]:
    """The bins as Model Monitor's ``distribution.kll.buckets`` (outer bounds: the observed min and max)."""
    bounds = [min(low, cuts[0]) if cuts else low, *cuts, max(high, cuts[-1]) if cuts else high]
    return [{"lower_bound": float(bounds[i]), "upper_bound": float(bounds[i + 1]), "count": float(c)}
            for i, c in enumerate(counts)]


# -- samples -------------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """Feature observations of a set of frames and answers (the baseline's or one window's)."""

    numeric: dict[str, list[float]] = field(default_factory=dict)
    categorical: dict[str, Counter] = field(default_factory=dict)
    histogram_sum: dict[str, np.ndarray] = field(default_factory=dict)
    histogram_n: Counter = field(default_factory=Counter)

    def add(self, observations: dict[str, Any]) -> None:
        """``{feature: value, list of values, or (histogram) an array of proportions}``."""
        for name, value in observations.items():
            kind = FEATURE_BY_NAME[name].kind
            if kind == "numeric":
                values = value if isinstance(value, list | tuple) else [value]
                self.numeric.setdefault(name, []).extend(float(x) for x in values)
            elif kind == "categorical":
                self.categorical.setdefault(name, Counter()).update(value if isinstance(value, list) else [value])
            elif value is not None:
                total = self.histogram_sum.get(name)
                self.histogram_sum[name] = np.asarray(value, float) if total is None else total + value
                self.histogram_n[name] += 1

    def size(self, name: str) -> int:
        kind = FEATURE_BY_NAME[name].kind
        if kind == "numeric":
            return len(self.numeric.get(name, ()))
        if kind == "categorical":
            return sum(self.categorical.get(name, Counter()).values())
        return self.histogram_n[name]


# -- baseline documents ----------------------------------------------------------------------------------------------
def baseline_statistics(sample: Sample, bins: int = DEFAULT_BINS, item_count: int = 0,
                        sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """``statistics.json`` of a baseline: per feature Model Monitor's summaries plus the bins and proportions."""
    features = []
    for feature in FEATURES:
        n = sample.size(feature.name)
        if n == 0:
            continue  # e.g. no prediction source: the monitor then reports these without comparing
        entry: dict[str, Any] = {"name": feature.name, "group": feature.group, "unit": feature.unit,
                                 "description": feature.description}
        if feature.kind == "numeric":
            values = sample.numeric[feature.name]
            cuts = cut_points(values, bins)
            counts = bin_counts(values, cuts)
            summary = numerical_summary(values)
            summary["distribution"] = {"kll": {"buckets": kll_buckets(cuts, counts, summary["min"], summary["max"])}}
            entry.update(inferred_type="Fractional", numerical_statistics=summary,
                         histogram={"type": "cut_points", "cut_points": cuts, "counts": counts.tolist()})
            if feature.ks:
                entry["ks_reference"] = {"n": len(values), "values": ks_reference(values)}
        elif feature.kind == "categorical":
            counter = sample.categorical[feature.name]
            categories = sorted(counter)
            entry.update(inferred_type="String", string_statistics={
                "common": {"num_present": n, "num_missing": 0}, "distinct_count": float(len(categories)),
                "distribution": {"categorical": {"buckets": [{"value": c, "count": counter[c]} for c in categories]}}},
                histogram={"type": "categories", "categories": [*categories, OTHER],
                           "counts": [counter[c] for c in categories] + [0]})
        else:
            mean = sample.histogram_sum[feature.name] / n
            entry.update(inferred_type="Fractional", numerical_statistics={"common": {"num_present": n,
                                                                                      "num_missing": 0}},
                         histogram={"type": "bin_edges", "bin_edges": list(HUE_BIN_EDGES),
                                    "counts": [float(x) for x in mean]})
        features.append(entry)
    return {"version": STATISTICS_VERSION, "dataset": {"item_count": item_count, **(sources or {})},
            "features": features}


def baseline_constraints(statistics: dict[str, Any], psi_threshold: float = DEFAULT_PSI_THRESHOLD,
                         min_sample_size: int = DEFAULT_MIN_SAMPLE_SIZE,
                         max_undecodable_fraction: float = DEFAULT_MAX_UNDECODABLE_FRACTION) -> dict[str, Any]:
    """``constraints.json``: thresholds for every feature of the statistics (editable per feature afterwards)."""
    return {
        "version": STATISTICS_VERSION,
        "features": [{"name": f["name"], "inferred_type": f["inferred_type"], "completeness": 1.0,
                      "group": f["group"], "monitoringConfigOverrides": {}} for f in statistics["features"]],
        "monitoring_config": {
            "evaluate_constraints": "Enabled",
            "emit_metrics": "Enabled",
            "distribution_constraints": {"perform_comparison": "Enabled", "comparison_method": "PSI",
                                         "comparison_threshold": psi_threshold, "ks_p_value_threshold": None},
            "min_sample_size": min_sample_size,
            "max_undecodable_fraction": max_undecodable_fraction,
        },
    }


# -- comparison ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    evaluate: bool
    emit_metrics: bool
    compare: bool
    psi: float
    ks_p_value: float | None
    min_sample_size: int
    max_undecodable_fraction: float
    per_feature: dict[str, dict[str, Any]]

    def psi_for(self, name: str) -> float:
        return float(self.per_feature.get(name, {}).get("comparison_threshold", self.psi))

    def ks_for(self, name: str) -> float | None:
        value = self.per_feature.get(name, {}).get("ks_p_value_threshold", self.ks_p_value)
        return None if value is None else float(value)


def thresholds(constraints: dict[str, Any] | None) -> Thresholds:
    """The checks ``constraints.json`` asks for (defaults where it is silent or absent); raises BaselineError."""
    try:
        constraints = constraints or {}
        config = constraints.get("monitoring_config") or {}
        dist = config.get("distribution_constraints") or {}
        method = str(dist.get("comparison_method", "PSI"))
        if method.upper() != "PSI":
            raise BaselineError(f"comparison_method {method!r} is not supported (this monitor compares with PSI)")
        ks = dist.get("ks_p_value_threshold")
        overrides = {str(f["name"]): dict(f.get("monitoringConfigOverrides") or {})
                     for f in constraints.get("features") or []}
        result = Thresholds(
            evaluate=str(config.get("evaluate_constraints", "Enabled")).lower() == "enabled",
            emit_metrics=str(config.get("emit_metrics", "Enabled")).lower() == "enabled",
            compare=str(dist.get("perform_comparison", "Enabled")).lower() == "enabled",
            psi=float(dist.get("comparison_threshold", DEFAULT_PSI_THRESHOLD)),
            ks_p_value=None if ks is None else float(ks),
            min_sample_size=int(config.get("min_sample_size", DEFAULT_MIN_SAMPLE_SIZE)),
            max_undecodable_fraction=float(config.get("max_undecodable_fraction", DEFAULT_MAX_UNDECODABLE_FRACTION)),
            per_feature=overrides)
        for name in overrides:
            result.psi_for(name), result.ks_for(name)  # a bad override fails here, not mid-run
    except BaselineError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BaselineError(f"constraints are malformed: {type(exc).__name__}: {exc}") from exc
    if result.psi <= 0 or result.min_sample_size < 1:
        raise BaselineError("constraints need comparison_threshold > 0 and min_sample_size >= 1")
    # a p-value threshold outside [0, 1] would judge every feature without a KS result (p taken as 1.0) as drifted
    for name, value in [("", result.ks_p_value)] + [(n, result.ks_for(n)) for n in overrides]:
        if value is not None and not 0 <= value <= 1:
            where = f" (feature {name})" if name else ""
            raise BaselineError(f"constraints need ks_p_value_threshold between 0 and 1{where}, got {value}")
    return result


def check_baseline(statistics: Any) -> dict[str, dict[str, Any]]:
    """The baseline's features by name, each with usable bins; raises BaselineError."""
    if not isinstance(statistics, dict) or not isinstance(statistics.get("features"), list):
        raise BaselineError("baseline statistics have no 'features' list")
    features = {}
    for entry in statistics["features"]:
        try:
            name, hist = entry["name"], entry["histogram"]
            if name not in FEATURE_BY_NAME:
                continue  # a feature of another monitor version: ignored
            counts = np.asarray(hist["counts"], float)
            if hist["type"] == "cut_points":
                cuts = np.asarray(hist["cut_points"], float)
                ok = counts.size == cuts.size + 1 and bool(np.all(np.diff(cuts) > 0))
            elif hist["type"] == "categories":
                ok = len(hist["categories"]) == counts.size and OTHER in hist["categories"]
            else:
                ok = len(hist["bin_edges"]) == counts.size + 1
            if not ok or counts.sum() <= 0 or not np.all(np.isfinite(counts)):
                raise ValueError("bins and counts do not match")
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"baseline feature {entry.get('name') if isinstance(entry, dict) else entry!r} "
                                f"is malformed: {type(exc).__name__}: {exc}") from exc
        features[name] = entry
    if not features:
        raise BaselineError("baseline statistics hold no feature this monitor knows")
    return features


@dataclass
class Comparison:
    features: list[dict[str, Any]]  # the window's statistics, with a "drift" entry per compared feature
    violations: list[dict[str, str]]
    psi: dict[str, float]  # feature -> PSI, only the features evaluated (enough observations)
    group_max: dict[str, float]  # "input"/"prediction" -> max PSI over its evaluated features


def _window_counts(feature: Feature, baseline: dict[str, Any], sample: Sample) -> np.ndarray:
    hist = baseline["histogram"]
    if feature.kind == "numeric":
        return bin_counts(sample.numeric.get(feature.name, []), hist["cut_points"])
    if feature.kind == "categorical":
        counter = sample.categorical.get(feature.name, Counter())
        known = [c for c in hist["categories"] if c != OTHER]
        other = sum(v for k, v in counter.items() if k not in known)
        return np.array([counter.get(c, 0) if c != OTHER else other for c in hist["categories"]], float)
    n = sample.histogram_n[feature.name]
    return sample.histogram_sum[feature.name] / n if n else np.zeros(len(hist["counts"]))


def compare(baseline_features: dict[str, dict[str, Any]], limits: Thresholds, sample: Sample) -> Comparison:
    """The window's statistics against the baseline's bins: PSI (and KS) per feature, violations for the
    features with at least ``min_sample_size`` observations in the window and in the baseline whose PSI is over
    their threshold."""
    entries, violations, psis = [], [], {}
    for feature in FEATURES:
        n = sample.size(feature.name)
        entry: dict[str, Any] = {"name": feature.name, "group": feature.group, "unit": feature.unit}
        if feature.kind == "numeric":
            entry.update(inferred_type="Fractional", numerical_statistics=numerical_summary(
                sample.numeric.get(feature.name, [])))
        elif feature.kind == "categorical":
            counter = sample.categorical.get(feature.name, Counter())
            entry.update(inferred_type="String", string_statistics={
                "common": {"num_present": n, "num_missing": 0}, "distinct_count": float(len(counter)),
                "distribution": {"categorical": {"buckets": [{"value": c, "count": counter[c]}
                                                             for c in sorted(counter)]}}})
        else:
            entry.update(inferred_type="Fractional",
                         numerical_statistics={"common": {"num_present": n, "num_missing": 0}})
        baseline = baseline_features.get(feature.name)
        if baseline is None:
            entry["drift"] = {"status": "no_baseline"}
        elif n == 0:
            entry["drift"] = {"status": "no_data"}
        else:
            counts = _window_counts(feature, baseline, sample)
            value = psi(baseline["histogram"]["counts"], counts)
            threshold = limits.psi_for(feature.name)
            drift: dict[str, Any] = {"method": "PSI", "psi": round(value, 6), "threshold": threshold,
                                     "sample_size": n, "window_counts": [float(c) for c in counts]}
            ks_threshold = limits.ks_for(feature.name)
            if feature.ks and "ks_reference" in baseline:
                d, p = ks_p_value(baseline["ks_reference"]["values"], baseline["ks_reference"]["n"],
                                  sample.numeric[feature.name])
                drift.update(ks_statistic=round(d, 6), ks_p_value=p, ks_p_value_threshold=ks_threshold)
            summary = baseline.get("numerical_statistics") or baseline.get("string_statistics") or {}
            reference = int(summary.get("common", {}).get("num_present", sum(baseline["histogram"]["counts"])))
            if n < limits.min_sample_size:
                drift["status"] = "not_evaluated"
                drift["reason"] = f"{n} {feature.unit}s < min_sample_size {limits.min_sample_size}"
            elif reference < limits.min_sample_size:
                # A baseline of a handful of observations (e.g. the detections of a small test split) has bins that
                # sampling noise alone puts far from any window: PSI against it says nothing.
                drift["status"] = "not_evaluated"
                drift["reason"] = (f"the baseline has {reference} {feature.unit}s < min_sample_size "
                                   f"{limits.min_sample_size}")
            else:
                psis[feature.name] = value
                over_psi = limits.compare and value > threshold
                over_ks = (ks_threshold is not None and limits.compare
                           and drift.get("ks_p_value", 1.0) < ks_threshold)
                drift["status"] = "drift" if over_psi or over_ks else "ok"
                if limits.evaluate and (over_psi or over_ks):
                    reasons = []
                    if over_psi:
                        reasons.append(f"PSI {value:.3f} > threshold {threshold:g}")
                    if over_ks:
                        reasons.append(f"KS p-value {drift['ks_p_value']:.3g} < threshold {ks_threshold:g}")
                    violations.append({
                        "feature_name": feature.name, "constraint_check_type": "baseline_drift_check",
                        "description": f"{feature.group} feature '{feature.name}' ({feature.description}) drifted "
                                       f"from the baseline: {'; '.join(reasons)} over {n} {feature.unit}s"})
            entry["drift"] = drift
        entries.append(entry)
    group_max = {}
    for group in ("input", "prediction"):
        values = [v for k, v in psis.items() if FEATURE_BY_NAME[k].group == group]
        if values:
            group_max[group] = max(values)
    return Comparison(entries, violations, psis, group_max)
