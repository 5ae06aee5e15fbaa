"""The frame_extractor container: frames, timestamps, sizes, metadata, failure reasons, and its run contract.

The container's code is loaded by path (only its folder is in the image, so it is not a package of this repo); the
contract tests run ``entrypoint.py`` as the local SageMaker does: the Dockerfile's ENTRYPOINT with its COPY paths
mapped back to the folder, ``/opt/ml`` arguments mapped to a job folder, the runner's environment. Runs in the frame
extractor's test environment (tests/container_code/run.py): the container's Python, ffmpeg beside the interpreter.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from include.media import ffmpeg_exe
from include.synthetic import generate_video
from local_aws.sagemaker.containers import parse_dockerfile
from local_aws.sagemaker.runners import base_environment, local_path, map_value

FOLDER = Path(__file__).resolve().parents[3] / "containers" / "frame_extractor"
INPUT_DIR = "/opt/ml/processing/input/video"
OUTPUT_DIR = "/opt/ml/processing/output/frames"
SECRET_KEY = "videos/Doe, Jane 1970-01-01/theatre 3.mp4"  # stands for a key holding patient identifiers


def _load_extract():
    spec = importlib.util.spec_from_file_location("frame_extractor_extract", FOLDER / "extract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


extract = _load_extract()


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad inputs, made once: synthetic surgical videos and FFmpeg-made oddities."""
    d = tmp_path_factory.mktemp("media")
    truth = d / "truth"
    videos = {
        "mp4": generate_video(d / "case.mp4", seconds=3, width=320, height=192, fps=25, seed=3, truth_dir=truth).path,
        "avi": generate_video(d / "case.avi", seconds=2, width=320, height=192, fps=25, seed=4, truth_dir=truth).path,
    }
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=10:duration=1", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", str(d / "uhd.mp4"))
    videos["4k"] = d / "uhd.mp4"
    # Oddities.
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is a text file, not a video\n" * 20)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", str(d / "audio.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", str(d / "still.png"))
    (d / "still.mp4").write_bytes((d / "still.png").read_bytes())
    data = videos["mp4"].read_bytes()  # +faststart: moov first, then mdat
    (d / "cut_mdat.mp4").write_bytes(data[: len(data) // 2])
    ffmpeg("-i", str(videos["mp4"]), "-c", "copy", str(d / "moov_last.mp4"))  # plain remux: moov at the end
    moov_last = (d / "moov_last.mp4").read_bytes()
    (d / "cut_moov.mp4").write_bytes(moov_last[: len(moov_last) // 2])
    avi = videos["avi"].read_bytes()
    (d / "cut_avi.avi").write_bytes(avi[: len(avi) // 2])
    ffmpeg("-i", str(videos["mp4"]), "-c", "copy", str(d / "whole.mkv"))
    mkv = (d / "whole.mkv").read_bytes()
    (d / "cut_mkv.mkv").write_bytes(mkv[: len(mkv) // 2])
    zeroed = bytearray(data)
    start = zeroed.index(b"mdat") + 4
    zeroed[start:] = bytes(len(zeroed) - start)  # structure intact, every coded picture gone
    (d / "zeroed.mp4").write_bytes(bytes(zeroed))
    return {**videos, **{p.stem: p for p in d.iterdir() if p.is_file() and p.stem not in ("case", "uhd")}}


def run_extract(video: Path, out: Path, **settings) -> object:
    return extract.extract_video(video, out, video_id="vid-test", settings=extract.Settings(**settings),
                                 source={"bucket": "raw", "key": SECRET_KEY, "version_id": "v1"}, log=lambda _: None)


def run_container(tmp_path: Path, video: Path | list[Path] | None, *extra: str, name: str = "theatre 3.mp4",
                  ) -> tuple[subprocess.CompletedProcess, Path]:
    """The container as the local SageMaker runs it; returns the process and the job root (standing for /opt/ml)."""
    root = tmp_path / "job"
    input_dir = local_path(root, INPUT_DIR)
    input_dir.mkdir(parents=True)
    (root / "output").mkdir(parents=True)
    local_path(root, OUTPUT_DIR).mkdir(parents=True)  # the runner makes each ProcessingOutput's folder
    for i, v in enumerate([] if video is None else video if isinstance(video, list) else [video]):
        (input_dir / (name if i == 0 else f"{i}-{name}")).write_bytes(v.read_bytes())
    arguments = ["--input", INPUT_DIR, "--output", OUTPUT_DIR, "--video-id", "vid-0123abcd",
                 "--source-bucket", "surgical-videos-raw", "--source-key", SECRET_KEY, "--source-version", "v-42",
                 *extra]
    image = parse_dockerfile("surgical-mlops/frame-extractor", FOLDER)
    argv = image.command(None, [map_value(root, a) for a in arguments])
    env = base_environment(root, image, {})
    proc = subprocess.run(argv, env=env, cwd=image.workdir, capture_output=True, text=True, timeout=120, check=False)
    return proc, root


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of a JPEG's header segments, up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    segments, i = [], 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        segments.append((marker, data[i + 4:i + 2 + length]))
        if marker == 0xDA:
            return segments
        i += 2 + length
    raise AssertionError("no start of scan")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


# -- the run contract ------------------------------------------------------------------------------------------------
def test_container_runs_like_the_local_sagemaker_and_writes_frames_manifest_and_message(tmp_path, media):
    proc, root = run_container(tmp_path, media["mp4"])
    assert proc.returncode == 0, proc.stderr
    out = local_path(root, OUTPUT_DIR)
    manifest = json.loads((out / "frames.json").read_text())
    assert manifest["schema"] == "surgical-mlops/frames/v1" and manifest["video_id"] == "vid-0123abcd"
    assert manifest["source"] == {"bucket": "surgical-videos-raw", "key": SECRET_KEY, "version_id": "v-42",
                                  "sha256": hashlib.sha256(media["mp4"].read_bytes()).hexdigest(),
                                  "size": media["mp4"].stat().st_size}
    assert manifest["video"] == {"duration_s": pytest.approx(3.0, abs=0.05), "fps": 25.0, "width": 320,
                                 "height": 192, "codec": "h264"}
    assert manifest["extraction"] == {"fps": 5.0, "jpeg_quality": 90, "max_side": 1280,
                                      "extractor_version": extract.EXTRACTOR_VERSION}
    assert manifest["frame_count"] == 15 and (manifest["width"], manifest["height"]) == (320, 192)
    assert manifest["frames"][:2] == [{"index": 0, "file": "000000.jpg", "timestamp": 0.0},
                                      {"index": 1, "file": "000001.jpg", "timestamp": 0.2}]
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.jpg" for i in range(15)] + ["frames.json"]
    assert (root / "output" / "message").read_text().strip() == (
        "extracted 15 frames at 5 fps from 3.0 s of 320x192 video")
    assert not (root / "output" / "failure").exists()
    # Logs name the video id, never the source key nor the uploaded file's name.
    logs = proc.stdout + proc.stderr
    assert "vid-0123abcd" in logs and "real time" in logs
    assert "Doe" not in logs and "theatre" not in logs


def test_dockerfile_and_requirements_follow_the_container_contract():
    image = parse_dockerfile("surgical-mlops/frame-extractor", FOLDER)
    assert image.entrypoint == ["python", "/opt/program/entrypoint.py"]
    assert image.command(None, [])[1] == str(FOLDER / "entrypoint.py")
    assert image.env["PYTHONUNBUFFERED"] == "1"
    dockerfile = (FOLDER / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim-bookworm@sha256:" in dockerfile
    assert "apt-get install -y --no-install-recommends ffmpeg" in dockerfile
    assert "rm -rf /var/lib/apt/lists/*" in dockerfile
    requirements = (FOLDER / "requirements.txt").read_text().splitlines()
    assert requirements and all(not line.strip() or line.startswith("#") for line in requirements)


def test_container_code_imports_only_the_standard_library():
    for source in FOLDER.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "extract", f"{source.name} imports {name}"


# -- frames ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_frame_count_and_timestamps_follow_the_requested_rate(tmp_path, media, kind):
    result = run_extract(media[kind], tmp_path / "out")
    manifest = result.manifest
    duration = manifest["video"]["duration_s"]
    assert abs(manifest["frame_count"] - round(duration * 5)) <= 1
    assert len(manifest["frames"]) == manifest["frame_count"]
    for i, frame in enumerate(manifest["frames"]):
        assert frame["index"] == i and frame["file"] == f"{i:06d}.jpg"
        assert frame["timestamp"] == pytest.approx(i * 0.2, abs=1e-3)
    assert manifest["video"]["codec"] == {"mp4": "h264", "avi": "mpeg4"}[kind]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == (
        [f["file"] for f in manifest["frames"]] + ["frames.json"])


def test_other_rates_give_their_own_timestamps(tmp_path, media):
    manifest = run_extract(media["mp4"], tmp_path / "out", fps=2.5).manifest
    assert [f["timestamp"] for f in manifest["frames"]] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8],
                                                                         abs=1e-3)
    assert manifest["extraction"]["fps"] == 2.5


def test_each_frame_is_the_source_frame_nearest_its_timestamp(tmp_path, media):
    """FFmpeg's fps filter by default would take the frame 80 ms later (the last within half an output interval)."""
    run_extract(media["mp4"], tmp_path / "out")
    capture = cv2.VideoCapture(str(media["mp4"]))
    source = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        source.append(frame)
    assert len(source) == 75
    for i in range(15):
        image = cv2.imread(str(tmp_path / "out" / f"{i:06d}.jpg"))
        scores = {j: psnr(image, source[j]) for j in range(max(0, 5 * i - 2), min(75, 5 * i + 3))}
        assert max(scores, key=scores.get) == 5 * i, scores


def test_4k_is_downscaled_to_the_max_side_keeping_aspect_and_even_sizes(tmp_path, media):
    manifest = run_extract(media["4k"], tmp_path / "out").manifest
    assert (manifest["video"]["width"], manifest["video"]["height"]) == (3840, 2160)
    assert (manifest["width"], manifest["height"]) == (1280, 720) and manifest["frame_count"] == 5
    for frame in manifest["frames"]:
        assert cv2.imread(str(tmp_path / "out" / frame["file"])).shape == (720, 1280, 3)


@pytest.mark.parametrize(("max_side", "size"), [(1280, (320, 192)), (160, (160, 96)), (250, (250, 150))])
def test_frames_larger_than_the_max_side_shrink_and_smaller_ones_keep_their_size(tmp_path, media, max_side, size):
    manifest = run_extract(media["mp4"], tmp_path / "out", max_side=max_side).manifest
    assert (manifest["width"], manifest["height"]) == size
    assert cv2.imread(str(tmp_path / "out" / "000000.jpg")).shape[:2] == (size[1], size[0])


def test_jpegs_carry_no_exif_comment_or_other_metadata(tmp_path):
    video = tmp_path / "tagged.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x192:rate=25:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-metadata", "title=Doe Jane", "-metadata", "comment=MRN 12345", "-metadata:s:v:0", "handler_name=Doe",
           str(video))
    run_extract(video, tmp_path / "out")
    for jpeg in (tmp_path / "out").glob("*.jpg"):
        data = jpeg.read_bytes()
        segments = jpeg_segments(data)
        markers = [marker for marker, _ in segments]
        assert 0xE1 not in markers and b"Exif" not in data  # APP1 / EXIF
        assert 0xFE not in markers and b"Lavc" not in data  # COM (FFmpeg's encoder comment)
        # APP0 only as JFIF (version, pixel aspect), written when the source declares its aspect ratio.
        assert all(payload.startswith(b"JFIF\0") for marker, payload in segments if 0xE0 <= marker <= 0xEF)
        assert b"Doe" not in data and b"12345" not in data


def test_jpeg_quality_gives_libjpegs_quantisation_tables(tmp_path, media):
    """The luma table in each JPEG is OpenCV's (libjpeg's) at the same quality; only the DC step differs."""

    def luma_table(data: bytes) -> bytes:
        i = data.index(b"\xff\xdb")
        assert data[i + 4] == 0  # 8-bit table 0
        return data[i + 5:i + 69]

    for quality in (50, 90):
        out = tmp_path / f"q{quality}"
        run_extract(media["mp4"], out, jpeg_quality=quality)
        ok, reference = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        assert luma_table((out / "000000.jpg").read_bytes())[1:] == luma_table(reference.tobytes())[1:]
    assert extract.quantisation_tables(100) == ([1] * 64, [1] * 64)


def test_progress_is_logged_while_extracting(tmp_path, media, monkeypatch):
    monkeypatch.setattr(extract, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    result = extract.extract_video(media["mp4"], tmp_path / "out", video_id="vid-p", log=lines.append)
    progress = [line for line in lines if "frames extracted" in line]  # from FFmpeg's -progress reports
    assert progress and progress[-1] == "video vid-p: 15 frames extracted, t=3.0 s / 3.0 s"
    assert lines[-1].startswith("video vid-p: done: 15 frames (320x192) in ") and lines[-1].endswith("x real time")
    assert result.summary == "extracted 15 frames at 5 fps from 3.0 s of 320x192 video"


# -- failures --------------------------------------------------------------------------------------------------------
FAILURES = [
    ("empty", "empty file: 0 bytes"),
    ("text", "not a video: FFmpeg cannot read the container (Invalid data found when processing input)"),
    ("still", "not a video: the file is a still image (png_pipe)"),
    ("audio", "no video stream: the file has 1 audio stream(s) and no video"),
    ("zeroed", "zero frames decoded"),
    ("cut_moov", "truncated or corrupt video: FFmpeg cannot read the container (moov atom not found)"),
    ("cut_mdat", "truncated or corrupt video: the file ends at "),
    ("cut_avi", "truncated or corrupt video: the file ends at "),  # its RIFF chunk declares more
    ("cut_mkv", "truncated or corrupt video: decoding stopped at "),  # no structure rule: the duration rule
]


@pytest.mark.parametrize(("name", "reason"), FAILURES, ids=[f[0] for f in FAILURES])
def test_bad_input_fails_with_its_reason_and_leaves_nothing_that_looks_valid(tmp_path, media, name, reason):
    video = media[name]
    proc, root = run_container(tmp_path, video, name=f"theatre 3{video.suffix}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failure = (root / "output" / "failure").read_text()
    assert failure.splitlines()[0].startswith(reason), failure
    assert len(failure.splitlines()[0]) < 300
    out = local_path(root, OUTPUT_DIR)
    assert list(out.iterdir()) == []  # no frames.json, no frames, no staging folder
    assert not (root / "output" / "message").exists()
    assert "Doe" not in proc.stdout + proc.stderr + failure and "theatre" not in proc.stdout + proc.stderr + failure


def test_a_failure_removes_earlier_results_from_the_output_folder(tmp_path, media):
    out = tmp_path / "out"
    run_extract(media["mp4"], out)
    assert (out / "frames.json").exists()
    with pytest.raises(extract.ExtractionError, match=r"^truncated or corrupt video"):
        run_extract(media["cut_mdat"], out)
    assert list(out.iterdir()) == []


def test_truncation_rule_by_declared_duration(media):
    """Less than 90 % of the declared duration decoded (one output interval of slack) is a truncated video."""
    probe = extract.VideoProbe("mov", 10.0, 0, "h264", 320, 192, 25.0)
    settings = extract.Settings()
    extract._check([i / 5 for i in range(44)], 0, [], probe, settings)  # 8.8 s + 0.2 s slack reach 9.0 s
    with pytest.raises(extract.ExtractionError, match=r"decoding stopped at 8\.6 s of the 10\.0 s .* \(86%\)"):
        extract._check([i / 5 for i in range(43)], 0, [], probe, settings)
    with pytest.raises(extract.ExtractionError, match="FFmpeg failed with exit status 1"):
        extract._check([0.0], 1, [], probe, settings)
    with pytest.raises(extract.ExtractionError, match=r"^zero frames decoded$"):
        extract._check([], 0, [], probe, settings)


@pytest.mark.parametrize(("files", "reason"), [
    (0, "no input file: the input folder is empty"),
    (2, "more than one input file: the input folder holds 2 files, expected one"),
])
def test_input_folder_must_hold_exactly_one_file(tmp_path, media, files, reason):
    proc, root = run_container(tmp_path, [media["mp4"]] * files)
    assert proc.returncode == 1
    assert (root / "output" / "failure").read_text().strip() == reason
    assert list(local_path(root, OUTPUT_DIR).iterdir()) == []


def test_bad_arguments_fail_with_a_reason(tmp_path, media):
    proc, root = run_container(tmp_path, media["mp4"], "--jpeg-quality", "0")
    assert proc.returncode == 2
    assert (root / "output" / "failure").read_text().startswith("bad arguments: jpeg quality must be in 1..100")


def test_failure_file_defaults_to_opt_ml_output_when_sm_output_dir_is_unset(monkeypatch):
    entrypoint_spec = importlib.util.spec_from_file_location("frame_extractor_entrypoint", FOLDER / "entrypoint.py")
    monkeypatch.syspath_prepend(str(FOLDER))
    module = importlib.util.module_from_spec(entrypoint_spec)
    entrypoint_spec.loader.exec_module(module)
    monkeypatch.delenv("SM_OUTPUT_DIR", raising=False)
    assert module.output_dir() == Path("/opt/ml/output")
    monkeypatch.setenv("SM_OUTPUT_DIR", "/tmp/elsewhere")
    assert module.output_dir() == Path("/tmp/elsewhere")


def test_ffmpeg_binary_comes_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("FFMPEG_BINARY", "/usr/local/bin/my-ffmpeg")
    assert extract.ffmpeg_binary() == "/usr/local/bin/my-ffmpeg"
    monkeypatch.delenv("FFMPEG_BINARY")
    monkeypatch.setenv("PATH", os.defpath)
    assert Path(extract.ffmpeg_binary()).name == "ffmpeg"


def test_an_ffmpeg_rejecting_its_command_is_an_internal_error_not_a_bad_video(tmp_path, media, monkeypatch):
    build = extract.ffmpeg_command
    monkeypatch.setattr(extract, "ffmpeg_command",
                        lambda *args: ["-fps_mode_from_the_future" if a == "-fps_mode" else a for a in build(*args)])
    with pytest.raises(extract.ExtractionError, match=r"^internal error: FFmpeg rejected its command \(Unrecognized"):
        run_extract(media["mp4"], tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
