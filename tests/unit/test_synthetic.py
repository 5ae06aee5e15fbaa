"""Tests for the synthetic surgical video generator: decodable videos, a faithful truth store, seeding, drift."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from include.config import PipelineConfig
from include.media import probe_video
from include.synthetic import (
    CLASSES,
    TRUTH_SCHEMA,
    generate_batch,
    generate_video,
    load_truth,
    make_scene,
    render_frame,
    sha256_file,
)
from include.synthetic.generate import main
from include.synthetic.sprites import ALPHA_ON, MIN_AREA, MIN_SIDE, make_sprite, place, visible_box

W, H, FPS, SECONDS = 320, 192, 25, 2
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic")
    videos = generate_batch(root / "videos", 4, seconds=SECONDS, width=W, height=H, fps=FPS, seed=11,
                            video_format="mixed", truth_dir=root / "truth")
    return root, videos


def _frames(seed: int, scenario: str = "normal", indices=range(0, 50, 5)):
    scene = make_scene(W, H, FPS, seed, scenario)
    return [render_frame(scene, i) for i in indices]


# --- videos on disk -------------------------------------------------------------------------------------------------


def test_videos_decode_at_requested_size_rate_and_length(batch) -> None:
    _, videos = batch
    assert [v.path.suffix for v in videos] == [".mp4", ".avi", ".mp4", ".avi"]
    for v in videos:
        info = probe_video(v.path)
        assert (info.width, info.height) == (W, H)
        assert info.fps == pytest.approx(FPS)
        assert abs(info.frame_count - SECONDS * FPS) <= 1
        assert info.frame_count == v.frame_count
        assert info.codec == {".mp4": "h264", ".avi": "mpeg4"}[v.path.suffix]


def test_file_names_are_opaque_and_no_temp_files_are_left(batch) -> None:
    root, videos = batch
    assert sorted(p.name for p in (root / "videos").iterdir()) == sorted(v.path.name for v in videos)
    for v in videos:
        assert re.fullmatch(r"case-11-\d{3}\.(mp4|avi)", v.path.name)
    assert sorted(p.name for p in (root / "truth").iterdir()) == sorted(f"{v.sha256}.json" for v in videos)


def test_truth_is_keyed_by_content_hash_and_covers_every_frame(batch) -> None:
    root, videos = batch
    for v in videos:
        assert sha256_file(v.path) == v.sha256
        truth = load_truth(root / "truth", v.sha256)
        assert v.truth_path == root / "truth" / f"{v.sha256}.json"
        assert truth["schema"] == TRUTH_SCHEMA
        assert truth["video_sha256"] == v.sha256
        assert truth["video_file"] == v.path.name
        assert (truth["width"], truth["height"], truth["fps"], truth["frame_count"]) == (W, H, FPS, v.frame_count)
        assert truth["classes"] == list(CLASSES)
        assert [f["index"] for f in truth["frames"]] == list(range(v.frame_count))
        assert all(f["t"] == pytest.approx(f["index"] / FPS) for f in truth["frames"])


def test_truth_boxes_are_inside_the_image_and_every_present_class_shows_up(batch) -> None:
    root, videos = batch
    for v in videos:
        truth = load_truth(root / "truth", v.sha256)
        assert 1 <= len(truth["objects"]) <= 3
        seen = set()
        for frame in truth["frames"]:
            for b in frame["boxes"]:
                assert b["label"] in CLASSES
                assert b["w"] >= MIN_SIDE and b["h"] >= MIN_SIDE
                assert 0 <= b["x"] and b["x"] + b["w"] <= W
                assert 0 <= b["y"] and b["y"] + b["h"] <= H
                seen.add(b["label"])
        assert seen == set(truth["objects"])
        with_boxes = sum(bool(f["boxes"]) for f in truth["frames"])
        assert with_boxes >= 0.8 * len(truth["frames"])


def test_load_truth_rejects_a_non_digest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        load_truth(tmp_path, "../../etc/passwd")


def test_classes_match_the_pipeline_config() -> None:
    assert tuple(PipelineConfig().label_classes) == CLASSES


# --- rendering -------------------------------------------------------------------------------------------------------


def test_frames_are_rgb_uint8_of_the_requested_size() -> None:
    frame, _ = render_frame(make_scene(W, H, FPS, 3), 0)
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8


def test_same_seed_gives_identical_frames_and_boxes() -> None:
    a, b = _frames(5), _frames(5)
    for (fa, ba), (fb, bb) in zip(a, b, strict=True):
        assert np.array_equal(fa, fb)
        assert ba == bb


def test_different_seed_gives_different_boxes() -> None:
    assert [boxes for _, boxes in _frames(5)] != [boxes for _, boxes in _frames(6)]


def test_generated_truth_is_deterministic(tmp_path: Path) -> None:
    kwargs = {"seconds": 1, "width": W, "height": H, "fps": FPS, "seed": 42}
    first = generate_video(tmp_path / "a.mp4", truth_dir=tmp_path / "t1", **kwargs)
    second = generate_video(tmp_path / "b.mp4", truth_dir=tmp_path / "t2", **kwargs)
    other = generate_video(tmp_path / "c.mp4", truth_dir=tmp_path / "t3", **{**kwargs, "seed": 43})
    t1, t2, t3 = (json.loads(v.truth_path.read_text()) for v in (first, second, other))
    assert t1["frames"] == t2["frames"]
    assert t1["frames"] != t3["frames"]


def test_camera_and_objects_move() -> None:
    (f0, b0), (f1, b1) = _frames(8, indices=[0, 40])
    assert np.abs(f0.astype(int) - f1.astype(int)).mean() > 5
    assert b0 != b1


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        make_scene(321, 192, FPS, 1)
    with pytest.raises(ValueError, match="scenario"):
        make_scene(W, H, FPS, 1, "foggy")
    with pytest.raises(ValueError, match="fps"):
        generate_video(tmp_path / "x.mp4", seconds=1, width=W, height=H, fps=0, seed=1, truth_dir=tmp_path)
    with pytest.raises(ValueError, match="suffix"):
        generate_video(tmp_path / "x.mkv", seconds=1, width=W, height=H, fps=FPS, seed=1, truth_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_render_leaves_no_video_and_no_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import include.synthetic.generate as generate

    def broken(scene, index):
        if index == 5:
            raise RuntimeError("renderer broke")
        return render_frame(scene, index)

    monkeypatch.setattr(generate, "render_frame", broken)
    with pytest.raises(RuntimeError, match="renderer broke"):
        generate_video(tmp_path / "v" / "x.mp4", seconds=1, width=W, height=H, fps=FPS, seed=1,
                       truth_dir=tmp_path / "t")
    assert list((tmp_path / "v").iterdir()) == []
    assert not (tmp_path / "t").exists()


# --- drift scenarios --------------------------------------------------------------------------------------------------


def _stats(frames) -> tuple[float, float, float]:
    """Mean brightness, contrast (std of grey) and mean saturation over frames."""
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f, _ in frames]).astype(np.float32)
    sat = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV)[..., 1] for f, _ in frames]).astype(np.float32)
    return float(grey.mean()), float(np.mean([g.std() for g in grey])), float(sat.mean())


@pytest.mark.parametrize("seed", [2, 9])
def test_dark_scenario_is_clearly_darker_with_the_same_objects(seed: int) -> None:
    normal, dark = _frames(seed), _frames(seed, "dark")
    assert _stats(dark)[0] < 0.6 * _stats(normal)[0]
    assert [b for _, b in dark] == [b for _, b in normal]


@pytest.mark.parametrize("seed", [2, 9])
def test_smoke_scenario_lowers_contrast_and_saturation(seed: int) -> None:
    normal, smoke = _stats(_frames(seed)), _stats(_frames(seed, "smoke"))
    assert smoke[1] < 0.85 * normal[1]
    assert smoke[2] < 0.75 * normal[2]


def test_new_instrument_scenario_changes_instrument_look_not_labels() -> None:
    seed = 4  # a video with instruments
    normal, new = _frames(seed), _frames(seed, "new_instrument")
    labels = [sorted(b.label for b in boxes) for _, boxes in normal]
    assert labels == [sorted(b.label for b in boxes) for _, boxes in new]
    assert {"scalpel", "retractor"} & {lab for frame in labels for lab in frame}

    def instrument_saturation(frames) -> float:
        values = []
        for f, boxes in frames:
            hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
            values += [hsv[b.y:b.y + b.h, b.x:b.x + b.w, 1].mean() for b in boxes if b.label != "tumor"]
        return float(np.mean(values))

    assert instrument_saturation(new) > instrument_saturation(normal) + 15


# --- sprites and boxes ------------------------------------------------------------------------------------------------


@given(
    alpha=arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.sampled_from([0, 100, 200])),
    x0=st.integers(-60, 100),
    y0=st.integers(-60, 100),
)
@settings(max_examples=200, deadline=None)
def test_visible_box_is_the_clipped_mask_extent(alpha: np.ndarray, x0: int, y0: int) -> None:
    width, height = 64, 48
    canvas = np.zeros((height + 200, width + 200), np.uint8)  # reference: paste the mask, then crop to the frame
    canvas[100 + y0:100 + y0 + alpha.shape[0], 100 + x0:100 + x0 + alpha.shape[1]] = alpha
    on = canvas[100:100 + height, 100:100 + width] >= ALPHA_ON
    box = visible_box(alpha, x0, y0, width, height)
    if box is None:
        ys, xs = np.nonzero(on)
        assert on.sum() < MIN_AREA or xs.max() - xs.min() + 1 < MIN_SIDE or ys.max() - ys.min() + 1 < MIN_SIDE
        return
    x, y, w, h = box
    assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
    assert w >= MIN_SIDE and h >= MIN_SIDE
    ys, xs = np.nonzero(on)
    assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())


@given(
    label=st.sampled_from(CLASSES),
    cx=st.floats(-150, 450),
    cy=st.floats(-150, 350),
    angle=st.floats(0, 360),
    scale=st.floats(0.5, 1.6),
)
@settings(max_examples=60, deadline=None)
def test_placed_objects_stay_inside_the_frame(label: str, cx: float, cy: float, angle: float, scale: float) -> None:
    sprite = make_sprite(label, np.random.default_rng(0), 80)
    placed = place(sprite, cx, cy, angle, scale, W, H)
    if placed is None:
        return
    x0, y0, patch = placed
    assert 0 <= x0 and x0 + patch.shape[1] <= W and 0 <= y0 and y0 + patch.shape[0] <= H
    box = visible_box(patch[..., 3], x0, y0, W, H)
    if box is not None:
        x, y, w, h = box
        assert 0 <= x and x + w <= W and 0 <= y and y + h <= H


# --- command line -----------------------------------------------------------------------------------------------------


def test_cli_prints_one_line_per_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path / "v"), "--truth-dir", str(tmp_path / "t"), "--count", "2", "--seconds", "0.4",
            "--width", "160", "--height", "96", "--format", "avi", "--scenario", "smoke", "--seed", "3"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        path, seconds, size = line.split("\t")
        assert Path(path).suffix == ".avi" and Path(path).is_file()
        assert seconds == "0.40s"
        assert int(size.split()[0]) == Path(path).stat().st_size


def test_cli_module_entry_point_and_errors(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "include.synthetic", "--out", str(tmp_path), "--truth-dir", str(tmp_path / "t")]
    ok = subprocess.run([*base, "--seconds", "0.2", "--width", "64", "--height", "64"], capture_output=True, text=True,
                        check=False, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(str(tmp_path / "case-0-000.mp4"))
    bad = subprocess.run([*base, "--width", "65"], capture_output=True, text=True, check=False, cwd=ROOT)
    assert bad.returncode == 2
    assert "even" in bad.stderr
