"""The drift monitor container: PSI and KS on known distributions (property tests), and the container run as a
process the way the local SageMaker runs it (the Dockerfile's ENTRYPOINT with its COPY paths mapped back to the
folder, Model Monitor's environment): a baseline from a generated dataset version, then captured windows of normal,
dark, smoke, empty and garbage data. Runs in the drift monitor's test environment (tests/container_code/run.py): its
numpy, scipy and OpenCV are the container's own."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import subprocess
import sys
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from include.synthetic import make_scene, render_frame
from local_aws.sagemaker.containers import parse_dockerfile
from local_aws.sagemaker.runners import base_environment
from tests.datasets import make_dataset

FOLDER = Path(__file__).resolve().parents[3] / "containers" / "drift_monitor"
SIZE = (96, 64)  # frames are tiny: the features are per-frame statistics, the test runs in seconds
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


def _load(name: str):
    # registered under its repository name (what mutation testing's trampolines check)
    spec = importlib.util.spec_from_file_location(f"containers.drift_monitor.{name}", FOLDER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


drift = _load("drift")


# -- maths ---------------------------------------------------------------------------------------------------------
def test_psi_of_known_proportions() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert drift.psi([1, 1, 1, 1], [1, 1, 1, 1]) == 0.0
    # An empty bin costs a bounded amount (floored at 1e-4), not infinity.
    assert drift.psi([1, 0], [1, 1]) == pytest.approx((0.5 - 1e-4) * math.log(0.5 / 1e-4) + (0.5 - 1) * math.log(0.5))


def test_psi_of_a_shifted_normal_is_large_and_of_a_resample_small() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 20000)
    cuts = drift.cut_points(base, 10)
    assert len(cuts) == 9
    expected = drift.bin_counts(base, cuts)
    assert expected.tolist() == pytest.approx([2000] * 10, abs=1)  # deciles: equal bins
    assert drift.psi(expected, drift.bin_counts(rng.normal(0, 1, 20000), cuts)) < 0.01
    assert drift.psi(expected, drift.bin_counts(rng.normal(1, 1, 20000), cuts)) > 0.8


def test_discrete_values_get_one_bin_each_and_outer_bins() -> None:
    cuts = drift.cut_points([0, 1, 1, 2, 2, 2, 3], 10)
    assert cuts == [-0.5, 0.5, 1.5, 2.5, 3.5]
    assert drift.bin_counts([0, 1, 2, 3, 7, -1], cuts).tolist() == [1, 1, 1, 1, 1, 1]
    assert drift.cut_points([5.0] * 10)[0] < 5.0 < drift.cut_points([5.0] * 10)[1]


def test_values_a_few_ulps_apart_are_one_value_and_the_cut_points_stay_strictly_increasing() -> None:
    """An untrained model's boxes: the same box at two positions, areas differing in the last bit (seen in a loop run:
    the baseline's cut points came out equal and the monitor rejected its own baseline)."""
    a, b = 0.06834716796874996, 0.06834716796874998
    cuts = drift.cut_points([a] * 40 + [b] * 60, 10)
    assert len(cuts) == 2 and cuts[0] < a < b < cuts[1]
    values = [a] * 40 + [b] * 60 + [0.5, 0.5000000000000001]
    cuts = drift.cut_points(values, 10)
    assert bool(np.all(np.diff(cuts) > 0)) and drift.bin_counts(values, cuts).sum() == len(values)
    sample = drift.Sample()
    sample.numeric["box_area"] = [a] * 40 + [b] * 60
    stats_doc = drift.baseline_statistics(sample)
    assert "box_area" in drift.check_baseline(stats_doc)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40), st.integers(2, 12))
def test_cut_points_are_strictly_increasing_for_any_baseline(values: list[float], bins: int) -> None:
    cuts = drift.cut_points(values, bins)
    assert cuts and bool(np.all(np.diff(cuts) > 0))
    assert drift.bin_counts(values, cuts).sum() == len(values)


def _normal_bins(delta: float, cuts: np.ndarray) -> np.ndarray:
    cdf = stats.norm.cdf(np.concatenate([[-np.inf], cuts, [np.inf]]) - delta)
    return np.diff(cdf)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.001, 1000), min_size=2, max_size=12), st.lists(st.floats(0.001, 1000), min_size=2,
                                                                           max_size=12))
def test_psi_is_non_negative_and_zero_against_itself(expected: list[float], actual: list[float]) -> None:
    n = min(len(expected), len(actual))
    assert drift.psi(expected[:n], actual[:n]) >= -1e-12
    assert drift.psi(expected, expected) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 3.0), st.floats(0.01, 1.0), st.integers(2, 20))
def test_psi_grows_with_the_shift_of_a_normal(shift: float, more: float, bins: int) -> None:
    cuts = stats.norm.ppf(np.arange(1, bins) / bins)
    expected = _normal_bins(0.0, cuts)
    assert drift.psi(expected, _normal_bins(shift, cuts)) <= drift.psi(expected, _normal_bins(shift + more, cuts))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(20, 400))
def test_psi_of_a_sample_against_itself_is_zero(seed: int, n: int) -> None:
    values = np.random.default_rng(seed).gamma(2.0, 1.0, n)
    cuts = drift.cut_points(values, 10)
    counts = drift.bin_counts(values, cuts)
    assert counts.sum() == n
    assert drift.psi(counts, counts) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(10, 300), st.integers(10, 300), st.floats(0.0, 1.5))
def test_ks_matches_scipy_when_the_reference_is_the_whole_baseline(seed: int, m: int, n: int, shift: float) -> None:
    rng = np.random.default_rng(seed)
    base, window = rng.normal(0, 1, m), rng.normal(shift, 1, n)
    d, p = drift.ks_p_value(drift.ks_reference(base), m, window)
    expected = stats.ks_2samp(base, window, method="asymp")
    assert d == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


def test_ks_with_a_subsampled_reference() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 50000)
    reference = drift.ks_reference(base)
    assert len(reference) == drift.KS_REFERENCE_SIZE
    assert drift.ks_p_value(reference, base.size, rng.normal(0, 1, 500))[1] > 0.01
    assert drift.ks_p_value(reference, base.size, rng.normal(0.5, 1, 500))[1] < 1e-10


def test_malformed_baseline_and_constraints_are_refused() -> None:
    with pytest.raises(drift.BaselineError, match="features"):
        drift.check_baseline({"version": 0})
    with pytest.raises(drift.BaselineError, match="malformed"):
        drift.check_baseline({"features": [{"name": "brightness", "histogram": {"type": "cut_points",
                                                                                "cut_points": [1, 0],
                                                                                "counts": [1, 1, 1]}}]})
    with pytest.raises(drift.BaselineError, match="comparison_method"):
        drift.thresholds({"monitoring_config": {"distribution_constraints": {"comparison_method": "Robust"}}})
    limits = drift.thresholds({"features": [{"name": "score", "monitoringConfigOverrides": {
        "comparison_threshold": 0.5}}]})
    assert (limits.psi, limits.psi_for("score"), limits.psi_for("brightness")) == (0.2, 0.5, 0.2)


# -- every rule on known values: cut points, bins, summaries, documents --------------------------------------------
def test_cut_points_of_each_kind_of_baseline() -> None:
    with pytest.raises(ValueError, match=r"^bins must be >= 2, got 1$"):
        drift.cut_points([1.0, 2.0], 1)
    assert drift.cut_points([0, 1, 2, 3], 2) == [1.5]  # two bins: one cut, at the median
    assert drift.cut_points([], 4) == [] and drift.cut_points([math.nan, math.inf], 4) == []
    # quantile bins: bins - 1 inner cut points at the quantiles
    assert drift.cut_points(list(range(12)), 4) == [2.75, 5.5, 8.25]
    # discrete (at most `bins` distinct values): a bin per value, the outer cuts half a step outside the range
    assert drift.cut_points([1, 2, 4, 8, 8], 4) == [0.5, 1.5, 3.0, 6.0, 10.0]
    # one value: a bin around it (relative half-width 1e-3, at least 1e-6)
    assert drift.cut_points([5.0, 5.0], 4) == [4.995, 5.005]
    assert drift.cut_points([-5.0], 4) == [-5.005, -4.995]
    assert drift.cut_points([0.0], 4) == [-1e-6, 1e-6]
    # "the same value": closer than 1e-9 relative to the largest magnitude (at least 1)
    assert len(drift.cut_points([0.0, 1e-9], 4)) == 2  # exactly the tolerance apart: one value
    assert len(drift.cut_points([0.5, 0.5 + 1.5e-9], 4)) == 3  # over it: two values
    assert len(drift.cut_points([1e6, 1e6 + 1e-4], 4)) == 2  # within 1e-9 of 1e6: one value


def test_bin_counts_proportions_and_psi_edges() -> None:
    assert drift.bin_counts([0.5, 1.0, 2.0], [0.5, 1.0]).tolist() == [0, 1, 2]  # a cut point opens its bin
    assert drift.bin_counts([math.nan, -math.inf, 0.1], [1.0, 2.0]).tolist() == [1, 0, 0]
    assert drift.bin_counts([], [1.0, 2.0]).tolist() == [0, 0, 0]
    assert drift.proportions([1, 3]).tolist() == [0.25, 0.75]
    for empty in ([0, 0], [], [-1, 1]):
        with pytest.raises(ValueError, match=r"^no observations$"):
            drift.proportions(empty)
    with pytest.raises(ValueError, match=r"^bin counts differ: \(2,\) vs \(3,\)$"):
        drift.psi([1, 1], [1, 1, 1])
    assert drift.psi([1, 1], [1, 3], epsilon=0.3) == pytest.approx(  # 0.25 floored at 0.3
        (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5))
    assert drift.psi([1, 0], [0, 1], epsilon=0.25) == pytest.approx(2 * 0.75 * math.log(4))


def test_values_given_as_text_are_numbers() -> None:
    assert drift.cut_points(["1", "2", "4", "8"], 4) == [0.5, 1.5, 3.0, 6.0, 10.0]
    assert drift.bin_counts(["9", "11"], ["10"]).tolist() == [1, 1]  # as numbers: 9 < 10 <= 11
    assert "brightness" in drift.check_baseline({"features": [_numeric("brightness", ["0.5", "10"], [1, 1, 1])]})
    assert drift.proportions(["1", "3"]).tolist() == [0.25, 0.75]
    assert drift.ks_reference(["2", "1"]) == [1.0, 2.0]
    assert drift.ks_p_value(["1", "2"], 2, ["1", "2"]) == (0.0, 1.0)
    assert drift.numerical_summary(["2"])["sum"] == 2.0


def test_ks_reference_and_ks_edges() -> None:
    assert drift.ks_reference([3.0, math.nan, 1.0, 2.0]) == [1.0, 2.0, 3.0]
    assert drift.ks_reference([float(i) for i in range(11)], 3) == [0.0, 5.0, 10.0]
    values = [float(i) for i in range(1000)]
    assert drift.ks_reference(values, 1000) == values  # no more than `size`: kept as they are
    assert drift.ks_p_value([0.5], 1, [0.2, 0.7]) == (0.5, 1.0)
    d, p = drift.ks_p_value([0.0, 1.0], 2, [0.5])
    assert (d, p) == (0.5, pytest.approx(stats.kstwo.sf(0.5, 1)))
    for reference, n, window in (([], 3, [0.2]), ([1.0], 0, [0.2]), ([1.0], 3, [math.nan]), ([1.0], 3, [])):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to test is not a division by zero
            d, p = drift.ks_p_value(reference, n, window)
        assert math.isnan(d) and math.isnan(p)
    # the p-value uses the baseline's real size (not the reference's), as ks_2samp with both samples would
    d, p = drift.ks_p_value([0.0, 1.0], 50, [0.4] * 10)
    assert d == 0.5 and p == pytest.approx(stats.kstwo.sf(0.5, round(50 * 10 / 60)))


def test_numerical_summary_and_kll_buckets() -> None:
    assert drift.numerical_summary([1.0, math.nan, 3.0, math.inf]) == {
        "common": {"num_present": 2, "num_missing": 2}, "mean": 2.0, "sum": 4.0, "std_dev": 1.0, "min": 1.0,
        "max": 3.0}
    assert drift.numerical_summary([math.nan]) == {"common": {"num_present": 0, "num_missing": 1}}
    assert drift.numerical_summary([]) == {"common": {"num_present": 0, "num_missing": 0}}
    assert drift.kll_buckets([1.0, 2.0], [1, 2, 3], 0.5, 2.5) == [
        {"lower_bound": 0.5, "upper_bound": 1.0, "count": 1.0}, {"lower_bound": 1.0, "upper_bound": 2.0, "count": 2.0},
        {"lower_bound": 2.0, "upper_bound": 2.5, "count": 3.0}]
    assert drift.kll_buckets([1.0, 2.0], [0, 2, 0], 1.5, 1.8) == [  # outer bounds never inside the cut points
        {"lower_bound": 1.0, "upper_bound": 1.0, "count": 0.0}, {"lower_bound": 1.0, "upper_bound": 2.0, "count": 2.0},
        {"lower_bound": 2.0, "upper_bound": 2.0, "count": 0.0}]
    assert drift.kll_buckets([], [4], 1.0, 2.0) == [{"lower_bound": 1.0, "upper_bound": 2.0, "count": 4.0}]


def test_a_sample_collects_each_kind_of_feature() -> None:
    sample = drift.Sample()
    sample.add({"brightness": 0.5, "score": [0.9, 0.8], "box_area": (0.1,), "class": "tumor", "hue": [0.5, 0.5]})
    sample.add({"brightness": 1, "score": [], "class": ["tumor", "scalpel"], "hue": np.array([0.0, 1.0])})
    sample.add({"hue": None, "class": []})
    assert sample.numeric == {"brightness": [0.5, 1.0], "score": [0.9, 0.8], "box_area": [0.1]}
    assert sample.categorical == {"class": Counter({"tumor": 2, "scalpel": 1})}
    assert sample.histogram_sum["hue"].tolist() == [0.5, 1.5] and sample.histogram_n == Counter({"hue": 2})
    assert [sample.size(n) for n in ("brightness", "score", "box_area", "class", "hue", "contrast")] == [2, 2, 1, 3, 2,
                                                                                                     0]
    assert drift.Sample().size("class") == 0 and drift.Sample().size("hue") == 0
    counts = drift.Sample()
    counts.add({"hue": [1] + [0] * 17})  # a histogram of counts: summed as floats
    assert counts.histogram_sum["hue"].dtype == np.float64


def test_baseline_documents_of_a_known_sample() -> None:
    sample = drift.Sample()
    for v in range(12):
        sample.add({"brightness": float(v)})
    hues = [np.full(18, 1 / 18), np.arange(18) / 153]
    sample.add({"detections_per_frame": (0, 1, 1), "class": ["tumor", "scalpel"], "hue": hues[0]})
    sample.add({"detections_per_frame": [2, 2, 2], "class": "scalpel", "hue": hues[1]})
    statistics = drift.baseline_statistics(sample, bins=4, item_count=7, sources={"splits": ["train"]})
    assert statistics == {"version": 0.0, "dataset": {"item_count": 7, "splits": ["train"]}, "features": [
        {"name": "brightness", "group": "input", "unit": "frame",
         "description": "mean luma (BT.601) of the frame, 0..1", "inferred_type": "Fractional",
         "numerical_statistics": {
             "common": {"num_present": 12, "num_missing": 0}, "mean": 5.5, "sum": 66.0,
             "std_dev": float(np.std(np.arange(12.0))), "min": 0.0, "max": 11.0, "distribution": {"kll": {"buckets": [
                 {"lower_bound": 0.0, "upper_bound": 2.75, "count": 3.0},
                 {"lower_bound": 2.75, "upper_bound": 5.5, "count": 3.0},
                 {"lower_bound": 5.5, "upper_bound": 8.25, "count": 3.0},
                 {"lower_bound": 8.25, "upper_bound": 11.0, "count": 3.0}]}}},
         "histogram": {"type": "cut_points", "cut_points": [2.75, 5.5, 8.25], "counts": [3, 3, 3, 3]},
         "ks_reference": {"n": 12, "values": [float(v) for v in range(12)]}},
        {"name": "hue", "group": "input", "unit": "frame",
         "description": "hue histogram of the pixels with saturation >= 40/255 (10-degree bins), averaged over frames",
         "inferred_type": "Fractional", "numerical_statistics": {"common": {"num_present": 2, "num_missing": 0}},
         "histogram": {"type": "bin_edges", "bin_edges": list(range(0, 181, 10)),
                       "counts": ((hues[0] + hues[1]) / 2).tolist()}},
        {"name": "detections_per_frame", "group": "prediction", "unit": "frame",
         "description": "number of detections returned", "inferred_type": "Fractional", "numerical_statistics": {
             "common": {"num_present": 6, "num_missing": 0}, "mean": 8 / 6, "sum": 8.0,
             "std_dev": float(np.std([0, 1, 1, 2, 2, 2])), "min": 0.0, "max": 2.0,
             "distribution": {"kll": {"buckets": [
                 {"lower_bound": -0.5, "upper_bound": -0.5, "count": 0.0},
                 {"lower_bound": -0.5, "upper_bound": 0.5, "count": 1.0},
                 {"lower_bound": 0.5, "upper_bound": 1.5, "count": 2.0},
                 {"lower_bound": 1.5, "upper_bound": 2.5, "count": 3.0},
                 {"lower_bound": 2.5, "upper_bound": 2.5, "count": 0.0}]}}},
         "histogram": {"type": "cut_points", "cut_points": [-0.5, 0.5, 1.5, 2.5], "counts": [0, 1, 2, 3, 0]}},
        {"name": "class", "group": "prediction", "unit": "detection", "description": "label of each returned detection",
         "inferred_type": "String", "string_statistics": {
             "common": {"num_present": 3, "num_missing": 0}, "distinct_count": 2.0,
             "distribution": {"categorical": {"buckets": [{"value": "scalpel", "count": 2},
                                                          {"value": "tumor", "count": 1}]}}},
         "histogram": {"type": "categories", "categories": ["scalpel", "tumor", "__other__"], "counts": [2, 1, 0]}}]}
    assert drift.baseline_statistics(drift.Sample()) == {"version": 0.0, "dataset": {"item_count": 0},
                                                         "features": []}
    constraints = drift.baseline_constraints(statistics, 0.3, 20, 0.25)
    assert constraints == {"version": 0.0, "features": [
        {"name": name, "inferred_type": kind, "completeness": 1.0, "group": group, "monitoringConfigOverrides": {}}
        for name, kind, group in (("brightness", "Fractional", "input"), ("hue", "Fractional", "input"),
                                  ("detections_per_frame", "Fractional", "prediction"),
                                  ("class", "String", "prediction"))],
        "monitoring_config": {
            "evaluate_constraints": "Enabled", "emit_metrics": "Enabled", "distribution_constraints": {
                "perform_comparison": "Enabled", "comparison_method": "PSI", "comparison_threshold": 0.3,
                "ks_p_value_threshold": None}, "min_sample_size": 20, "max_undecodable_fraction": 0.25}}
    defaults = drift.baseline_constraints(statistics)["monitoring_config"]
    assert (defaults["distribution_constraints"]["comparison_threshold"], defaults["min_sample_size"],
            defaults["max_undecodable_fraction"]) == (0.2, 100, 0.1)
    # the documents are what the monitor reads back
    assert list(drift.check_baseline(statistics)) == ["brightness", "hue", "detections_per_frame", "class"]
    assert drift.thresholds(constraints) == drift.Thresholds(True, True, True, 0.3, None, 20, 0.25, {
        "brightness": {}, "hue": {}, "detections_per_frame": {}, "class": {}})


# -- the constraints and the baseline as the monitor reads them ---------------------------------------------------
def test_thresholds_defaults_and_every_setting() -> None:
    default = drift.Thresholds(True, True, True, 0.2, None, 100, 0.1, {})
    assert drift.thresholds(None) == default and drift.thresholds({}) == default
    assert drift.thresholds({"monitoring_config": None, "features": None}) == default
    lower_case = {"monitoring_config": {"distribution_constraints": {"comparison_method": "psi"}}}
    assert drift.thresholds(lower_case) == default
    limits = drift.thresholds({"monitoring_config": {
        "evaluate_constraints": "Disabled", "emit_metrics": "disabled", "min_sample_size": 1,
        "max_undecodable_fraction": "0.5", "distribution_constraints": {
            "perform_comparison": "DISABLED", "comparison_threshold": "0.35", "ks_p_value_threshold": "0.01"}},
        "features": [{"name": "score", "monitoringConfigOverrides": {"comparison_threshold": 0.5,
                                                                     "ks_p_value_threshold": None}},
                     {"name": "class", "monitoringConfigOverrides": None},
                     {"name": "hue", "monitoringConfigOverrides": {"ks_p_value_threshold": "0.2"}}]})
    assert limits == drift.Thresholds(False, False, False, 0.35, 0.01, 1, 0.5, {
        "score": {"comparison_threshold": 0.5, "ks_p_value_threshold": None}, "class": {},
        "hue": {"ks_p_value_threshold": "0.2"}})
    assert [limits.psi_for(n) for n in ("score", "class", "hue")] == [0.5, 0.35, 0.35]
    assert [limits.ks_for(n) for n in ("score", "class", "hue")] == [None, 0.01, 0.2]
    enabled = drift.thresholds({"monitoring_config": {"evaluate_constraints": "ENABLED", "emit_metrics": "enabled",
                                                      "distribution_constraints": {"perform_comparison": "Enabled"}}})
    assert (enabled.evaluate, enabled.emit_metrics, enabled.compare) == (True, True, True)


@pytest.mark.parametrize(("constraints", "message"), [
    ({"monitoring_config": {"distribution_constraints": {"comparison_method": "Robust"}}},
     "comparison_method 'Robust' is not supported (this monitor compares with PSI)"),
    ({"monitoring_config": {"min_sample_size": "many"}},
     "constraints are malformed: ValueError: invalid literal for int() with base 10: 'many'"),
    ({"monitoring_config": "x"}, "constraints are malformed: AttributeError: 'str' object has no attribute 'get'"),
    ({"features": [{"monitoringConfigOverrides": {}}]}, "constraints are malformed: KeyError: 'name'"),
    ({"features": [{"name": "score", "monitoringConfigOverrides": {"comparison_threshold": "x"}}]},
     "constraints are malformed: ValueError: could not convert string to float: 'x'"),
    ({"features": [{"name": "score", "monitoringConfigOverrides": {"ks_p_value_threshold": "y"}}]},
     "constraints are malformed: ValueError: could not convert string to float: 'y'"),
    ({"monitoring_config": {"distribution_constraints": {"comparison_threshold": 0}}},
     "constraints need comparison_threshold > 0 and min_sample_size >= 1"),
    ({"monitoring_config": {"min_sample_size": 0}},
     "constraints need comparison_threshold > 0 and min_sample_size >= 1"),
    ({"monitoring_config": {"distribution_constraints": {"ks_p_value_threshold": 1.5}}},
     "constraints need ks_p_value_threshold between 0 and 1, got 1.5"),
    ({"monitoring_config": {"distribution_constraints": {"ks_p_value_threshold": -0.01}}},
     "constraints need ks_p_value_threshold between 0 and 1, got -0.01"),
    ({"features": [{"name": "hue", "monitoringConfigOverrides": {"ks_p_value_threshold": 2}}]},
     "constraints need ks_p_value_threshold between 0 and 1 (feature hue), got 2.0"),
])
def test_unusable_constraints_are_refused_with_the_reason(constraints: dict, message: str) -> None:
    with pytest.raises(drift.BaselineError) as info:
        drift.thresholds(constraints)
    assert str(info.value) == message


def test_p_value_thresholds_at_0_and_1_are_usable() -> None:
    for value in (0, 1):
        limits = drift.thresholds({"monitoring_config": {"distribution_constraints": {"ks_p_value_threshold": value}},
                                   "features": [{"name": "hue", "monitoringConfigOverrides": {
                                       "ks_p_value_threshold": value}}]})
        assert (limits.ks_p_value, limits.ks_for("hue")) == (float(value), float(value))


def test_a_small_positive_threshold_and_the_smallest_sample_are_usable() -> None:
    limits = drift.thresholds({"monitoring_config": {"min_sample_size": 1,
                                                     "distribution_constraints": {"comparison_threshold": 0.01}}})
    assert (limits.psi, limits.min_sample_size) == (0.01, 1)


EDGES = list(range(0, 181, 10))


def _numeric(name: str, cuts: list, counts: list, present: int | None = None, ks: list | None = None) -> dict:
    entry: dict = {"name": name, "histogram": {"type": "cut_points", "cut_points": cuts, "counts": counts}}
    if present is not None:
        entry["numerical_statistics"] = {"common": {"num_present": present, "num_missing": 0}}
    if ks is not None:
        entry["ks_reference"] = {"n": present, "values": ks}
    return entry


def test_check_baseline_keeps_the_known_features_with_usable_bins() -> None:
    brightness = _numeric("brightness", [0.1, 0.2], [1, 0, 1])
    hue = {"name": "hue", "histogram": {"type": "bin_edges", "bin_edges": EDGES, "counts": [1 / 18] * 18}}
    kinds = {"name": "class", "histogram": {"type": "categories", "categories": ["a", "__other__"], "counts": [1, 0]}}
    future = {"name": "future_feature", "histogram": {"type": "cut_points", "cut_points": [], "counts": [1]}}
    assert drift.check_baseline({"features": [future, brightness, hue, kinds]}) == {
        "brightness": brightness, "hue": hue, "class": kinds}


@pytest.mark.parametrize(("statistics", "message"), [
    ([], "baseline statistics have no 'features' list"),
    ({"features": "brightness"}, "baseline statistics have no 'features' list"),
    ({"features": []}, "baseline statistics hold no feature this monitor knows"),
    ({"features": [{"name": "future", "histogram": {}}]}, "baseline statistics hold no feature this monitor knows"),
    ({"features": ["oops"]}, "baseline feature 'oops' is malformed: TypeError: string indices must be integers, "
                             "not 'str'"),
    ({"features": [{"name": "brightness"}]}, "baseline feature 'brightness' is malformed: KeyError: 'histogram'"),
    ({"features": [_numeric("brightness", [1.0], "ab")]},
     "baseline feature 'brightness' is malformed: ValueError: could not convert string to float: 'ab'"),
    ({"features": [_numeric("brightness", [0.1, 0.1], [1, 1, 1])]},
     "baseline feature 'brightness' is malformed: ValueError: bins and counts do not match"),
    ({"features": [_numeric("brightness", [0.1, 0.2], [1, 1])]},
     "baseline feature 'brightness' is malformed: ValueError: bins and counts do not match"),
    ({"features": [_numeric("brightness", [0.1, 0.2], [1, 1, 1, 1])]},
     "baseline feature 'brightness' is malformed: ValueError: bins and counts do not match"),
    ({"features": [_numeric("brightness", [0.1], [0, 0])]},
     "baseline feature 'brightness' is malformed: ValueError: bins and counts do not match"),
    ({"features": [_numeric("brightness", [0.1], [1, math.nan])]},
     "baseline feature 'brightness' is malformed: ValueError: bins and counts do not match"),
    ({"features": [_numeric("brightness", [0.1], [1, math.inf])]},
     "baseline feature 'brightness' is malformed: ValueError: bins and counts do not match"),
    ({"features": [{"name": "class", "histogram": {"type": "categories", "categories": ["a", "b"],
                                                   "counts": [1, 1]}}]},
     "baseline feature 'class' is malformed: ValueError: bins and counts do not match"),
    ({"features": [{"name": "class", "histogram": {"type": "categories", "categories": ["a", "__other__"],
                                                   "counts": [1, 0, 2]}}]},
     "baseline feature 'class' is malformed: ValueError: bins and counts do not match"),
    ({"features": [{"name": "hue", "histogram": {"type": "bin_edges", "bin_edges": EDGES, "counts": [1] * 19}}]},
     "baseline feature 'hue' is malformed: ValueError: bins and counts do not match"),
    ({"features": [{"name": "hue", "histogram": {"type": "bin_edges", "bin_edges": EDGES, "counts": [1] * 17}}]},
     "baseline feature 'hue' is malformed: ValueError: bins and counts do not match"),
])
def test_unusable_baselines_are_refused_naming_the_feature(statistics, message: str) -> None:
    with pytest.raises(drift.BaselineError) as info:
        drift.check_baseline(statistics)
    assert str(info.value) == message


# -- the comparison of a window with its baseline -----------------------------------------------------------------
def _comparison_baseline() -> dict:
    half = [0.5]
    return drift.check_baseline({"features": [
        _numeric("brightness", [0.25, 0.5, 0.75], [25, 25, 25, 25], 100, [i / 99 for i in range(100)]),
        _numeric("contrast", half, [50, 50], 100),
        _numeric("saturation", half, [50, 50], 100),
        _numeric("red", half, [50, 50], 99),  # the baseline's own count is under the minimum
        _numeric("green", half, [30, 30]),  # no summary: the count is the bins' total
        _numeric("blue", half, [50, 50], 100),
        {"name": "hue", "histogram": {"type": "bin_edges", "bin_edges": EDGES, "counts": [1 / 18] * 18},
         "numerical_statistics": {"common": {"num_present": 100, "num_missing": 0}}},
        _numeric("score", half, [50, 50], 100, [i / 99 for i in range(100)]),
        _numeric("detections_per_frame", [0.5, 1.5], [40, 40, 20], 100),
        {"name": "class", "histogram": {"type": "categories", "categories": ["scalpel", "tumor", "__other__"],
                                        "counts": [60, 40, 0]},
         "string_statistics": {"common": {"num_present": 100, "num_missing": 0}}},
    ]})


def _comparison_window() -> drift.Sample:
    window = drift.Sample()
    hue = np.zeros(18)
    hue[:9] = 2 / 18
    for i in range(100):
        window.add({"brightness": 0.9, "saturation": 0.25 + 0.5 * (i % 2), "sharpness": 3.0, "hue": hue,
                    "score": (i + 0.5) / 100, "detections_per_frame": [0, 1, 2, 1, 0][i % 5],
                    "class": ["scalpel", "gauze"][i % 2], "red": 0.1, "green": 0.9})
    for _ in range(99):
        window.add({"blue": 0.1})
    return window


def test_compare_judges_each_feature_by_its_sample_its_baseline_and_its_threshold() -> None:
    limits = drift.thresholds({"monitoring_config": {"distribution_constraints": {"ks_p_value_threshold": 0.05}},
                               "features": [{"name": "detections_per_frame",
                                             "monitoringConfigOverrides": {"comparison_threshold": 0.5}}]})
    result = drift.compare(_comparison_baseline(), limits, _comparison_window())
    assert result.violations == [
        {"feature_name": "brightness", "constraint_check_type": "baseline_drift_check",
         "description": "input feature 'brightness' (mean luma (BT.601) of the frame, 0..1) drifted from the baseline: "
                        "PSI 6.905 > threshold 0.2; KS p-value 2.02e-50 < threshold 0.05 over 100 frames"},
        {"feature_name": "hue", "constraint_check_type": "baseline_drift_check",
         "description": "input feature 'hue' (hue histogram of the pixels with saturation >= 40/255 (10-degree bins), "
                        "averaged over frames) drifted from the baseline: PSI 3.501 > threshold 0.2 over 100 frames"},
        {"feature_name": "class", "constraint_check_type": "baseline_drift_check",
         "description": "prediction feature 'class' (label of each returned detection) drifted from the baseline: PSI "
                        "7.593 > threshold 0.2 over 100 detections"}]
    assert result.psi == {"brightness": pytest.approx(6.9054080651788805), "saturation": 0.0,
                          "hue": pytest.approx(3.500869925567309), "score": 0.0, "detections_per_frame": 0.0,
                          "class": pytest.approx(7.592767483145174)}
    assert result.group_max == {"input": pytest.approx(6.9054080651788805),
                                "prediction": pytest.approx(7.592767483145174)}
    features = {e["name"]: e for e in result.features}
    assert [(e["name"], e["group"], e["unit"], e["inferred_type"]) for e in result.features] == [
        (f.name, f.group, f.unit, "String" if f.kind == "categorical" else "Fractional") for f in drift.FEATURES]
    evaluated = {"method": "PSI", "threshold": 0.2, "sample_size": 100}
    assert {name: e["drift"] for name, e in features.items()} == {
        "brightness": {**evaluated, "psi": 6.905408, "window_counts": [0.0, 0.0, 0.0, 100.0], "ks_statistic": 0.9,
                       "ks_p_value": pytest.approx(2.0160611902288146e-50), "ks_p_value_threshold": 0.05,
                       "status": "drift"},
        "contrast": {"status": "no_data"},
        "sharpness": {"status": "no_baseline"},
        "saturation": {**evaluated, "psi": 0.0, "window_counts": [50.0, 50.0], "status": "ok"},  # no KS reference
        "red": {**evaluated, "psi": 4.604318, "window_counts": [100.0, 0.0], "status": "not_evaluated",
                "reason": "the baseline has 99 frames < min_sample_size 100"},
        "green": {**evaluated, "psi": 4.604318, "window_counts": [0.0, 100.0], "status": "not_evaluated",
                  "reason": "the baseline has 60 frames < min_sample_size 100"},
        "blue": {**evaluated, "sample_size": 99, "psi": 4.604318, "window_counts": [99.0, 0.0],
                 "status": "not_evaluated", "reason": "99 frames < min_sample_size 100"},
        "hue": {**evaluated, "psi": 3.50087, "window_counts": pytest.approx([1 / 9] * 9 + [0.0] * 9),
                "status": "drift"},
        "score": {**evaluated, "psi": 0.0, "window_counts": [50.0, 50.0], "ks_statistic": 0.01, "ks_p_value": 1.0,
                  "ks_p_value_threshold": 0.05, "status": "ok"},
        "detections_per_frame": {**evaluated, "threshold": 0.5, "psi": 0.0, "window_counts": [40.0, 40.0, 20.0],
                                 "status": "ok"},
        "box_area": {"status": "no_baseline"},
        "class": {**evaluated, "psi": 7.592767, "window_counts": [50.0, 0.0, 50.0], "status": "drift"},
    }
    assert features["saturation"]["numerical_statistics"] == {
        "common": {"num_present": 100, "num_missing": 0}, "mean": 0.5, "sum": 50.0, "std_dev": 0.25, "min": 0.25,
        "max": 0.75}
    assert features["contrast"]["numerical_statistics"] == {"common": {"num_present": 0, "num_missing": 0}}
    assert features["hue"]["numerical_statistics"] == {"common": {"num_present": 100, "num_missing": 0}}
    assert features["class"]["string_statistics"] == {
        "common": {"num_present": 100, "num_missing": 0}, "distinct_count": 2.0,
        "distribution": {"categorical": {"buckets": [{"value": "gauze", "count": 50},
                                                     {"value": "scalpel", "count": 50}]}}}


def test_a_value_exactly_at_its_threshold_is_not_drift() -> None:
    baseline, window = _comparison_baseline(), _comparison_window()
    first = drift.compare(baseline, drift.thresholds({"monitoring_config": {
        "distribution_constraints": {"ks_p_value_threshold": 0.05}}}), window)
    p_value = {e["name"]: e["drift"] for e in first.features}["brightness"]["ks_p_value"]
    limits = drift.thresholds({"features": [
        {"name": "brightness", "monitoringConfigOverrides": {"comparison_threshold": first.psi["brightness"],
                                                             "ks_p_value_threshold": p_value}},
        {"name": "class", "monitoringConfigOverrides": {"comparison_threshold": first.psi["class"]}}]})
    statuses = {e["name"]: e["drift"].get("status") for e in drift.compare(baseline, limits, window).features}
    assert (statuses["brightness"], statuses["class"], statuses["hue"]) == ("ok", "ok", "drift")


def test_only_a_significant_ks_test_is_drift_and_only_when_comparing() -> None:
    baseline, window = _comparison_baseline(), _comparison_window()
    # PSI under its threshold, KS significant: drift, the reason is KS alone
    limits = drift.thresholds({"features": [{"name": "brightness", "monitoringConfigOverrides": {
        "comparison_threshold": 100.0, "ks_p_value_threshold": 0.05}}]})
    result = drift.compare(baseline, limits, window)
    assert [v["feature_name"] for v in result.violations] == ["brightness", "hue", "class"]
    assert result.violations[0]["description"].endswith(
        "drifted from the baseline: KS p-value 2.02e-50 < threshold 0.05 over 100 frames")
    # comparison off: the figures stay, nothing is drift
    off = drift.thresholds({"monitoring_config": {"distribution_constraints": {
        "perform_comparison": "Disabled", "ks_p_value_threshold": 0.05}}})
    result = drift.compare(baseline, off, window)
    assert result.violations == [] and result.psi["brightness"] == pytest.approx(6.9054080651788805)
    assert {e["drift"].get("status") for e in result.features} == {"ok", "no_data", "no_baseline", "not_evaluated"}
    # evaluation off: the status says drift, no violation is written
    quiet = drift.thresholds({"monitoring_config": {"evaluate_constraints": "Disabled"}})
    result = drift.compare(baseline, quiet, window)
    assert result.violations == []
    assert [e["name"] for e in result.features if e["drift"]["status"] == "drift"] == ["brightness", "hue", "class"]
    # a p-value threshold of 1: a p-value of 1 (or a feature without a KS test, taken as 1) is not under it ...
    at_one = drift.thresholds({"monitoring_config": {"distribution_constraints": {
        "comparison_threshold": 100.0, "ks_p_value_threshold": 1.0}}})
    assert [v["feature_name"] for v in drift.compare(baseline, at_one, window).violations] == ["brightness"]
    # ... and one above 1, under which every p-value would be, is refused (test_unusable_constraints_are_refused...)


def test_group_maxima_only_over_evaluated_features() -> None:
    baseline = {name: entry for name, entry in _comparison_baseline().items() if name in ("red", "score", "class")}
    result = drift.compare(baseline, drift.thresholds(None), _comparison_window())
    assert result.group_max == {"prediction": pytest.approx(7.592767483145174)}  # red: not evaluated
    assert result.psi == {"score": 0.0, "class": pytest.approx(7.592767483145174)}


def test_window_counts_of_each_kind() -> None:
    baseline = _comparison_baseline()
    empty = drift.Sample()
    hue = drift.FEATURE_BY_NAME["hue"]
    assert drift._window_counts(hue, baseline["hue"], empty).tolist() == [0.0] * 18
    sample = drift.Sample()
    sample.add({"hue": [1.0] + [0.0] * 17, "class": ["tumor", "gauze", "gauze"], "red": [0.1, 0.9, 0.5]})
    sample.add({"hue": [0.0, 1.0] + [0.0] * 16})
    assert drift._window_counts(hue, baseline["hue"], sample).tolist() == [0.5, 0.5] + [0.0] * 16
    classes = drift._window_counts(drift.FEATURE_BY_NAME["class"], baseline["class"], sample)
    assert classes.tolist() == [0.0, 1.0, 2.0] and classes.dtype == np.float64
    assert drift._window_counts(drift.FEATURE_BY_NAME["class"], baseline["class"], empty).tolist() == [0.0] * 3
    assert drift._window_counts(drift.FEATURE_BY_NAME["red"], baseline["red"], sample).tolist() == [1, 2]


def test_the_ks_statistic_to_six_digits_and_the_baseline_size_from_its_statistics() -> None:
    """Bins holding proportions (a Model Monitor-style baseline): the number of detections is the statistics'."""
    baseline = drift.check_baseline({"features": [
        _numeric("score", [0.5], [0.5, 0.5], 100, [0.0, 0.5, 1.0]),
        {"name": "class", "histogram": {"type": "categories", "categories": ["scalpel", "__other__"],
                                        "counts": [1.0, 0.0]},
         "string_statistics": {"common": {"num_present": 100, "num_missing": 0}}}]})
    window = drift.Sample()
    for i in range(100):
        window.add({"score": (i + 0.5) / 100, "class": "scalpel"})
    entries = {e["name"]: e["drift"] for e in drift.compare(baseline, drift.thresholds(None), window).features}
    assert entries["score"]["ks_statistic"] == 0.333333  # at 0: 1/3 of the reference, none of the window
    assert entries["class"]["status"] == "ok" and entries["class"]["psi"] == 0.0


# -- the container -------------------------------------------------------------------------------------------------
def _jpeg(picture: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _answer(truth: list, rng: np.random.Generator, degraded: bool) -> dict:
    """A stand-in for the detector's answer: the true boxes with scores (a degraded model misses and doubts)."""
    detections = []
    for box in truth:
        if degraded and rng.random() < 0.5:
            continue
        score = rng.uniform(0.3, 0.6) if degraded else rng.uniform(0.65, 0.99)
        detections.append({"label": box.label, "category_id": 1, "score": round(float(score), 5),
                           "box": [box.x, box.y, box.x + box.w, box.y + box.h]})
    return {"width": SIZE[0], "height": SIZE[1], "detections": detections}


def _frames(scenario: str, seeds: range, per_video: int):
    for seed in seeds:
        scene = make_scene(*SIZE, 5.0, seed=seed, scenario=scenario)
        for i in range(per_video):
            yield render_frame(scene, 3 + i * 13)


def _capture_line(picture: np.ndarray, answer: dict, when: datetime, as_json: bool) -> str:
    image = base64.b64encode(_jpeg(picture)).decode()
    if as_json:  # JSON content types captured as text
        request = {"observedContentType": "application/json", "mode": "INPUT",
                   "data": json.dumps({"image": image}), "encoding": "JSON"}
    else:
        request = {"observedContentType": "image/jpeg", "mode": "INPUT", "data": image, "encoding": "BASE64"}
    response = {"observedContentType": "application/json", "mode": "OUTPUT",
                "data": base64.b64encode(json.dumps(answer).encode()).decode(), "encoding": "BASE64"}
    return json.dumps({"captureData": {"endpointInput": request, "endpointOutput": response},
                       "eventMetadata": {"eventId": f"e-{when.timestamp()}", "inferenceTime":
                                         when.strftime("%Y-%m-%dT%H:%M:%SZ")}, "eventVersion": "0"})


def write_window(folder: Path, scenario: str, seeds: range, per_video: int = 1, degraded: bool = False,
                 outside: int = 0) -> int:
    """Capture files as SageMaker writes them (``<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl``); returns the count
    of records inside the window. ``outside`` more records are stamped an hour before it."""
    rng = np.random.default_rng(seeds.start)
    lines = []
    for k, (picture, truth) in enumerate(_frames(scenario, seeds, per_video)):
        lines.append(_capture_line(picture, _answer(truth, rng, degraded), START + timedelta(seconds=10 + k), k % 2))
    for k, (picture, truth) in enumerate(_frames("dark", range(9000, 9000 + outside), 1)):
        lines.append(_capture_line(picture, _answer(truth, rng, True), START - timedelta(minutes=30 + k), False))
    hour = folder / "ep" / "AllTraffic" / f"{START:%Y/%m/%d/%H}"
    hour.mkdir(parents=True, exist_ok=True)
    half = len(lines) // 2
    (hour / "00-00-000-a.jsonl").write_text("\n".join(lines[:half]) + "\n")
    (hour / "30-00-000-b.jsonl").write_text("\n".join(lines[half:]) + "\n")
    return len(lines) - outside


def run_container(root: Path, arguments: list[str], env: dict[str, str] | None = None,
                  name: str = "job") -> tuple[subprocess.CompletedProcess, Path]:
    job_root = root / name
    (job_root / "output").mkdir(parents=True, exist_ok=True)
    image = parse_dockerfile("surgical-mlops/drift-monitor", FOLDER)
    environment = base_environment(job_root, image, env or {})
    proc = subprocess.run(image.command(None, arguments), cwd=image.workdir, env=environment, capture_output=True,
                          text=True, timeout=120)
    return proc, job_root


def monitor(root: Path, baseline: Path, source: Path, name: str, **extra: str) -> dict:
    env = {"dataset_source": str(source), "output_path": str(root / name / "resultdata"),
           "baseline_statistics": str(baseline / "statistics.json"),
           "baseline_constraints": str(baseline / "constraints.json"),
           "start_time": START.strftime("%Y-%m-%dT%H:%M:%SZ"), "end_time": END.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "metric_time": END.strftime("%Y-%m-%dT%H:%M:%SZ"), "publish_cloudwatch_metrics": "Enabled",
           "sagemaker_endpoint_name": "surgical-detector", "sagemaker_monitoring_schedule_name": "drift-hourly",
           "dataset_format": '{"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput", "endpointOutput"]}}',
           **extra}
    proc, job_root = run_container(root, [], env, name)
    result = {"proc": proc, "job_root": job_root, "log": proc.stdout + proc.stderr}
    out = root / name / "resultdata"
    if (out / "statistics.json").exists():
        result["statistics"] = json.loads((out / "statistics.json").read_text())
        result["violations"] = json.loads((out / "constraint_violations.json").read_text())["violations"]
    metrics = job_root / "output" / "metrics" / "cloudwatch"
    lines = [json.loads(line) for p in sorted(metrics.glob("*")) for line in p.read_text().splitlines()]
    result["metrics"] = {m["MetricName"]: m for m in lines}
    copy = out / "cloudwatch_metrics.jsonl"  # kept with the results for the Processing-job backend
    result["result_metrics"] = copy.read_text().splitlines() if copy.exists() else []
    if lines:
        assert [json.loads(line) for line in result["result_metrics"]] == lines
    message = job_root / "output" / "message"
    result["message"] = message.read_text() if message.exists() else ""
    failure = job_root / "output" / "failure"
    result["failure"] = failure.read_text() if failure.exists() else ""
    return result


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baseline documents from a generated dataset version (training frames) and the answers on normal frames."""
    root = tmp_path_factory.mktemp("drift-baseline")
    dataset, frames = make_dataset(root, videos=160, frames=2, width=SIZE[0], height=SIZE[1], step=11, seed=1000)
    rng = np.random.default_rng(7)
    predictions = root / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(_answer(truth, rng, False)) + "\n"
                                   for _, truth in _frames("normal", range(2000, 2150), 2)))
    # 5 bins: the test's windows hold ~100-150 frames; with 10 bins the sampling noise of PSI alone is ~0.1.
    proc, job_root = run_container(root, ["baseline", "--frames", str(frames), "--dataset", str(dataset),
                                          "--output", str(root / "baseline"), "--predictions", str(predictions),
                                          "--bins", "5", "--min-sample-size", "50"], name="baseline-job")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "baseline of dataset" in (job_root / "output" / "message").read_text()
    return root / "baseline"


def test_baseline_documents(baseline: Path) -> None:
    statistics = json.loads((baseline / "statistics.json").read_text())
    constraints = json.loads((baseline / "constraints.json").read_text())
    by_name = {f["name"]: f for f in statistics["features"]}
    assert set(by_name) == {"brightness", "contrast", "sharpness", "saturation", "red", "green", "blue", "hue",
                            "score", "detections_per_frame", "box_area", "class"}
    assert statistics["dataset"]["splits"] == ["train"] and statistics["dataset"]["prediction_source"] == "predictions"
    assert 150 < statistics["dataset"]["item_count"] < 320  # the training videos' frames only
    brightness = by_name["brightness"]
    assert len(brightness["histogram"]["cut_points"]) == 4 and sum(brightness["histogram"]["counts"]) == \
        statistics["dataset"]["item_count"]
    assert brightness["numerical_statistics"]["common"]["num_present"] == statistics["dataset"]["item_count"]
    assert 0 < brightness["numerical_statistics"]["mean"] < 1
    assert by_name["class"]["histogram"]["categories"][-1] == "__other__"
    assert constraints["monitoring_config"]["distribution_constraints"]["comparison_threshold"] == 0.2
    assert constraints["monitoring_config"]["min_sample_size"] == 50
    assert {f["name"] for f in constraints["features"]} == set(by_name)


def test_normal_window_has_no_violation(tmp_path: Path, baseline: Path) -> None:
    count = write_window(tmp_path / "capture", "normal", range(3000, 3120), outside=5)
    result = monitor(tmp_path, baseline, tmp_path / "capture", "normal")
    assert result["proc"].returncode == 0, result["log"][-3000:]
    assert result["violations"] == [], result["log"]
    assert result["message"].startswith("Completed: Job completed successfully with no violations.")
    run = result["statistics"]["monitoring"]
    assert (run["captured_records"], run["outside_window"], run["frames"], run["answers"]) == (count, 5, count, count)
    metrics = result["metrics"]
    assert metrics["captured_records"]["Value"] == count and metrics["captured_records"]["Unit"] == "Count"
    assert metrics["input_drift_psi"]["Value"] < 0.2 and metrics["prediction_drift_psi"]["Value"] < 0.2
    assert metrics["input_drift_psi"]["Dimensions"] == [{"Name": "Endpoint", "Value": "surgical-detector"},
                                                        {"Name": "MonitoringSchedule", "Value": "drift-hourly"}]
    assert metrics["input_drift_psi"]["Timestamp"] == "2026-11-25T11:00:00Z"
    assert {"feature_psi_brightness", "feature_psi_sharpness", "feature_psi_hue", "feature_psi_score",
            "feature_psi_class"} <= set(metrics)
    assert "input_drift_psi" not in result["log"] or "PSI=" in result["log"]  # progress lines name the PSI values


@pytest.mark.parametrize("scenario", ["dark", "smoke"])
def test_dark_and_smoke_windows_violate(tmp_path: Path, baseline: Path, scenario: str) -> None:
    write_window(tmp_path / "capture", scenario, range(5000, 5040), per_video=3, degraded=scenario == "dark")
    result = monitor(tmp_path, baseline, tmp_path / "capture", scenario)
    assert result["proc"].returncode == 0, result["log"][-3000:]
    drifted = {v["feature_name"] for v in result["violations"] if v["constraint_check_type"] == "baseline_drift_check"}
    assert {"brightness", "saturation"} <= drifted, result["violations"]
    assert result["metrics"]["input_drift_psi"]["Value"] > 0.2
    assert result["metrics"]["constraint_violations"]["Value"] == len(result["violations"])
    assert result["message"].startswith("CompletedWithViolations: Job completed successfully with")
    brightness = next(f for f in result["statistics"]["features"] if f["name"] == "brightness")
    assert brightness["drift"]["status"] == "drift" and brightness["drift"]["ks_p_value"] < 1e-6
    if scenario == "dark":  # the stand-in model doubts and misses in the dark
        assert result["metrics"]["prediction_drift_psi"]["Value"] > 0.2
        assert "score" in drifted


def test_empty_window_is_a_result_not_a_crash(tmp_path: Path, baseline: Path) -> None:
    (tmp_path / "capture").mkdir()
    result = monitor(tmp_path, baseline, tmp_path / "capture", "empty")
    assert result["proc"].returncode == 0, result["log"][-3000:]
    assert result["statistics"]["dataset"]["item_count"] == 0
    assert result["statistics"]["monitoring"]["captured_records"] == 0
    [violation] = result["violations"]
    assert violation["constraint_check_type"] == "no_data_check"
    assert "no captured records" in violation["description"]
    assert result["metrics"]["captured_records"]["Value"] == 0
    assert "input_drift_psi" not in result["metrics"]  # missing data for an alarm, not a false "no drift"
    assert result["message"].startswith("CompletedWithViolations:") and "no data" in result["message"]


def test_garbage_window_counts_and_skips_with_reasons(tmp_path: Path, baseline: Path) -> None:
    hour = tmp_path / "capture" / "ep" / "AllTraffic" / "2026" / "11" / "25" / "10"
    hour.mkdir(parents=True)
    inside = START.strftime("%Y-%m-%dT%H:%M:%SZ")

    def line(capture: dict) -> str:
        return json.dumps({"captureData": capture, "eventMetadata": {"inferenceTime": inside}, "eventVersion": "0"})

    garbage = [
        "not json at all",
        json.dumps({"no": "capture"}),
        line({"endpointInput": {"observedContentType": "image/jpeg", "data": "!!!", "encoding": "BASE64"}}),
        line({"endpointInput": {"observedContentType": "image/jpeg",
                                "data": base64.b64encode(b"not an image").decode(), "encoding": "BASE64"},
              "endpointOutput": {"observedContentType": "application/json", "data": "{broken", "encoding": "JSON"}}),
        line({"endpointInput": {"observedContentType": "application/json", "data": '{"image": 3}',
                                "encoding": "JSON"}}),
        json.dumps({"captureData": {}, "eventMetadata": {"inferenceTime": "yesterday"}}),
    ]
    (hour / "garbage.jsonl").write_text("\n".join(garbage) + "\n\n")
    (hour / "binary.jsonl").write_bytes(b"\x00\xff\xfe" * 50)
    result = monitor(tmp_path, baseline, tmp_path / "capture", "garbage")
    assert result["proc"].returncode == 0, result["log"][-3000:]
    run = result["statistics"]["monitoring"]
    assert run["captured_records"] == run["undecodable_records"] == 7 and run["frames"] == 0
    reasons = " ".join(run["skipped"])
    for reason in ("line: invalid JSON", "line: no 'captureData' object", "input: invalid base64",
                   "input: not a decodable image", "output: invalid JSON", "unparsable eventMetadata.inferenceTime"):
        assert reason in reasons, run["skipped"]
    [violation] = result["violations"]
    assert violation["constraint_check_type"] == "no_data_check"
    assert "no decodable captured records (7 of 7 skipped" in violation["description"]
    assert result["metrics"]["undecodable_records"]["Value"] == 7


def test_broken_baseline_fails_with_a_reason(tmp_path: Path, baseline: Path) -> None:
    (tmp_path / "capture").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "statistics.json").write_text('{"features": [{"name": "brightness"}]}')
    (broken / "constraints.json").write_text((baseline / "constraints.json").read_text())
    result = monitor(tmp_path, broken, tmp_path / "capture", "broken")
    assert result["proc"].returncode == 1
    assert "baseline feature 'brightness' is malformed: KeyError" in result["failure"]
    missing = monitor(tmp_path, tmp_path / "nowhere", tmp_path / "capture", "missing")
    assert missing["proc"].returncode == 1 and "does not exist" in missing["failure"]
    bad_time = monitor(tmp_path, baseline, tmp_path / "capture", "bad-time", start_time="last tuesday")
    assert bad_time["proc"].returncode == 1 and "start_time is not an ISO 8601 time" in bad_time["failure"]


def test_unknown_command_and_evaluation_baseline(tmp_path: Path) -> None:
    proc, job_root = run_container(tmp_path, ["serve"], name="bad-command")
    assert proc.returncode == 2 and "expected no argument" in (job_root / "output" / "failure").read_text()
    dataset, frames = make_dataset(tmp_path, videos=3, frames=4, width=SIZE[0], height=SIZE[1])
    evaluation = {"score_threshold": 0.5, "images": [
        {"image_id": 1, "file_name": "frames/x/000000.jpg", "detections": [
            {"category": "scalpel", "category_id": 1, "bbox": [10, 10, 20, 10], "score": 0.9},
            {"category": "tumor", "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.2}]},
        {"image_id": 2, "file_name": "frames/x/000001.jpg", "detections": []}]}
    (tmp_path / "evaluation.json").write_text(json.dumps(evaluation))
    proc, job_root = run_container(tmp_path, ["baseline", "--frames", str(frames), "--dataset", str(dataset),
                                              "--output", str(tmp_path / "out"), "--splits", "train,val",
                                              "--evaluation", str(tmp_path / "evaluation.json")], name="eval")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    statistics = json.loads((tmp_path / "out" / "statistics.json").read_text())
    by_name = {f["name"]: f for f in statistics["features"]}
    assert statistics["dataset"]["prediction_source"] == "evaluation"
    # Only the detection scoring >= the model's threshold, as the endpoint answers by default.
    assert by_name["class"]["string_statistics"]["distribution"]["categorical"]["buckets"] == [
        {"value": "scalpel", "count": 1}]
    assert by_name["detections_per_frame"]["numerical_statistics"]["sum"] == 1


def test_a_baseline_smaller_than_the_minimum_sample_judges_nothing() -> None:
    """Ten detections in the baseline (a small test split) against a hundred in the window: the PSI is noise, so the
    feature is not evaluated; with a large enough baseline the same shift is drift."""
    rng = np.random.default_rng(3)
    limits = drift.thresholds(None)
    window = drift.Sample()
    for value in rng.normal(0.6, 0.05, 100):
        window.add({"score": float(value)})
    for size, status in ((10, "not_evaluated"), (400, "drift")):
        base = drift.Sample()
        for value in rng.normal(0.3, 0.05, size):
            base.add({"score": float(value)})
        features = {f["name"]: f for f in drift.baseline_statistics(base, bins=5)["features"]}
        entry = {e["name"]: e for e in drift.compare(features, limits, window).features}["score"]
        assert entry["drift"]["status"] == status, entry["drift"]
        if status == "not_evaluated":
            assert entry["drift"]["reason"].startswith(f"the baseline has {size} ")
