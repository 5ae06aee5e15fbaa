"""Each container in an environment of its own: ``<folder>/.venv`` from the folder's ``requirements.txt``, on the
Python of its Dockerfile's base image, the way ``docker build`` would install them.

    .venv/bin/python -m local_aws.container_envs [FOLDER ...] [--check]

FOLDER defaults to every ``containers/<name>/`` and ``tests/containers/<name>/`` with a Dockerfile, and every
``tests/container_code/<name>/`` (a test environment, below; naming one builds its container's first). The local
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

Next to each container whose code has tests (``tests/container_code/<name>/``), a test environment,
``tests/container_code/<name>/.venv``: the tests of container code import that code and what it imports (torch, the
trainer's modules), which the Airflow environment cannot (no torch on its Python), so they run with this interpreter
instead (``tests/container_code/run.py``). It holds none of the container's packages: a venv on the same Python (an
interpreter of the container env's version, without pip) whose ``_container_env.pth`` adds the container env's
site-packages with ``site.addsitedir``, so torch, numpy, ... are the very files the container runs (and the
container's pip installs into it), and the tools its Dockerfile installs with apt (``ffmpeg``) linked into its ``bin/``
to the container env's, as the container's code looks for them there. Into it goes only what the tests need beyond
the container: the pinned closure
``tests/container_code/constraints.txt`` (the resolution of ``requirements.txt`` there on the same Python) less
every distribution the container env already has, with ``--no-deps``, so pip cannot add, up- or downgrade or shadow a
container package whatever the tests' pins say; the build then fails if a top-level name is in both site-packages or
``pip check`` finds a dependency missing, and notes a version mismatch only where the container's own package is the
one found (botocore wants python-dateutil<3; the trainer's env resolves 4.0.0: the tests run with the container's).
Rebuilt when the container env is rebuilt or either file changes; built after the container envs, two at a time.

Written by hand because no library builds a Dockerfile's Python environment without a container engine.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTAINER_CODE = REPO / "tests" / "container_code"  # <name>/: the tests of containers/<name>/'s code, its test env
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


def tests_env_folders() -> list[Path]:
    """``tests/container_code/<name>/`` for each ``containers/<name>/`` (with a Dockerfile) whose code is tested."""
    return sorted(p for p in CONTAINER_CODE.glob("*/") if (REPO / "containers" / p.name / "Dockerfile").is_file())


def container_of(test_folder: Path) -> Path:
    return REPO / "containers" / test_folder.name


def site_packages(venv: Path, version: str) -> Path:
    return venv / "lib" / f"python{version}" / "site-packages"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tests_env_pins() -> dict[str, str]:
    """The tests' pinned closure: normalized name -> ``name==version`` line of ``constraints.txt`` (which has every
    line of ``requirements.txt`` as it is)."""
    pins = {}
    for line in (CONTAINER_CODE / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep or not version.strip():
                raise ContainerEnvError(f"{CONTAINER_CODE}/constraints.txt: {line!r} is not pinned (name==version)")
            pins[_normalized(name.strip())] = line
    for line in (CONTAINER_CODE / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and pins.get(_normalized(line.partition("==")[0].strip())) != line:
            raise ContainerEnvError(f"{CONTAINER_CODE}/requirements.txt: {line!r} is not in constraints.txt as it "
                                    f"is (regenerate constraints.txt)")
    return pins


def provided(container: Path) -> set[str]:
    """The (normalized) names of the distributions installed in the container's environment."""
    site = site_packages(container / ".venv", base_python(container))
    return {_normalized(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(site)])}


def tests_env_stamp_text(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "constraints.txt"):
        digest.update((CONTAINER_CODE / name).read_bytes())
    container_stamp = _stamp(container_of(folder))
    container = container_stamp.read_text() if container_stamp.exists() else ""
    return (f"recipe {RECIPE}\ncontainer sha256 {hashlib.sha256(container.encode()).hexdigest()}\n"
            f"tests sha256 {digest.hexdigest()}\n")


def tests_env_up_to_date(folder: Path) -> bool:
    """The test env exists, its container env is up to date, and neither changed since the test env was built."""
    stamp = _stamp(folder)
    return (up_to_date(container_of(folder)) and venv_python(folder).exists() and stamp.exists()
            and stamp.read_text() == tests_env_stamp_text(folder))


def _top_level(site: Path) -> set[str]:
    """What a site-packages puts on sys.path: its packages and modules (not metadata, .pth files or caches)."""
    return {p.name.removesuffix(".py") for p in site.iterdir() if p.name != "__pycache__"
            and not p.name.endswith((".dist-info", ".egg-info", ".pth"))} if site.exists() else set()


def build_tests_env(folder: Path, log=print) -> bool:
    """Builds the test environment of ``folder`` (``tests/container_code/<name>``) when missing or stale; True when
    it (re)built it. Its container's environment must be up to date first (``build``)."""
    folder = folder.resolve()
    container = container_of(folder)
    if not up_to_date(container):
        raise ContainerEnvError(f"{container}/.venv is missing or stale: build it before {folder}/.venv")
    if tests_env_up_to_date(folder):
        return False
    version = base_python(container)
    venv, started = folder / ".venv", time.monotonic()
    log(f"[{folder.relative_to(REPO)}] building {venv.name}: {container.relative_to(REPO)}/.venv's packages and the "
        f"tests' own on Python {version}", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([str(interpreter(version)), "-m", "venv", "--without-pip", str(venv)], check=True)
    own, theirs = site_packages(venv, version), site_packages(container / ".venv", version)
    (own / "_container_env.pth").write_text(f"import site; site.addsitedir({str(theirs)!r})\n")
    for tool in _apt_tools(container):  # the image's ffmpeg: the container env's, beside this interpreter too
        (venv / "bin" / tool).symlink_to(container / ".venv" / "bin" / tool)
    have = provided(container)
    wanted = [line for name, line in tests_env_pins().items() if name not in have]
    python = str(venv_python(folder))
    if wanted:
        listed = venv / "test-requirements.txt"  # what went in: the closure less the container's distributions
        listed.write_text("".join(f"{line}\n" for line in wanted))
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "-r", str(listed)], check=True)
    shadowed = _top_level(own) & _top_level(theirs)
    if shadowed:
        raise ContainerEnvError(f"{venv}: {sorted(shadowed)} would hide the container's own (take them out of "
                                f"{CONTAINER_CODE.relative_to(REPO)}/constraints.txt)")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    notes, problems = [], []
    for line in filter(None, map(str.strip, check.stdout.splitlines())):
        mismatch = re.match(r"^\S+ \S+ has requirement .*, but you have (?P<name>\S+) \S+\.$", line)
        if mismatch and _normalized(mismatch.group("name")) in have:
            notes.append(line)
        elif line != "No broken requirements found.":
            problems.append(line)
    if problems or (check.returncode and not notes):
        raise ContainerEnvError(f"{venv}: pip check: {'; '.join(problems) or check.stderr.strip()[-2000:]} "
                                f"(complete {CONTAINER_CODE.relative_to(REPO)}/constraints.txt)")
    for line in notes:
        log(f"    note: {line} (the container's own: what its code runs with)", flush=True)
    _stamp(folder).write_text(tests_env_stamp_text(folder))
    log(f"    done in {time.monotonic() - started:.0f} s ({len(wanted)} packages of the tests' own)", flush=True)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        help="container folders or tests/container_code/<name> folders (default: all)")
    parser.add_argument("--check", action="store_true", help="build nothing; exit 1 if one is missing or stale")
    parser.add_argument("--jobs", type=int, default=2, help="environments built at once (default 2)")
    args = parser.parse_args()
    chosen = [f.resolve() for f in args.folders]
    tests = [f for f in chosen if f.parent == CONTAINER_CODE] if chosen else tests_env_folders()
    targets = [f for f in chosen if f.parent != CONTAINER_CODE] if chosen else folders()
    targets += [container_of(f) for f in tests if container_of(f) not in targets]  # a test env needs its container's
    if args.check:
        stale = [f"{f}/.venv" for f in targets if not up_to_date(f)]
        stale += [f"{f}/.venv" for f in tests if not tests_env_up_to_date(f)]
        for name in stale:
            print(f"missing or stale: {name} (run 'make setup')")
        return 1 if stale else 0
    try:
        # two at a time: unpacking torch's wheels is most of the time, and it runs on one core per environment
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {folder: pool.submit(build, folder) for folder in targets}
        built = [folder for folder, future in futures.items() if future.result()]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # then each test env on its built container env
            futures = {folder: pool.submit(build_tests_env, folder) for folder in tests}
        built_tests = [folder for folder, future in futures.items() if future.result()]
    except (ContainerEnvError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"container environments: {len(targets)} ({len(built)} built, {len(targets) - len(built)} up to date); "
          f"test environments: {len(tests)} ({len(built_tests)} built, {len(tests) - len(built_tests)} up to date)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
