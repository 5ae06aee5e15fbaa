"""The tests of container code run in their container's environment, not in this process: the trainer's and the
inference container's code imports torch, which the Airflow environment (``.venv``, this process) does not have, and
the drift monitor's and the frame extractor's run on their image's Python (3.11) with their own packages and ffmpeg.
Each folder of ``tests/container_code/`` runs as a subprocess with its container's test environment
(``tests/container_code/run.py``: the container env's packages and the tests' own; the repository's own collection
skips the folder, ``collect_ignore`` in ``tests/conftest.py``), and its outcome is this test's: a failure shows the
end of the inner run's output. The inner run also has to have run its tests: at least as many as the folder holds
today, none skipped (a module that fails to import, a folder moved or a test that skips itself would otherwise pass
unseen)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from local_aws import container_envs
from tests.container_code import run

# The tests each folder holds today (parametrized cases counted one by one): the fewest an inner run may pass
TESTS = {"trainer": 17, "inference": 133, "drift_monitor": 65, "frame_extractor": 31}


def test_every_container_whose_code_has_tests_is_run_here():
    assert sorted(TESTS) == [f.name for f in container_envs.tests_env_folders()]


@pytest.mark.timeout(2400)  # the trainer's tests train small models: minutes on 2 shared cores
@pytest.mark.parametrize("name", sorted(TESTS))
def test_container_code_passes_in_its_containers_environment(name, tmp_path):
    report = tmp_path / "junit.xml"
    proc = subprocess.run(run.command(name, "-q", f"--junitxml={report}"), cwd=run.REPO, env=run.environment(),
                          capture_output=True, text=True, timeout=2300, check=False)
    output = (proc.stdout + proc.stderr)[-8000:]
    assert proc.returncode == 0, f"tests/container_code/{name} failed in its test environment:\n{output}"
    suite = ET.parse(report).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, (counts, output)
    assert counts["tests"] >= TESTS[name], (counts, output)


def test_a_model_folder_is_built_in_the_trainers_environment_by_a_process_without_torch():
    """``shared_model_dir()`` where torch cannot be imported (the Airflow environment on MWAA's Python: the integration
    and end-to-end tests, bench/serve.py): the frames are made here, the folder is built by the trainer's code in
    ``containers/trainer/.venv``, with the files its export writes and the ONNX check it records."""
    code = ("import sys; sys.modules['torch'] = None\n"  # no torch here, whatever this environment holds
            "from tests import inference_model as m\n"
            "assert not m.has_trainer_packages()\n"
            "print(m.shared_model_dir())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=run.REPO, env=run.environment(), capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    folder = Path(proc.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.pt", "model.ts", "model_config.json"]
    config = json.loads((folder / "model_config.json").read_text())
    assert config["image_size"] == 128 and [c["name"] for c in config["classes"]] == ["scalpel", "retractor", "tumor"]
    assert config["export"]["format"] == "torchscript" and config["export"]["file"] == "model.ts"
    onnx = config["export"]["onnx"]
    assert onnx["file"] == "model.onnx" and len(onnx["checks"]) == 3
    assert all(c["within_tolerance"] for c in onnx["checks"])
