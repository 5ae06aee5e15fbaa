"""The drift monitor container: PSI and KS on known distributions (property tests), and the container run as a
process the way the local SageMaker runs it (the Dockerfile's ENTRYPOINT with its COPY paths mapped back to the
folder, Model Monitor's environment): a baseline from a generated dataset version, then captured windows of normal,
dark, smoke, empty and garbage data."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import subprocess
import sys
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

FOLDER = Path(__file__).resolve().parents[2] / "containers" / "drift_monitor"
SIZE = (96, 64)  # frames are tiny: the features are per-frame statistics, the test runs in seconds
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"drift_monitor_{name}", FOLDER / f"{name}.py")
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
