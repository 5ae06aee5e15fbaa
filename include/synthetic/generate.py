"""Synthetic surgical videos on disk: encode rendered scenes with FFmpeg, store their true boxes, and the CLI.

The truth of a video is stored as ``<truth_dir>/<sha256 of the video file>.json``: whoever holds the video bytes can
find it, and nothing in the video's (opaque) file name or metadata points at it. The truth is written before the
video is renamed into place, so a watcher that sees the video can always find its truth.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from include.media import ffmpeg_exe
from include.synthetic.render import SCENARIOS, make_scene, render_frame
from include.synthetic.sprites import CLASSES

TRUTH_SCHEMA = "surgical-mlops/synthetic-truth/v1"
FORMATS = ("mp4", "avi", "mixed")
# Thread counts are pinned: encoders' output depends on them, and the truth is keyed by the file's hash, so the same
# seed gives the same bytes (and the same truth key) on any machine with the same FFmpeg build.
_CODECS = {
    "mp4": ["-c:v", "libx264", "-threads", "4", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "23",
            "-movflags", "+faststart"],
    "avi": ["-c:v", "mpeg4", "-threads", "1", "-q:v", "4", "-pix_fmt", "yuv420p"],
}


@dataclass(frozen=True)
class GeneratedVideo:
    path: Path
    sha256: str
    frame_count: int
    fps: float
    width: int
    height: int
    scenario: str
    seed: int
    truth_path: Path


def encode_video(frames: Iterable[np.ndarray], path: Path, *, width: int, height: int, fps: float,
                 video_format: str) -> None:
    """Pipe RGB frames (HxWx3 uint8) to one FFmpeg process writing ``path`` as ``video_format`` (mp4 or avi)."""
    if video_format not in _CODECS:
        raise ValueError(f"unsupported video format {video_format!r}; expected mp4 or avi")
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
           "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
           *_CODECS[video_format], "-f", video_format, str(path)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        assert proc.stdin is not None
        try:
            for frame in frames:
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise ValueError(f"frame must be {height}x{width}x3 uint8, got {frame.shape} {frame.dtype}")
                proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            pass  # FFmpeg stopped reading; its exit status and log say why
        except BaseException:
            proc.kill()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            proc.wait()
        if proc.returncode != 0:
            log.seek(0)
            reason = log.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}) writing {path.name}: {reason[0]}")


def generate_video(path: str | os.PathLike[str], *, seconds: float, width: int, height: int, fps: float, seed: int,
                   scenario: str = "normal", truth_dir: str | os.PathLike[str]) -> GeneratedVideo:
    """Render, encode and store one video and its truth; returns what was written."""
    path, truth_dir = Path(path), Path(truth_dir)
    if not (0 < fps <= 240) or seconds <= 0:
        raise ValueError(f"need 0 < fps <= 240 and seconds > 0, got fps={fps} seconds={seconds}")
    frame_count = round(seconds * fps)
    if frame_count < 1:
        raise ValueError(f"a video needs at least one frame: seconds={seconds} fps={fps}")
    scene = make_scene(width, height, fps, seed, scenario)
    truth: list[dict] = []
    video_format = path.suffix.lower().lstrip(".")
    if video_format not in _CODECS:
        raise ValueError(f"unsupported video suffix {path.suffix!r}; expected .mp4 or .avi")
    # Hidden and without a video suffix, so nothing watching the folder for videos picks it up half-written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        encode_video(_frames(scene, frame_count, truth), tmp, width=width, height=height, fps=fps,
                     video_format=video_format)
        digest = sha256_file(tmp)
        record = {
            "schema": TRUTH_SCHEMA, "video_sha256": digest, "video_file": path.name, "width": width, "height": height,
            "fps": float(fps), "frame_count": frame_count, "seconds": frame_count / fps, "scenario": scenario,
            "seed": seed, "classes": list(CLASSES), "objects": [o.label for o in scene.objects], "frames": truth,
        }
        truth_path = _write_json(truth_dir / f"{digest}.json", record)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return GeneratedVideo(path, digest, frame_count, float(fps), width, height, scenario, seed, truth_path)


def generate_batch(out_dir: str | os.PathLike[str], count: int, *, seconds: float = 10, width: int = 640,
                   height: int = 360, fps: float = 25, seed: int = 0, video_format: str = "mp4",
                   scenario: str = "normal", truth_dir: str | os.PathLike[str]) -> list[GeneratedVideo]:
    """``count`` videos named ``case-<seed>-<index>.<ext>``; ``video_format`` mixed alternates mp4 and avi."""
    if video_format not in FORMATS:
        raise ValueError(f"unknown format {video_format!r}; expected one of {FORMATS}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    videos = []
    for index in range(count):
        ext = ("mp4", "avi")[index % 2] if video_format == "mixed" else video_format
        videos.append(generate_video(
            Path(out_dir) / f"case-{seed}-{index:03d}.{ext}", seconds=seconds, width=width, height=height, fps=fps,
            seed=video_seed(seed, index), scenario=scenario, truth_dir=truth_dir))
    return videos


def video_seed(seed: int, index: int) -> int:
    """The seed of video ``index`` in a batch: independent streams per video, stable across runs."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def load_truth(truth_dir: str | os.PathLike[str], video_sha256: str) -> dict:
    """The truth record of the video whose file has this SHA-256."""
    if len(video_sha256) != 64 or any(c not in "0123456789abcdef" for c in video_sha256):
        raise ValueError(f"not a sha256 hex digest: {video_sha256!r}")
    record = json.loads((Path(truth_dir) / f"{video_sha256}.json").read_text())
    if record.get("schema") != TRUTH_SCHEMA:
        raise ValueError(f"unexpected truth schema {record.get('schema')!r}")
    return record


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _frames(scene, frame_count: int, truth: list[dict]) -> Iterator[np.ndarray]:
    """Yield the frames and append each frame's truth as it is rendered."""
    for i in range(frame_count):
        frame, boxes = render_frame(scene, i)
        truth.append({"index": i, "t": round(i / scene.fps, 6), "boxes": [b.as_dict() for b in boxes]})
        yield frame


def _write_json(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(record, separators=(",", ":")))
    os.replace(tmp, path)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m include.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="directory for the videos")
    p.add_argument("--truth-dir", required=True, type=Path, help="directory for <sha256>.json truth files")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=FORMATS, default="mp4")
    p.add_argument("--scenario", choices=SCENARIOS, default="normal")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        videos = generate_batch(args.out, args.count, seconds=args.seconds, width=args.width, height=args.height,
                                fps=args.fps, seed=args.seed, video_format=args.format, scenario=args.scenario,
                                truth_dir=args.truth_dir)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for v in videos:
        print(f"{v.path}\t{v.frame_count / v.fps:.2f}s\t{v.path.stat().st_size} bytes")
    return 0
