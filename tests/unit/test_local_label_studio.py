"""The local Label Studio's credentials and Airflow connection (its server: tests/e2e/test_labeling_label_studio)."""

from __future__ import annotations

import json
import stat

from local_aws.label_studio import server
from local_aws.settings import load_settings


def test_credentials_are_generated_once_private_and_outside_the_repo(tmp_path):
    settings = load_settings(home=tmp_path / "stack", base_port=47000)
    assert server.airflow_environment(settings) == {}  # no Label Studio here yet: no connection
    first = server.credentials(settings)
    path = tmp_path / "stack" / "label-studio" / "credentials.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server.credentials(settings) == first
    assert len(first["LABEL_STUDIO_USER_TOKEN"]) == 40 and len(first["LABEL_STUDIO_PASSWORD"]) >= 20
    other = server.credentials(load_settings(home=tmp_path / "other", base_port=47000))
    assert other["LABEL_STUDIO_USER_TOKEN"] != first["LABEL_STUDIO_USER_TOKEN"]


def test_the_airflow_connection_carries_the_token_as_its_password(tmp_path):
    from airflow.models.connection import Connection

    settings = load_settings(home=tmp_path / "stack", base_port=47000)
    server.credentials(settings)
    value = server.airflow_environment(settings)["AIRFLOW_CONN_LABEL_STUDIO_DEFAULT"]
    connection = Connection.from_json(value, conn_id="label_studio_default")
    assert connection.password == server.token(settings)
    assert (connection.host, connection.port, connection.schema) == ("127.0.0.1", 47003, "http")
    assert not json.loads(value).get("extra")  # HttpHook would send extra keys as HTTP headers


def test_the_simulated_annotators_leave_unreadable_frames_once_and_say_so_once(tmp_path, caplog):
    """An earlier demo's project whose frames are gone: its tasks are left for a person, one warning per project,
    and the next pass neither reads them again nor warns again."""
    import logging

    from local_aws.label_studio import workforce as module

    crew = object.__new__(module.LabelStudioWorkforce)
    crew.settings, crew.s3, crew.left_for_person = load_settings(home=tmp_path / "stack", base_port=47000), None, set()
    tasks = [{"id": i, "annotations": [], "meta": {}} for i in (3, 4, 5, 9)]
    crew.tasks = lambda project_id: iter(tasks)
    asked = []
    crew._answers = lambda item, *args: asked.append(item["id"])  # None: unreadable
    project = {"id": 1, "title": "old-round", "maximum_annotations": 3,
               "parsed_label_config": {"label": {"labels": ["scalpel"]}}}
    with caplog.at_level(logging.INFO, logger=module.log.name):
        assert crew._work_project(project) == 0
        assert crew._work_project(project) == 0
    assert asked == [3, 4, 5, 9] and crew.left_for_person == {3, 4, 5, 9}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["project 1 (old-round): 4 task(s) with an unreadable frame left for a person (tasks 3-5, 9)"]
