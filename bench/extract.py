"""Frame extraction benchmark: the frame_extractor container's code path against a naive OpenCV loop, same run.

    .venv/bin/python bench/extract.py [--repeats 2] [--seconds 60] [--threads 0]

For a 60 s 1280x720 and a 60 s 1920x1080 synthetic surgical video (25 fps H.264, generated once and cached under
``.local/bench/``), each at 5 fps, JPEG quality 90, max side 1280:

- extractor: ``extract_video`` from ``containers/frame_extractor/extract.py`` (what the container runs: probe, one
  FFmpeg process, SHA-256 of the input, frames.json);
- naive: ``cv2.VideoCapture`` reading every frame, keeping for each output time n/5 the frame whose timestamp is
  the nearest (the frames the extractor keeps), resized to the max side and written with ``cv2.imwrite``.

A third figure, FFmpeg decoding the video to nowhere with the extractor's threads, is the floor any extractor that
decodes every frame pays (inter-frame codecs need them all): it says how much of a target is reachable at all.

Each measurement runs in a fresh child process (so peak RSS is its own), alternating the two, best of
``--repeats``. Prints wall time, output and decoded frames per second, real-time factor, the speed-up and peak RSS,
checks that both produce the same frame count and timestamps and the same pictures (PSNR between the two JPEGs of
sampled frames), and PASS/FAIL against the targets: extractor >= 3x faster than naive, >= 20x real time. Only a
correctness mismatch makes the exit status non-zero; a slow machine just prints FAIL.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXTRACTOR = REPO / "containers" / "frame_extractor" / "extract.py"
CACHE = REPO / ".local" / "bench"
SIZES = ((1280, 720), (1920, 1080))
SOURCE_FPS = 25
SEED = 11
TARGET_SPEEDUP = 3.0
TARGET_REALTIME = 20.0


def load_extractor():
    spec = importlib.util.spec_from_file_location("frame_extractor_extract", EXTRACTOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def bench_video(width: int, height: int, seconds: float) -> Path:
    """The cached synthetic video for these parameters (generated on first use)."""
    path = CACHE / f"synthetic-{seconds:g}s-{width}x{height}-{SOURCE_FPS}fps-seed{SEED}.mp4"
    if not path.exists():
        sys.path.insert(0, str(REPO))
        from include.synthetic import generate_video

        print(f"generating {path.relative_to(REPO)} (once; cached) ...", flush=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as truth:
            generate_video(path, seconds=seconds, width=width, height=height, fps=SOURCE_FPS, seed=SEED,
                           truth_dir=truth)
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return path


# -- children: one measurement each ------------------------------------------------------------------------------------
def run_extractor(video: Path, out: Path, fps: float, quality: int, max_side: int, threads: int) -> dict:
    extract = load_extractor()
    settings = extract.Settings(fps=fps, jpeg_quality=quality, max_side=max_side, threads=threads)
    started = time.perf_counter()
    result = extract.extract_video(video, out, video_id="bench", settings=settings, log=lambda _line: None,
                                   source={"bucket": "bench", "key": video.name, "version_id": None})
    wall = time.perf_counter() - started
    manifest = result.manifest
    return {"wall_s": wall, "timestamps": [f["timestamp"] for f in manifest["frames"]],
            "size": [manifest["width"], manifest["height"]], "duration_s": manifest["video"]["duration_s"],
            "decoded": round(manifest["video"]["duration_s"] * manifest["video"]["fps"]),
            "rss_self_kb": _peak_rss_kb(), "rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def run_naive(video: Path, out: Path, fps: float, quality: int, max_side: int) -> dict:
    import cv2

    started = time.perf_counter()
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise SystemExit(f"OpenCV cannot open {video}")
    half_frame = 0.5 / cap.get(cv2.CAP_PROP_FPS)
    timestamps: list[float] = []
    best = None  # (tick, distance, frame) of the frame nearest to the current output time so far
    decoded = 0
    last_ts = 0.0

    def write(tick: int, frame) -> None:
        h, w = frame.shape[:2]
        if max(w, h) > max_side:
            scale = max_side / max(w, h)
            size = (max(2, 2 * round(w * scale / 2)), max(2, 2 * round(h * scale / 2)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / f"{len(timestamps):06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        timestamps.append(round(tick / fps, 6))

    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded += 1
        last_ts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        tick = round(last_ts * fps)  # the output time this frame is nearest to
        distance = abs(last_ts - tick / fps)
        if best is not None and tick != best[0]:
            write(best[0], best[2])
            best = None
        if best is None or distance <= best[1] + 1e-9:  # on a tie the later frame, as the extractor does
            best = (tick, distance, frame)
    # The last output time counts while it is within half a frame of the last frame (the extractor's rule too).
    if best is not None and best[0] / fps < last_ts + half_frame - 1e-9:
        write(best[0], best[2])
    cap.release()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "timestamps": timestamps, "decoded": decoded, "duration_s": decoded * 2 * half_frame,
            "rss_self_kb": _peak_rss_kb(), "rss_children_kb": 0}


def run_decode_only(video: Path, threads: int) -> dict:
    extract = load_extractor()
    cmd = [extract.ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads",
           str(threads or extract.decoder_threads()), "-i", str(video), "-map", "0:v:0", "-f", "null", "-"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def _peak_rss_kb() -> int:
    """This process's own peak RSS (``VmHWM``: ``ru_maxrss`` would keep the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- parent ------------------------------------------------------------------------------------------------------------
def measure(kind: str, video: Path, out: Path, args: argparse.Namespace) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--child", kind, "--video", str(video), "--out", str(out), "--fps", str(args.fps),
           "--quality", str(args.quality), "--max-side", str(args.max_side), "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def psnr(a_path: Path, b_path: Path) -> float:
    import cv2
    import numpy as np

    a, b = cv2.imread(str(a_path)).astype(np.float64), cv2.imread(str(b_path)).astype(np.float64)
    if a.shape != b.shape:
        return 0.0
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def compare_pictures(ext_dir: Path, naive_dir: Path, count: int) -> tuple[float, float]:
    """Min PSNR of the same index across the two outputs, and the best PSNR of a frame against its neighbours."""
    same, neighbour = [], []
    for i in range(1, count - 1, max(1, count // 12)):
        name = f"{i:06d}.jpg"
        same.append(psnr(ext_dir / name, naive_dir / name))
        neighbour.append(max(psnr(ext_dir / name, naive_dir / f"{i + d:06d}.jpg") for d in (-1, 1)))
    return min(same), max(neighbour)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--max-side", type=int, default=1280)
    parser.add_argument("--threads", type=int, default=0, help="FFmpeg decoder threads (0: the extractor's default)")
    parser.add_argument("--child", choices=("extractor", "naive", "decode"), help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "extractor":
        print(json.dumps(run_extractor(args.video, args.out, args.fps, args.quality, args.max_side, args.threads)))
        return 0
    if args.child == "naive":
        print(json.dumps(run_naive(args.video, args.out, args.fps, args.quality, args.max_side)))
        return 0
    if args.child == "decode":
        print(json.dumps(run_decode_only(args.video, args.threads)))
        return 0

    extract = load_extractor()
    print(f"frame extraction benchmark: {os.cpu_count()} CPU(s), FFmpeg {_ffmpeg_version(extract.ffmpeg_binary())}, "
          f"{args.threads or extract.decoder_threads()} decoder threads, {args.fps:g} fps, "
          f"JPEG quality {args.quality}, max side {args.max_side}, best of {args.repeats}")
    ok = True
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=CACHE if CACHE.exists() else None))
    try:
        for width, height in SIZES:
            video = bench_video(width, height, args.seconds)
            runs: dict[str, list[dict]] = {"extractor": [], "naive": [], "decode": []}
            for _ in range(args.repeats):
                for kind in ("extractor", "naive", "decode"):
                    runs[kind].append(measure(kind, video, work / kind, args))
            floor = min(r["wall_s"] for r in runs["decode"])
            ext = min(runs["extractor"], key=lambda r: r["wall_s"])
            naive = min(runs["naive"], key=lambda r: r["wall_s"])
            duration = ext["duration_s"]
            label = f"{width}x{height} {duration:g} s"
            print(f"\n== {label} ({video.name}, {video.stat().st_size / 1e6:.1f} MB)")
            for kind, r in (("extractor", ext), ("naive", naive)):
                n = len(r["timestamps"])
                rss = f"{r['rss_self_kb'] / 1024:.0f} MB python"
                if kind == "extractor":
                    rss += f" + {r['rss_children_kb'] / 1024:.0f} MB ffmpeg"
                walls = ", ".join(f"{x['wall_s']:.2f}" for x in runs[kind])
                print(f"  {kind:9s}: {r['wall_s']:6.2f} s wall (runs: {walls}) | {n / r['wall_s']:6.1f} output "
                      f"frames/s | {r['decoded'] / r['wall_s']:6.1f} decoded frames/s | "
                      f"{duration / r['wall_s']:5.1f}x real time | peak RSS {rss}")
            print(f"  decode only (FFmpeg to null, the floor): {floor:6.2f} s wall | "
                  f"{ext['decoded'] / floor:6.1f} decoded frames/s | {duration / floor:5.1f}x real time at most; "
                  f"the extractor spends {ext['wall_s'] / floor:.2f}x the floor, the naive loop "
                  f"{naive['wall_s'] / floor:.2f}x")
            speedup = naive["wall_s"] / ext["wall_s"]
            realtime = duration / ext["wall_s"]
            same_count = len(ext["timestamps"]) == len(naive["timestamps"])
            same_times = same_count and all(abs(a - b) < 1e-6 for a, b in zip(ext["timestamps"], naive["timestamps"],
                                                                                strict=True))
            min_psnr, neighbour_psnr = compare_pictures(work / "extractor", work / "naive", len(ext["timestamps"]))
            same_pictures = min_psnr > neighbour_psnr
            print(f"  frames: extractor {len(ext['timestamps'])} ({ext['size'][0]}x{ext['size'][1]}), naive "
                  f"{len(naive['timestamps'])}; same count: {_yes(same_count)}; same timestamps: {_yes(same_times)}; "
                  f"same pictures: {_yes(same_pictures)} (PSNR same index >= {min_psnr:.1f} dB, "
                  f"neighbour frame <= {neighbour_psnr:.1f} dB)")
            print(f"  speed-up extractor vs naive: {speedup:.2f}x (target >= {TARGET_SPEEDUP:g}x: "
                  f"{_pass(speedup >= TARGET_SPEEDUP)}); real time: {realtime:.1f}x (target >= {TARGET_REALTIME:g}x: "
                  f"{_pass(realtime >= TARGET_REALTIME)})")
            ok = ok and same_count and same_times and same_pictures
            rows.append((label, ext["wall_s"], naive["wall_s"], speedup, realtime, floor))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nsummary:")
    for label, ext_s, naive_s, speedup, realtime, floor in rows:
        print(f"  {label:18s} extractor {ext_s:5.2f} s | naive {naive_s:5.2f} s | decode floor {floor:5.2f} s | "
              f"{speedup:4.2f}x faster "
              f"[{_pass(speedup >= TARGET_SPEEDUP)}] | {realtime:5.1f}x real time "
              f"[{_pass(realtime >= TARGET_REALTIME)}]")
    if not ok:
        print("MISMATCH: the extractor and the naive loop disagree on which frames a video gives")
    return 0 if ok else 1


def _ffmpeg_version(ffmpeg: str) -> str:
    out = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, check=False).stdout
    return out.split()[2] if out.startswith("ffmpeg version") else "?"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _pass(flag: bool) -> str:
    return "PASS" if flag else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
