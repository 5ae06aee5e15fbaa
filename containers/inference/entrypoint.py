"""SageMaker inference entrypoint: ``python /opt/program/entrypoint.py serve``.

SageMaker starts an inference image with the argument ``serve``; this replaces itself with gunicorn serving
``wsgi:app`` (see ``gunicorn_conf.py``), so the host's SIGTERM reaches the server directly. Exit 2 for another command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["serve"]:
        print(f"bad arguments: expected 'serve', got {' '.join(argv) or 'nothing'}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "gunicorn", "--config", str(HERE / "gunicorn_conf.py"), "--chdir", str(HERE),
               "wsgi:app"]
    os.execv(sys.executable, command)  # noqa: S606 - a fixed argv, no shell
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
