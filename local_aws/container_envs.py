"""Each container in an environment of its own: ``<folder>/.venv`` from the folder's ``requirements.txt``, on the
Python of its Dockerfile's base image, the way ``docker build`` would install them.

    .venv/bin/python -m local_aws.container_envs [FOLDER ...] [--check]

FOLDER defaults to every ``containers/<name>/`` and ``tests/containers/<name>/`` with a Dockerfile. The local
SageMaker runs a job's or endpoint's ``python`` (its Dockerfile's ``ENTRYPOINT``) with ``<folder>/.venv/bin/python``
and nothing from the Airflow environment (``local_aws.sagemaker.containers``), so a package a container's
``requirements.txt`` misses, or pins for another Python, fails here as the image would fail on AWS.

- The Python: the version in the base image's tag (``FROM python:3.11-slim@sha256:...`` -> 3.11), found as
  ``python3.11`` on PATH or in pyenv's versions; a missing one is named with how to install it.
- The packages: exactly ``pip install -r requirements.txt`` in a new venv (pip's cap on torch applies, so torch
  comes from this machine's disk). A requirements file with no package gives an environment of the standard library.
- What the Dockerfile installs with apt that the code runs: ``ffmpeg`` (the frame extractor) is linked into the
  environment's ``bin/`` from the dev venv's static FFmpeg build (``imageio-ffmpeg``), where the image has Debian's.
- Rebuilt only when the requirements, the Dockerfile's Python or this tool's recipe change (a stamp in the venv);
  ``--check`` builds nothing and exits 1 listing the environments that are missing or stale.

Written by hand because no library builds a Dockerfile's Python environment without a container engine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = "1"  # bump when the way an environment is built changes: every stamp goes stale
PIP = "26.3"
_FROM = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)", re.IGNORECASE | re.MULTILINE)
_PYTHON_TAG = re.compile(r"(?:^|/)python:(?P<version>3\.\d+)(?:[.\-@]|$)")


class ContainerEnvError(RuntimeError):
    """An environment that cannot be built (no interpreter, a Dockerfile that is not on a Python image)."""


def folders() -> list[Path]:
    return sorted(p.parent for pattern in ("containers/*/Dockerfile", "tests/containers/*/Dockerfile")
                  for p in REPO.glob(pattern))


def base_image(folder: Path) -> str:
    """The image of the Dockerfile's last stage (what the container runs on)."""
    images = _FROM.findall((folder / "Dockerfile").read_text())
    if not images:
        raise ContainerEnvError(f"{folder}/Dockerfile has no FROM line")
    return images[-1]


def base_python(folder: Path) -> str:
    """The Python version (major.minor) of the Dockerfile's base image, from its tag."""
    image = base_image(folder)
    match = _PYTHON_TAG.search(image)
    if not match:
        raise ContainerEnvError(f"{folder}/Dockerfile: base image {image} is not a python:<3.x> image, so the "
                                f"container's Python version cannot be read from it")
    return match.group("version")


def interpreter(version: str) -> Path:
    """An interpreter of ``version`` (3.11): ``python3.11`` on PATH, else pyenv's newest 3.11.x."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted((pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"),
                                          reverse=True)]
    for candidate in filter(None, candidates):
        found = subprocess.run([candidate, "-c", "import sys; print(sys.executable, *sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)
        parts = found.stdout.split()
        if found.returncode == 0 and len(parts) == 3 and f"{parts[1]}.{parts[2]}" == version:
            return Path(parts[0])
    raise ContainerEnvError(f"no Python {version} here (not on PATH, not in {pyenv_root}/versions): install it "
                            f"(e.g. 'pyenv install {version}') to build the environments of containers on "
                            f"python:{version} images")


def venv_python(folder: Path) -> Path:
    return folder / ".venv" / "bin" / "python"


def _apt_tools(folder: Path) -> list[str]:
    text = (folder / "Dockerfile").read_text().replace("\\\n", " ")
    return ["ffmpeg"] if re.search(r"apt-get\s+install[^\n]*\bffmpeg\b", text) else []


def stamp_text(folder: Path) -> str:
    requirements = folder / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.exists() else []
    body = "\n".join(line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()).encode()
    return (f"recipe {RECIPE}\npython {base_python(folder)}\ntools {' '.join(_apt_tools(folder))}\n"
            f"requirements sha256 {hashlib.sha256(body).hexdigest()}\n")


def _stamp(folder: Path) -> Path:
    return folder / ".venv" / ".container-env"


def up_to_date(folder: Path) -> bool:
    stamp = _stamp(folder)
    return venv_python(folder).exists() and stamp.exists() and stamp.read_text() == stamp_text(folder)


def _ffmpeg() -> str:
    import imageio_ffmpeg  # the dev venv's static FFmpeg build (requirements-dev.txt)

    return imageio_ffmpeg.get_ffmpeg_exe()


def build(folder: Path, log=print) -> bool:
    """Builds ``folder``'s environment when missing or stale; True when it (re)built it."""
    folder = folder.resolve()
    if up_to_date(folder):
        return False
    version = base_python(folder)
    python = interpreter(version)
    venv = folder / ".venv"
    started = time.monotonic()
    log(f"[{folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder}] building {venv.name} on Python "
        f"{version} ({python}) from requirements.txt", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(folder)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    requirements = folder / "requirements.txt"
    if requirements.exists() and any(line.split("#")[0].strip() for line in requirements.read_text().splitlines()):
        subprocess.run([*pip, f"pip=={PIP}"], check=True)
        subprocess.run([*pip, "-r", str(requirements)], check=True)
    for tool in _apt_tools(folder):
        (venv / "bin" / tool).symlink_to(_ffmpeg())
    _stamp(folder).write_text(stamp_text(folder))
    log(f"    done in {time.monotonic() - started:.0f} s", flush=True)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="container folders (default: all)")
    parser.add_argument("--check", action="store_true", help="build nothing; exit 1 if one is missing or stale")
    parser.add_argument("--jobs", type=int, default=2, help="environments built at once (default 2)")
    args = parser.parse_args()
    targets = [f.resolve() for f in args.folders] or folders()
    if args.check:
        stale = [str(f) for f in targets if not up_to_date(f)]
        for name in stale:
            print(f"missing or stale: {name}/.venv (run 'make setup')")
        return 1 if stale else 0
    # two at a time: unpacking torch's wheels is most of the time, and it runs on one core per environment
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {folder: pool.submit(build, folder) for folder in targets}
    try:
        built = [folder for folder, future in futures.items() if future.result()]
    except (ContainerEnvError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"container environments: {len(targets)} ({len(built)} built, {len(targets) - len(built)} up to date)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
