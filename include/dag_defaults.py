"""What every pipeline DAG shares: owner, retries, tags, and the config macro for templates."""

from __future__ import annotations

from datetime import timedelta

import pendulum

from include.config import load_config

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
DEFAULT_ARGS = {
    "owner": "surgical-mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
}
# Templates read the config at run time (Airflow Variable overrides included): {{ pipeline().raw_bucket }}
MACROS = {"pipeline": load_config}
