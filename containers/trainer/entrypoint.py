"""Entrypoint of the trainer: ``python /opt/program/entrypoint.py train`` (SageMaker Training),
``... evaluate [options]`` (a SageMaker Processing job scoring a model on a test split: see ``evaluate.py``) or
``... predict [options]`` (a SageMaker Processing job pre-annotating new frames: see ``predict.py``).

SageMaker starts a training image with the argument ``train``. Exit 0 with the model folder written (see
``train.py``); exit 1 with the reason in ``$SM_OUTPUT_DIR/failure`` (SageMaker's ``FailureReason``): a missing channel,
an empty dataset, a NaN loss, bad hyperparameters; exit 2 for a command other than these three.
SIGTERM (StopTrainingJob, MaxRuntimeInSeconds) ends the job at once: the checkpoint of the last finished epoch is in
``$SM_CHECKPOINT_DIR``, and the next job with the same checkpoint location resumes from it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from pathlib import Path

DEFAULT_OUTPUT_DIR = "/opt/ml/output"
PROCESSING_COMMANDS = ("evaluate", "predict")  # modules of this folder with run(argv)


def output_dir() -> Path:
    return Path(os.environ.get("SM_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)


def fail(reason: str, code: int = 1) -> int:
    print(f"FAILED: {reason}", file=sys.stderr, flush=True)
    try:
        folder = output_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "failure").write_text(reason.rstrip("\n") + "\n")
    except OSError as exc:  # the reason is still in the log
        print(f"cannot write the failure file: {exc}", file=sys.stderr)
    return code


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] not in (["train"], *([c] for c in PROCESSING_COMMANDS)):
        return fail(f"bad arguments: expected 'train', 'evaluate' or 'predict', got {' '.join(argv) or 'nothing'}",
                    code=2)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if argv[0] in PROCESSING_COMMANDS:
            importlib.import_module(argv[0]).run(argv[1:])
        else:
            import train  # torch takes a second to import: after the argument check

            train.run()
    except ImportError as exc:
        return fail(f"internal error: {exc}")
    except Exception as exc:
        if type(exc).__name__ == "TrainingFailure":
            return fail(str(exc))
        print("".join(traceback.format_exception(exc)), file=sys.stderr)
        return fail(f"internal error: {type(exc).__name__}: {exc}"[:1000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
