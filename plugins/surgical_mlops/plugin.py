"""The project's Airflow plugin: registers the "Model report" operator link (``airflow plugins`` lists it).

Airflow 3 serves an operator's links from the XCom the worker stored when the task ended, so the UI needs no import
of the link class; ``operators`` stays empty: the DAG attaches the link to its tasks (``links.with_model_report``).
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from surgical_mlops.links import ModelReportLink


class SurgicalMlopsPlugin(AirflowPlugin):
    name = "surgical_mlops"
    operator_extra_links: ClassVar[list] = [ModelReportLink()]
