"""FFmpeg helpers shared by the pipeline: find the binary, and probe a video by decoding it once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_STREAM = re.compile(r"Stream #\d+:\d+\S*: Video: (?P<codec>[^\s,]+)(?P<rest>[^\r\n]*)")
_SIZE = re.compile(r", (\d+)x(\d+)\b")
_RATE = re.compile(r", (\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FRAMES = re.compile(r"frame=\s*(\d+)")
_DEMUXER = re.compile(r"Input #0, ([^\s,]+)")


class VideoError(ValueError):
    """A file is not a decodable video."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    codec: str


def ffmpeg_exe() -> str:
    """The FFmpeg binary: ``$FFMPEG_BINARY``, else ``ffmpeg`` on PATH, else the one bundled with imageio-ffmpeg."""
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # lazily: only needed without a system ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe_video(path: str | os.PathLike[str], *, timeout_s: float = 600) -> VideoInfo:
    """Decode the first video stream of ``path`` once and report its size, rate, length and codec."""
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"not a video: {p.name} is not a file")
    if p.stat().st_size == 0:
        raise VideoError(f"not a video: {p.name} is empty")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-stats", "-i", str(p), "-map", "0:v:0", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    log = proc.stderr.decode("utf-8", "replace").replace(str(p), p.name)
    head = re.split(r"Stream mapping:|Output #0", log, maxsplit=1)[0]
    stream = _STREAM.search(head)
    if stream is None:
        if "Stream #" in head:
            raise VideoError(f"not a video: {p.name} has no video stream")
        raise VideoError(f"cannot decode {p.name}: {_last_error(log)}")
    if proc.returncode != 0:
        raise VideoError(f"cannot decode {p.name}: {_last_error(log)}")
    demuxer = _DEMUXER.search(head)
    if demuxer and (demuxer.group(1) == "image2" or demuxer.group(1).endswith("_pipe")):
        raise VideoError(f"not a video: {p.name} is a still image ({demuxer.group(1)})")
    frames = _FRAMES.findall(log)
    frame_count = int(frames[-1]) if frames else 0
    if frame_count == 0:
        raise VideoError(f"cannot decode {p.name}: no frames decoded")
    return _info(stream, head, frame_count)


def _info(stream: re.Match[str], head: str, frame_count: int) -> VideoInfo:
    rest = stream.group("rest")
    size = _SIZE.search(rest)
    if size is None:
        raise VideoError(f"cannot decode: no frame size in {stream.group(0)!r}")
    rate = _RATE.search(rest)
    duration = _DURATION.search(head)
    fps = float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else 0.0
    duration_s = 0.0
    if duration:
        duration_s = int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
    if fps <= 0 and duration_s > 0:
        fps = frame_count / duration_s
    if duration_s <= 0 and fps > 0:
        duration_s = frame_count / fps
    return VideoInfo(int(size.group(1)), int(size.group(2)), fps, duration_s, frame_count, stream.group("codec"))


def _last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.lstrip().startswith("frame=")]
    return lines[-1] if lines else "ffmpeg gave no reason"
