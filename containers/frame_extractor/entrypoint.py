"""SageMaker Processing entrypoint of the frame extractor: arguments, the input folder, failure and message files.

    python /opt/program/entrypoint.py --input /opt/ml/processing/input/video --output /opt/ml/processing/output/frames
        --video-id ID --source-bucket B --source-key K --source-version V [--fps 5] [--jpeg-quality 90]
        [--max-side 1280]

Exit 0 with frames and ``frames.json`` in ``--output`` and a one-line summary in ``$SM_OUTPUT_DIR/message``; exit 1
with the reason in ``$SM_OUTPUT_DIR/failure`` (SageMaker's ``FailureReason``) when the input cannot give frames;
exit 2 for bad arguments. The source key is recorded in ``frames.json`` only, never logged: object keys chosen by
uploaders may hold patient identifiers, so logs name the opaque video id.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from extract import ExtractionError, Settings, extract_video

DEFAULT_OUTPUT_DIR = "/opt/ml/output"


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would exit 2 without a failure file
        raise _ArgumentError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="frame_extractor", description="Extract JPEG frames from one video with FFmpeg.")
    parser.add_argument("--input", required=True, type=Path, help="folder holding exactly one video file")
    parser.add_argument("--output", required=True, type=Path, help="folder for the frames and frames.json")
    parser.add_argument("--video-id", required=True, help="opaque id of the video (what the logs name)")
    parser.add_argument("--source-bucket", required=True)
    parser.add_argument("--source-key", required=True, help="recorded in frames.json only, never logged")
    parser.add_argument("--source-version", required=True, help="S3 version id ('' when unversioned)")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second to keep (default 5)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="1-100 (default 90)")
    parser.add_argument("--max-side", type=int, default=1280, help="longer side of the frames at most (default 1280)")
    return parser.parse_args(argv)


def output_dir() -> Path:
    return Path(os.environ.get("SM_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)


def write_status_file(name: str, text: str) -> None:
    try:
        folder = output_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text.rstrip("\n") + "\n")
    except OSError as exc:  # the reason is still in the log
        print(f"cannot write {name} file: {exc}", file=sys.stderr)


def fail(reason: str, code: int = 1) -> int:
    print(f"FAILED: {reason}", file=sys.stderr)
    write_status_file("failure", reason)
    return code


def find_input(folder: Path) -> Path:
    """The single file in ``folder`` (SageMaker downloads the object there, under its own name)."""
    if not folder.is_dir():
        raise ExtractionError("no input file: the input folder does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise ExtractionError("no input file: the input folder is empty")
    if len(files) > 1:
        raise ExtractionError(f"more than one input file: the input folder holds {len(files)} files, expected one")
    return files[0]


def _terminate(signum: int, _frame: object) -> None:
    # StopProcessingJob / MaxRuntime send SIGTERM: unwind so FFmpeg is killed and partial frames are removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        settings = Settings(fps=args.fps, jpeg_quality=args.jpeg_quality, max_side=args.max_side)
    except (_ArgumentError, ValueError) as exc:
        return fail(f"bad arguments: {exc}", code=2)
    print(f"video {args.video_id}: extracting at {settings.fps:g} fps, JPEG quality {settings.jpeg_quality}, "
          f"max side {settings.max_side}")
    source = {"bucket": args.source_bucket, "key": args.source_key, "version_id": args.source_version or None}
    try:
        video = find_input(args.input)
        result = extract_video(video, args.output, video_id=args.video_id, source=source, settings=settings)
    except ExtractionError as exc:
        return fail(str(exc))
    except Exception as exc:  # a bug or the machine (disk full...): still a reason, without file names
        print("".join(traceback.format_tb(exc.__traceback__)), file=sys.stderr)  # the stack, not the message
        return fail(f"internal error: {type(exc).__name__}: {getattr(exc, 'strerror', None) or 'see the job log'}")
    write_status_file("message", result.summary)
    print(result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
