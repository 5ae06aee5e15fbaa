"""The Airflow environment is MWAA 3.3.1's: Python 3.12, MWAA's pins (overrides only with a listed reason), no model
code. constraints.txt is generated from mwaa/3.3.1/airflow_constraints.txt (tools/mwaa_constraints.py)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tools import mwaa_constraints, mwaa_install
from tools.mwaa_constraints import differences, generate, normalize, pins

REPO = Path(__file__).resolve().parents[2]


def _requirement_pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            found[normalize(match.group(1))] = match.group(3)
    return found


def test_constraints_txt_is_mwaas_file_with_the_listed_overrides_only():
    text = (REPO / "constraints.txt").read_text()
    assert differences(text) == []
    assert text == generate(), "constraints.txt is not what 'python -m tools.mwaa_constraints' writes"
    assert len(pins(text)) > 650  # MWAA's whole set, not a subset
    for name, (version, reason) in mwaa_constraints.OVERRIDES.items():
        assert version and len(reason) > 20, f"{name}: an override needs its reason"


def test_an_unlisted_pin_that_differs_from_mwaas_is_named():
    mwaa = mwaa_constraints.MWAA_CONSTRAINTS.read_text()
    changed = generate().replace("\nboto3==1.43.56\n", "\nboto3==1.44.8\n")
    assert differences(changed) == ["boto3==1.44.8: MWAA pins 1.43.56, and OVERRIDES gives no reason for it"]
    missing = generate().replace("\nboto3==1.43.56\n", "\n")
    assert differences(missing) == ["boto3: MWAA pins 1.43.56, constraints.txt leaves it out"]
    added = generate() + "torch==2.14.1\n"
    assert differences(added) == ["torch==2.14.1: not in MWAA's constraints (dev tools go in constraints-dev.txt)"]
    assert differences(generate(mwaa), mwaa) == []


def test_an_override_with_its_reason_is_allowed_and_printed_in_the_header(monkeypatch):
    monkeypatch.setattr(mwaa_constraints, "OVERRIDES", {"boto3": ("1.43.57", "a fix the DAGs need, for the test")})
    text = generate()
    assert "\nboto3==1.43.57\n" in text and "#   boto3==1.43.57: a fix the DAGs need, for the test" in text
    assert differences(text) == []
    monkeypatch.setattr(mwaa_constraints, "OVERRIDES", {"not-in-mwaa": ("1", "no such package in MWAA's file")})
    with pytest.raises(ValueError, match="not-in-mwaa"):
        generate()


def test_dev_constraints_never_repin_what_mwaa_pins():
    mwaa = pins((REPO / "constraints.txt").read_text())
    dev = pins((REPO / "constraints-dev.txt").read_text())
    assert dev and sorted(set(dev) & set(mwaa)) == []


def test_requirements_pin_mwaas_versions():
    mwaa = pins((REPO / "constraints.txt").read_text())
    dev = pins((REPO / "constraints-dev.txt").read_text())
    bundle = _requirement_pins(REPO / "requirements.txt")
    assert bundle["apache-airflow-providers-amazon"] == mwaa["apache-airflow-providers-amazon"]  # MWAA's provider
    assert bundle["apache-airflow"] == mwaa_install.airflow_version()
    for name, version in bundle.items():
        assert name == "apache-airflow" or mwaa[name] == version, name
    for name, version in _requirement_pins(REPO / "requirements-dev.txt").items():
        assert mwaa.get(name, dev.get(name)) == version, name
    # No model, image or video package in what MWAA installs.
    assert not {"torch", "torchvision", "opencv-python-headless", "onnxruntime", "sagemaker"} & set(bundle)


def test_mwaas_required_packages_come_from_its_script():
    required = mwaa_install.required_packages()
    assert "apache-airflow[celery,statsd]==3.3.1" in required
    assert "apache-airflow-providers-amazon[aiobotocore]" in required and "psycopg2" in required
    steps = mwaa_install.commands("python", Path("requirements.txt"), [Path("requirements-dev.txt")])
    assert steps[0][-len(required) - 2:-len(required)] == ["-c", str(mwaa_install.AIRFLOW_CONSTRAINTS)]
    assert steps[1][-3 - len(required):] == [str(mwaa_install.ESSENTIAL_CONSTRAINTS), *required, "-r",
                                             "requirements.txt"][-3 - len(required):]
    assert steps[2][-4:] == ["--constraint", str(mwaa_install.ESSENTIAL_CONSTRAINTS), "-r", "requirements-dev.txt"]


def test_this_environment_is_mwaas_python_and_pins():
    """The .venv the tests and the local Airflow run in: MWAA's Python, every MWAA-pinned package at MWAA's version,
    no torch, torchvision or ONNX Runtime (containers run in their own environments)."""
    assert sys.version_info[:2] == mwaa_install.PYTHON
    mwaa = pins((REPO / "constraints.txt").read_text())
    installed = {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    assert {n: (v, mwaa[n]) for n, v in installed.items() if n in mwaa and mwaa[n] != v} == {}
    assert installed["apache-airflow-providers-amazon"] == mwaa["apache-airflow-providers-amazon"]
    for module in ("torch", "torchvision", "onnxruntime", "sagemaker"):
        assert importlib.util.find_spec(module) is None, module
