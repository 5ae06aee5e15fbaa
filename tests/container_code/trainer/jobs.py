"""The trainer container's jobs as the local SageMaker starts them (the Dockerfile's ENTRYPOINT with its COPY paths
mapped back to the folder, the runner's environment and config files, the container's own environment): for the
trainer's tests here and the end-to-end tests, which run in the Airflow environment. Nothing here imports the
trainer's packages: the jobs run in ``containers/trainer/.venv`` whatever process starts them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from local_aws.sagemaker.containers import parse_dockerfile
from local_aws.sagemaker.runners import base_environment, training_environment

FOLDER = Path(__file__).resolve().parents[3] / "containers" / "trainer"


def run_job(root: Path, channels: dict[str, Path], hyperparameters: dict, name: str = "train-test",
            checkpoints: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """The trainer as the local SageMaker's runner starts it; returns (process, job root)."""
    job_root = root / name
    for sub in ("model", "output/data", "input/config", "input/data"):
        (job_root / sub).mkdir(parents=True, exist_ok=True)
    for channel, source in channels.items():
        (job_root / "input" / "data" / channel).symlink_to(source, target_is_directory=True)
    checkpoint_dir = checkpoints or job_root / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    strings = {k: str(v) for k, v in hyperparameters.items()}
    (job_root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(strings))
    job = {"TrainingJobArn": f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
           "HyperParameters": strings}
    image = parse_dockerfile("surgical-mlops/trainer", FOLDER)
    env = base_environment(job_root, image, {})
    env.update(training_environment(job_root, name, job, list(channels), checkpoint_dir))
    proc = subprocess.run(image.command(None, ["train"]), cwd=image.workdir, env=env, capture_output=True, text=True,
                          timeout=300)
    return proc, job_root


def failure(job_root: Path) -> str:
    path = job_root / "output" / "failure"
    return path.read_text().strip() if path.exists() else ""


def run_processing(root: Path, command: str, args: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    """``entrypoint.py evaluate|predict`` as the local SageMaker runs a Processing job of the trainer image."""
    image = parse_dockerfile("surgical-mlops/trainer", FOLDER)
    env = base_environment(root, image, {})
    proc = subprocess.run(image.command(None, [command, *args]), cwd=image.workdir, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, root
