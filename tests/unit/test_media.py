"""Tests for include.media: finding FFmpeg and probing videos by decoding them."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from include.media import VideoError, VideoInfo, ffmpeg_exe, probe_video


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("media")
    src = ["-f", "lavfi", "-i", "testsrc=size=160x96:rate=10", "-t", "2"]
    _ffmpeg(*src, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "clip.mp4"))
    _ffmpeg(*src, "-c:v", "mpeg4", str(d / "clip.avi"))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", str(d / "tone.wav"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", str(d / "still.png"))
    (d / "noise.mp4").write_bytes(random.Random(4).randbytes(4096))  # seeded: os.urandom sometimes looks like audio
    (d / "empty.mp4").write_bytes(b"")
    return d


@pytest.mark.parametrize(("name", "codec"), [("clip.mp4", "h264"), ("clip.avi", "mpeg4")])
def test_probe_reports_size_rate_length_and_codec(media_dir: Path, name: str, codec: str) -> None:
    info = probe_video(media_dir / name)
    assert info == VideoInfo(width=160, height=96, fps=10.0, duration_s=pytest.approx(2.0, abs=0.11), frame_count=20,
                             codec=codec)


def test_random_bytes_are_not_decodable(media_dir: Path) -> None:
    with pytest.raises(VideoError, match=r"cannot decode noise\.mp4: .*Invalid data"):
        probe_video(media_dir / "noise.mp4")


def test_empty_file_is_not_a_video(media_dir: Path) -> None:
    with pytest.raises(VideoError, match=r"not a video: empty\.mp4 is empty"):
        probe_video(media_dir / "empty.mp4")


def test_audio_only_file_has_no_video_stream(media_dir: Path) -> None:
    with pytest.raises(VideoError, match=r"not a video: tone\.wav has no video stream"):
        probe_video(media_dir / "tone.wav")


def test_still_image_is_not_a_video(media_dir: Path) -> None:
    with pytest.raises(VideoError, match=r"not a video: still\.png is a still image"):
        probe_video(media_dir / "still.png")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="is not a file"):
        probe_video(tmp_path / "nope.mp4")


def test_video_error_is_a_value_error() -> None:
    assert issubclass(VideoError, ValueError)


def test_ffmpeg_exe_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FFMPEG_BINARY", "/opt/custom/ffmpeg")
    assert ffmpeg_exe() == "/opt/custom/ffmpeg"


def test_ffmpeg_exe_falls_back_to_bundled_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FFMPEG_BINARY", raising=False)
    monkeypatch.setattr("shutil.which", lambda _name: None)
    exe = ffmpeg_exe()
    assert Path(exe).is_file()
    assert "imageio_ffmpeg" in exe
