"""Frame extraction with one FFmpeg process: probe a video, write JPEG frames at a fixed rate, describe them.

Self-contained on purpose (standard library + the ``ffmpeg`` binary): only this folder is in the container image.
``entrypoint.py`` is the SageMaker contract around it; the benchmark (``bench/extract.py``) and the tests call
:func:`extract_video` directly, so every caller runs the same code path.

How the frames are chosen. FFmpeg's ``fps`` filter with its default rounding (``near``) gives output slot *n* the
*last* source frame within half an output interval of ``n / fps``: at 25 -> 5 fps the frame at 0.08 s for the slot
at 0.0 s, 80 ms away from its timestamp (and from the truth of a labelled video). With ``round=up`` it gives the last
frame at or before the slot, and the source timestamps are moved half a source frame earlier first (``setpts``), so
slot *n* holds the source frame *nearest* to ``n / fps`` (the frame exactly at it when one exists). Per-frame
timestamps come from FFmpeg itself: a ``metadata=print`` tap after ``fps`` writes each kept frame's pts, an integer in
the ``fps`` filter's time base (``1 / fps``), so a timestamp is exactly ``pts / fps`` (``showinfo`` would do too, but
it checksums and averages every pixel of every kept frame: ~10 % of the run). Progress comes from ``-progress``.

What is cheap. One process per video; only the chosen video stream is demuxed and decoded (``-map 0:<index>``, no
audio/subtitle/data decoding), with one decoder thread more than CPUs; every frame must still be decoded (inter-frame
codecs reference earlier frames: that is most of the time), but only the kept frames are range-converted, scaled,
tapped and JPEG-encoded (``fps`` comes first in the filter graph). No metadata is copied (``-map_metadata -1``,
``-map_chapters -1``); the JPEGs carry no EXIF and no comment (``+bitexact`` drops the encoder's), only a JFIF header
(version, pixel aspect) when the source declares its aspect ratio. ``--jpeg-quality`` means libjpeg's quality: see
:func:`mjpeg_options`.

Failure rules (:class:`ExtractionError`, whose message is the job's failure reason; no file names in it):
- ``empty file: 0 bytes``;
- ``not a video: ...``: FFmpeg cannot open the container and the file has no MP4/AVI/Matroska signature, or FFmpeg
  opens it as a still image;
- ``no video stream: the file has N audio stream(s) and no video`` (cover art does not count as video);
- ``zero frames decoded``: a video stream, but not one frame came out of the decoder;
- ``truncated or corrupt video: ...``, checked in this order:
  1. FFmpeg cannot open a file whose signature says MP4/AVI/Matroska (an MP4 cut before its ``moov`` atom);
  2. the container's own structure ends past the end of the file (:func:`container_truncation`: MP4 boxes, AVI
     RIFF chunks): FFmpeg reads a cut file without an error and, for AVI, even reports the shortened duration;
  3. FFmpeg exits non-zero while extracting;
  4. the frames reach less than 90 % into the duration the container declares, allowing one output interval for
     rounding (``frames / fps + 1 / fps < 0.9 * duration``): truncation that 2. cannot see (Matroska, damaged
     data). Limitation: ``ffmpeg -i`` prints the container's duration, so a video stream much shorter than its
     audio stream would read as truncated.
  Decode errors that FFmpeg conceals in a video that is otherwise complete are counted and logged, not fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

SCHEMA = "surgical-mlops/frames/v1"
EXTRACTOR_VERSION = "1.0.0"
MIN_COVERAGE = 0.9  # decoded span / declared duration below which a video is truncated (see the module docstring)
PROGRESS_EVERY_S = 2.0

_INPUT = re.compile(r"^Input #0, (?P<demuxer>[^,]+(?:,[^ ,]+)*), from ", re.MULTILINE)
_DURATION = re.compile(r"^\s*Duration: (?:(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d(?:\.\d+)?)|N/A)", re.MULTILINE)
_STREAM = re.compile(r"^\s*Stream #0:(?P<index>\d+)\S*: (?P<kind>\w+): (?P<rest>.*)$", re.MULTILINE)
_PARENS = re.compile(r"\([^()]*\)")
_SIZE = re.compile(r"^(\d+)x(\d+)\b")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(k?) (fps|tbr)$")
_FRAME = re.compile(r"^frame:(\d+)\s+pts:(-?\d+)\s+pts_time:(\S+)")
_PROGRESS = re.compile(r"^(frame|out_time_us|progress)=(\S+)$")
_DECODE_ERROR = re.compile(r"corrupt|error|invalid|damaged|concealing|missing picture", re.IGNORECASE)
# FFmpeg refusing its command line (an FFmpeg too old for an option or filter): the extractor's fault, not the video's.
_REJECTED = re.compile(r"Unrecognized option|Option not found|No such filter|Error parsing (?:filterchain|a filter)|"
                       r"Error applying option|Invalid argument.*option|Unknown encoder", re.IGNORECASE)
_STILL_DEMUXERS = re.compile(r"^(image2|.*_pipe)$")
# Containers whose first bytes identify them: a file with one of these signatures that FFmpeg cannot open is a
# damaged video (an MP4 cut before its moov atom), not some other kind of file.
_SIGNATURES = ((4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (0, b"RIFF"),
               (0, b"\x1aE\xdf\xa3"))
# The JPEG standard's example quantisation tables (ITU-T T.81 Annex K, raster order): what libjpeg scales by quality.
_JPEG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17,
              22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78,
              87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_JPEG_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66,
                99, 99, 99, 99, 99, 99, *(99,) * 32)


class ExtractionError(Exception):
    """The input cannot give frames; ``str(exc)`` is the failure reason (first line short, no file names)."""


@dataclass(frozen=True)
class Settings:
    fps: float = 5.0
    jpeg_quality: int = 90
    max_side: int = 1280
    threads: int = 0  # FFmpeg decoder threads; 0: decoder_threads()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and 0 < self.fps <= 240):
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_side < 16:
            raise ValueError(f"max side must be at least 16, got {self.max_side}")


@dataclass(frozen=True)
class VideoProbe:
    demuxer: str
    duration_s: float | None
    stream_index: int  # absolute index of the video stream used (the first one that is not cover art)
    codec: str
    width: int
    height: int
    fps: float | None
    other_streams: dict[str, int] = field(default_factory=dict)


@dataclass
class FrameRecord:
    index: int
    file: str
    timestamp: float


@dataclass
class Extraction:
    manifest: dict
    frames: list[FrameRecord]
    wall_s: float
    decode_errors: int
    ffmpeg_max_rss_kb: int | None

    @property
    def summary(self) -> str:
        m = self.manifest
        video = m["video"]
        return (f"extracted {m['frame_count']} frames at {_num(m['extraction']['fps'])} fps from "
                f"{video['duration_s']:.1f} s of {video['width']}x{video['height']} video")


# -- FFmpeg ------------------------------------------------------------------------------------------------------------
def ffmpeg_binary() -> str:
    """``$FFMPEG_BINARY``; else ``ffmpeg`` on PATH; else one next to the interpreter (the dev venv links it there)."""
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    beside = Path(sys.executable).parent / "ffmpeg"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise ExtractionError("ffmpeg not found: set FFMPEG_BINARY or put ffmpeg on PATH")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decoder_threads() -> int:
    """One more than the CPUs: frame threads wait on their reference frames, and the spare one keeps the cores busy
    meanwhile (on 2 cores, 3 threads were 5-10 % faster than 2 in each of four A/B runs on a noisy machine; 2 were
    about 30 % faster than 1 at decoding)."""
    return cpu_count() + 1


def quantisation_tables(quality: int) -> tuple[list[int], list[int]]:
    """JPEG quality 1-100 -> the (luma, chroma) tables libjpeg (so OpenCV and PIL) writes for it, raster order.

    libjpeg scales the standard tables by ``5000 / q`` (q < 50) or ``200 - 2 q`` percent, rounds, clips to 1-255.
    """
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return ([min(max((t * scale + 50) // 100, 1), 255) for t in _JPEG_LUMA],
            [min(max((t * scale + 50) // 100, 1), 255) for t in _JPEG_CHROMA])


def mjpeg_options(quality: int) -> list[str]:
    """FFmpeg MJPEG encoder options for a libjpeg-style quality.

    FFmpeg's own scale (``-q:v`` 1-31) multiplies the MPEG-1 intra matrix by ``qscale / 8``; its output at the
    qscale with the same mean step as libjpeg's quality 90 (3) measured 3 dB (luma PSNR) below libjpeg's. So the
    encoder gets libjpeg's tables for ``quality`` as its matrices, at qscale 8 where it uses them unscaled: every
    JPEG's DQT is libjpeg's (the DC step excepted: FFmpeg fixes it at 8). Measured on the synthetic videos at 90:
    luma PSNR about 1 dB below libjpeg (FFmpeg rounds quantised coefficients towards zero), files about 20 % smaller.
    """
    luma, chroma = quantisation_tables(quality)
    return ["-intra_matrix", ",".join(map(str, luma)), "-chroma_intra_matrix", ",".join(map(str, chroma)),
            "-q:v", "8"]


def scale_filter(max_side: int) -> str:
    """Down to ``max_side`` on the longer side, aspect kept, even sizes (``-2``); smaller frames keep their size.

    The size is decided on the decoded frame (after FFmpeg's auto-rotation), so a portrait phone video scales by
    its displayed height. ``out_range=pc``: JPEG (JFIF) is full-range YUV; video usually limited-range.
    """
    m = max_side - max_side % 2
    w = f"if(gte(iw,ih),if(gt(iw,{m}),{m},iw),if(gt(ih,{m}),-2,iw))"
    h = f"if(gte(iw,ih),if(gt(iw,{m}),-2,ih),if(gt(ih,{m}),{m},ih))"
    return f"scale=w='{w}':h='{h}':out_range=pc"


def output_rate(settings: Settings) -> Fraction:
    return Fraction(settings.fps).limit_denominator(1001000)


def tap_filter(path: Path) -> str:
    """Log each frame's number and pts to ``path``: ``metadata=print`` (it prints only frames with an entry, so one
    is added first). To a file, not FFmpeg's log: at info level that log re-prints the input's metadata."""
    return f"metadata=mode=add:key=frame_extractor:value=1,metadata=mode=print:file={_filter_value(str(path))}"


def _filter_value(text: str) -> str:
    """Escape a filter option value, then again for the filter graph (FFmpeg's two levels of quoting)."""
    return re.sub(r"([\\'\[\],;])", r"\\\1", re.sub(r"([\\':])", r"\\\1", text))


def ffmpeg_command(ffmpeg: str, source: str, out_dir: Path, probe: VideoProbe, settings: Settings,
                   tap: Path) -> list[str]:
    rate = output_rate(settings)
    # Half a source frame earlier (see the module docstring), capped below half an output interval so the first
    # frame never lands on a negative output slot when the source is slower than the output rate.
    source_interval = 1 / probe.fps if probe.fps else 0.0
    shift = min(source_interval / 2, 0.499 / settings.fps)
    filters = [f"setpts=PTS-{shift:.9f}/TB", f"fps=fps={rate.numerator}/{rate.denominator}:round=up",
               scale_filter(settings.max_side), tap_filter(tap)]
    threads = settings.threads or decoder_threads()
    return [
        # Warnings and errors only: at "info" FFmpeg re-prints the input's metadata (titles, comments: they may name
        # the patient), and error lines may become the failure reason.
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-progress", "pipe:1",
        "-threads", str(threads), "-i", source,
        "-map", f"0:{probe.stream_index}", "-an", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
        "-filter_threads", "1", "-vf", ",".join(filters),
        "-fps_mode", "passthrough",  # one image per filtered frame: the fps filter already chose them
        "-c:v", "mjpeg", *mjpeg_options(settings.jpeg_quality), "-threads", "1",
        "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-f", "image2", "-start_number", "0", str(out_dir).replace("%", "%%") + "/%06d.jpg",
    ]


# -- probe -------------------------------------------------------------------------------------------------------------
def probe(ffmpeg: str, source: str, raw: Path) -> VideoProbe:
    """``ffmpeg -i``: container, declared duration and streams; classifies files FFmpeg cannot use."""
    proc = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", source], capture_output=True, check=False)
    log = proc.stderr.decode("utf-8", "replace")
    opened = _INPUT.search(log)
    if opened is None:
        reason, specific = _open_error(log)
        if _has_video_signature(raw):  # a video container FFmpeg cannot open: damaged (e.g. cut before its moov)
            raise ExtractionError(
                f"truncated or corrupt video: FFmpeg cannot read the container ({specific or reason})")
        raise ExtractionError(f"not a video: FFmpeg cannot read the container ({reason})")
    demuxer = opened.group("demuxer")
    head = log[opened.start():]
    if _STILL_DEMUXERS.match(demuxer):
        raise ExtractionError(f"not a video: the file is a still image ({demuxer})")
    duration = _DURATION.search(head)
    duration_s = None
    if duration and duration.group("h") is not None:
        duration_s = int(duration.group("h")) * 3600 + int(duration.group("m")) * 60 + float(duration.group("s"))
    others: dict[str, int] = {}
    for stream in _STREAM.finditer(head):
        kind, rest = stream.group("kind").lower(), stream.group("rest")
        if kind == "video" and "(attached pic)" not in rest:
            return _video_probe(demuxer, duration_s, int(stream.group("index")), rest, others)
        kind = "cover art" if kind == "video" else kind
        others[kind] = others.get(kind, 0) + 1
    if not others:
        raise ExtractionError("no video stream: the file has no streams")
    counts = ", ".join(f"{n} {kind} stream(s)" for kind, n in others.items())
    raise ExtractionError(f"no video stream: the file has {counts} and no video")


def _video_probe(demuxer: str, duration_s: float | None, index: int, rest: str, others: dict[str, int]) -> VideoProbe:
    flat = rest
    while _PARENS.search(flat):
        flat = _PARENS.sub("", flat)
    fields = [f.strip() for f in flat.split(",")]
    codec = fields[0].split()[0] if fields and fields[0] else "unknown"
    width = height = 0
    rates: dict[str, float] = {}
    for item in fields[1:]:
        size = _SIZE.match(item)
        if size and not width:
            width, height = int(size.group(1)), int(size.group(2))
        rate = _RATE.match(item)
        if rate:
            rates[rate.group(3)] = float(rate.group(1)) * (1000 if rate.group(2) else 1)
    fps = rates.get("fps") or rates.get("tbr")
    return VideoProbe(demuxer, duration_s, index, codec, width, height, fps if fps and fps < 1000 else None, others)


def container_truncation(path: Path) -> str | None:
    """Why the file's own structure says it was cut short, or None (also None when the structure is unknown).

    MP4/MOV: the top-level boxes must end at the end of the file (an upload cut off mid-``mdat`` does not); AVI: each
    top-level ``RIFF`` chunk (``AVI ``, then ``AVIX`` above 1 GB) declares its size. FFmpeg reads such files without
    an error, guessing the duration from what is there, so this is the check that catches a cut AVI.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
            offset = 0
            while offset + 8 <= size:
                f.seek(offset)
                header = f.read(16)
                box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
                if not re.fullmatch(rb"[a-zA-Z0-9 ]{4}", box_type):
                    return None  # not a box (trailing junk): no opinion
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:
                    return None  # "extends to the end of the file"
                if box_size < 8:
                    return None
                if offset + box_size > size:
                    return (f"the file ends at {size} bytes, inside its '{box_type.decode()}' box that declares "
                            f"{offset + box_size} bytes")
                offset += box_size
        elif head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            offset = 0
            while offset + 12 <= size:
                f.seek(offset)
                chunk = f.read(12)
                if chunk[:4] != b"RIFF":
                    return None
                end = offset + 8 + int.from_bytes(chunk[4:8], "little")
                if end > size:
                    return f"the file ends at {size} bytes, inside a RIFF chunk that declares {end} bytes"
                offset = end + (end & 1)
    return None


def _open_error(log: str) -> tuple[str, str | None]:
    """FFmpeg's reason for not opening a file (``Invalid data found...``) and the demuxer's own, if it gave one."""
    lines = [_strip_context(ln) for ln in log.splitlines() if ln.strip()]
    reason = None
    for line in reversed(lines):
        match = re.match(r"Error opening input(?: files?)?: (.+)$", line)
        if match:
            reason = match.group(1).strip().rstrip(".")
            break
    specific = [ln for ln in lines if not re.match(r"Error opening input|Format .* detected only with low score", ln)]
    return reason or (lines[-1] if lines else "no reason given"), (specific[0] if specific else None)


def _has_video_signature(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[offset:offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def _strip_context(line: str) -> str:
    """``[in#0/mov,mp4 @ 0x55..] moov atom not found`` -> ``moov atom not found``."""
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())


# -- extraction --------------------------------------------------------------------------------------------------------
def extract_video(video: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, video_id: str,
                  source: dict | None = None, settings: Settings | None = None,
                  log: Callable[[str], None] = print) -> Extraction:
    """Write ``000000.jpg``... and ``frames.json`` into ``out_dir``; raise :class:`ExtractionError` on bad input.

    Nothing that looks like a result is left behind on failure: frames are written to a hidden staging folder and
    moved into place only when every check passed, ``frames.json`` last.
    """
    settings = settings or Settings()
    video, out_dir = Path(video), Path(out_dir)
    size = video.stat().st_size
    if size == 0:
        raise ExtractionError("empty file: 0 bytes")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous_results(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=out_dir))
    link_dir = Path(tempfile.mkdtemp(prefix="frame-extractor-"))
    try:
        # FFmpeg's messages name its input; a neutral link keeps the uploader's file name (which may hold patient
        # identifiers) out of every log line and failure reason. The suffix stays: FFmpeg's probing weighs it.
        link = link_dir / f"input{video.suffix.lower()}"
        link.symlink_to(video.resolve())
        source_arg = f"file:{link}"
        ffmpeg = ffmpeg_binary()
        info = probe(ffmpeg, source_arg, video)
        cut = container_truncation(video)
        if cut:
            raise ExtractionError(f"truncated or corrupt video: {cut}")
        log(f"video {video_id}: {info.codec} {info.width}x{info.height}, "
            f"{_num(info.fps) if info.fps else '?'} fps, {_seconds(info.duration_s)} declared ({info.demuxer}); "
            f"{size} bytes")
        digest = _Sha256InBackground(video)
        tap = link_dir / "frames.txt"
        cmd = ffmpeg_command(ffmpeg, source_arg, staging, info, settings, tap)
        started = time.perf_counter()
        decode_errors, returncode, errors, max_rss = _run_ffmpeg(cmd, video_id, info, log)
        timestamps = _read_tap(tap, settings)
        wall_s = time.perf_counter() - started
        _check(timestamps, returncode, errors, info, settings)
        written = sorted(p.name for p in staging.iterdir())
        expected = [f"{i:06d}.jpg" for i in range(len(timestamps))]
        if written != expected:
            raise ExtractionError(f"internal error: FFmpeg wrote {len(written)} files for {len(timestamps)} frames")
        width, height = jpeg_size(staging / expected[0])
        records = [FrameRecord(i, name, ts) for i, (name, ts) in enumerate(zip(expected, timestamps, strict=True))]
        if decode_errors:
            log(f"video {video_id}: warning: FFmpeg reported {decode_errors} decode error(s) and concealed them")
        manifest = {
            "schema": SCHEMA,
            "video_id": video_id,
            "source": {**(source or {}), "sha256": digest.result(), "size": size},
            "video": {"duration_s": info.duration_s if info.duration_s is not None else _span(timestamps, settings),
                      "fps": info.fps, "width": info.width, "height": info.height, "codec": info.codec},
            "extraction": {"fps": float(settings.fps), "jpeg_quality": settings.jpeg_quality,
                           "max_side": settings.max_side, "extractor_version": EXTRACTOR_VERSION},
            "frame_count": len(records), "width": width, "height": height,
            "frames": [{"index": r.index, "file": r.file, "timestamp": r.timestamp} for r in records],
        }
        for name in expected:
            os.replace(staging / name, out_dir / name)
        tmp = out_dir / ".frames.json.tmp"
        tmp.write_text(_manifest_json(manifest))
        os.replace(tmp, out_dir / "frames.json")
        duration = manifest["video"]["duration_s"]
        log(f"video {video_id}: done: {len(records)} frames ({width}x{height}) in {wall_s:.2f} s wall, "
            f"{len(records) / wall_s:.1f} frames/s, {duration / wall_s:.1f}x real time")
        return Extraction(manifest, records, wall_s, decode_errors, max_rss)
    except BaseException:
        _remove_previous_results(out_dir)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(link_dir, ignore_errors=True)


def _run_ffmpeg(cmd: list[str], video_id: str, info: VideoProbe, log: Callable[[str], None],
                ) -> tuple[int, int, list[str], int | None]:
    """Run FFmpeg, logging its ``-progress`` reports (every ~0.5 s on its stdout) at most every PROGRESS_EVERY_S.

    Returns the number of error lines in its log, its exit status, the first error lines and the peak RSS of the
    child processes so far (FFmpeg's).
    """
    last_report = time.perf_counter()
    total = _seconds(info.duration_s)
    report: dict[str, str] = {}
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stderr = _LogReader(proc.stderr)
    try:
        for raw in proc.stdout:
            item = _PROGRESS.match(raw.decode("ascii", "replace").strip())
            if not item:
                continue
            report[item.group(1)] = item.group(2)
            now = time.perf_counter()
            if item.group(1) == "progress" and now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                t = int(report["out_time_us"]) / 1e6 if report.get("out_time_us", "N/A").isdigit() else 0.0
                log(f"video {video_id}: {report.get('frame', '0')} frames extracted, t={t:.1f} s / {total}")
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.join()
    if returncode != 0 and stderr.rejected:
        raise ExtractionError(f"internal error: FFmpeg rejected its command ({stderr.rejected})")
    return stderr.error_count, returncode, stderr.errors, _children_max_rss_kb()


def _read_tap(tap: Path, settings: Settings) -> list[float]:
    """The timestamp of each frame the tap saw, in output order."""
    rate = output_rate(settings)
    timestamps: list[float] = []
    if not tap.exists():
        return timestamps
    for line in tap.read_text(encoding="ascii", errors="replace").splitlines():
        frame = _FRAME.match(line)
        if not frame:
            continue  # the tap's "frame_extractor=1" lines
        if int(frame.group(1)) != len(timestamps):
            raise ExtractionError(f"internal error: FFmpeg tapped frame {frame.group(1)} as frame {len(timestamps)}")
        timestamps.append(_timestamp(int(frame.group(2)), frame.group(3), rate))
    return timestamps


class _LogReader:
    """FFmpeg's log, read in a thread (so neither pipe fills): the error lines, the first 20 of them kept."""

    def __init__(self, pipe) -> None:
        self.errors: list[str] = []
        self.rejected: str | None = None
        self.error_count = 0
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True, name="ffmpeg-log")
        self._thread.start()

    def _run(self, pipe) -> None:
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip()
            if self.rejected is None and _REJECTED.search(line):
                self.rejected = _strip_context(line)
            if _DECODE_ERROR.search(line):
                self.error_count += 1
                if len(self.errors) < 20:
                    self.errors.append(_strip_context(line))

    def join(self) -> None:
        self._thread.join()


def _timestamp(pts: int, pts_time: str, rate: Fraction) -> float:
    """``pts / rate`` exactly (the fps filter's time base is ``1 / rate``), checked against FFmpeg's own rendering."""
    exact = round(float(pts / rate), 6)
    try:
        printed = float(pts_time)
    except ValueError:
        return exact
    # pts_time is printed with 6 significant digits; a larger gap means FFmpeg used another time base.
    return exact if abs(printed - exact) <= max(1e-3, abs(exact) * 1e-5) else round(printed, 6)


def jpeg_size(path: Path) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment."""
    with open(path, "rb") as f:
        data = f.read(64 * 1024)
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            break
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    raise ExtractionError("internal error: FFmpeg wrote a JPEG without a frame header")


def _check(timestamps: list[float], returncode: int, errors: list[str], info: VideoProbe, settings: Settings) -> None:
    detail = f" ({errors[0]})" if errors else ""
    if not timestamps:
        raise ExtractionError(f"zero frames decoded{detail}")
    if returncode != 0:
        raise ExtractionError(f"truncated or corrupt video: FFmpeg failed with exit status {returncode}{detail}")
    declared = info.duration_s
    if declared:
        covered = _span(timestamps, settings)
        if covered + 1 / settings.fps < MIN_COVERAGE * declared:
            raise ExtractionError(
                f"truncated or corrupt video: decoding stopped at {covered:.1f} s of the {declared:.1f} s the "
                f"container declares ({covered / declared:.0%}){detail}")


def _span(timestamps: list[float], settings: Settings) -> float:
    """How far into the video the frames reach: the last one's timestamp plus one output interval."""
    return round(timestamps[-1] + 1 / settings.fps, 6)


def _manifest_json(manifest: dict) -> str:
    """Indented, one line per frame (an hour at 5 fps is 18,000 frames)."""
    head = json.dumps({k: v for k, v in manifest.items() if k != "frames"}, indent=1)
    frames = ",\n".join("  " + json.dumps(f) for f in manifest["frames"])
    return f'{head[:-2]},\n "frames": [\n{frames}\n ]\n}}\n'


def _remove_previous_results(out_dir: Path) -> None:
    for path in out_dir.iterdir():
        if path.is_file() and (re.fullmatch(r"\d{6}\.jpg", path.name) or path.name in ("frames.json",
                                                                                         ".frames.json.tmp")):
            path.unlink()


def _children_max_rss_kb() -> int | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


class _Sha256InBackground:
    """The input's SHA-256, read while FFmpeg decodes (hashlib releases the GIL on large blocks)."""

    def __init__(self, path: Path) -> None:
        self._digest = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True, name="sha256")
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                while block := f.read(4 << 20):
                    self._digest.update(block)
        except BaseException as exc:
            self._error = exc

    def result(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "? s"


def _num(value: float) -> str:
    return f"{value:g}"

