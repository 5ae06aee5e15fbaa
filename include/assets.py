"""The Assets that gate one stage on the previous one (frames -> dataset -> approved model)."""

from __future__ import annotations

from airflow.sdk import Asset

from include.config import build_config

_CONFIG = build_config()  # the preset of PIPELINE_ENV: Asset URIs are fixed at parse time, no Variable lookup

FRAMES = Asset(name="frames", uri=f"s3://{_CONFIG.frames_bucket}/frames/", group="surgical-mlops")
DATASET = Asset(name="dataset", uri=f"s3://{_CONFIG.annotations_bucket}/datasets/", group="surgical-mlops")
APPROVED_MODEL = Asset(name="approved_model", uri=f"s3://{_CONFIG.models_bucket}/approved/", group="surgical-mlops")
