"""Entrypoint of the drift monitor, a SageMaker Model Monitor bring-your-own container.

    python /opt/program/entrypoint.py [monitor]      a monitoring execution: Model Monitor's environment variables
                                                     (see contract.py and README.md); no argument is how Model
                                                     Monitor starts it
    python /opt/program/entrypoint.py baseline ...   the baseline documents from a dataset version (see baseline.py)

Exit 0: the documents are written, and ``$SM_OUTPUT_DIR/message`` (the job's ExitMessage) starts with
``Completed:`` or ``CompletedWithViolations:``; an empty or undecodable window is a result, not a failure. Exit 1
with the reason in ``$SM_OUTPUT_DIR/failure`` (default ``/opt/ml/output/failure``, SageMaker's FailureReason): a
missing or malformed baseline, unreadable configuration, no baseline frames, an internal error. Exit 2: bad
arguments (an unknown command, a bad baseline option), also with a failure file.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback


def fail(reason: str, code: int = 1) -> int:
    from contract import write_status_file

    print(f"FAILED: {reason}", file=sys.stderr, flush=True)
    write_status_file("failure", reason)
    return code


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "monitor"
    if command not in ("monitor", "baseline"):
        return fail(f"bad arguments: expected no argument, 'monitor' or 'baseline', got {' '.join(argv)}", code=2)
    signal.signal(signal.SIGTERM, _terminate)
    import baseline
    import contract
    import drift
    import monitor

    try:
        if command == "baseline":
            summary = baseline.run(argv[1:])
        else:
            if len(argv) > 1:
                return fail(f"bad arguments: 'monitor' takes no arguments, got {' '.join(argv[1:])}", code=2)
            summary = monitor.run(contract.config_from_env(os.environ)).message
    except baseline._ArgumentError as exc:
        return fail(f"bad arguments: {exc}", code=2)
    except (contract.ConfigError, drift.BaselineError, baseline.BaselineInputError) as exc:
        return fail(str(exc))
    except Exception as exc:
        print("".join(traceback.format_exception(exc)), file=sys.stderr)
        return fail(f"internal error: {type(exc).__name__}: {exc}"[:1000])
    contract.write_status_file("message", summary)
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
