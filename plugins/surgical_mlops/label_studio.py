"""Label Studio as a labeling backend: a hook on its REST API, and the three steps of a labeling round.

One round takes the same ``CreateLabelingJob`` request as ``surgical_mlops.ground_truth.SageMakerLabelingOperator``
and ends with the same XCom (``{"LabelingJob": <DescribeLabelingJob-shaped dict>}``), so the rest of the labeling DAG
does not know which backend labeled the frames:

1. :class:`LabelStudioRoundOperator`: the round's project (title = job name: a retry or re-run finds it), the S3
   storage that lets Label Studio presign the frames (the data stays in S3), and one task per manifest line,
   pre-annotated with the champion's predictions when the DAG has them;
2. :class:`LabelStudioRoundSensor` (``reschedule`` mode: no worker slot held while people label): done when every
   task has as many annotations as the round asks;
3. :class:`LabelStudioExportOperator`: the annotations, consolidated and written as Ground Truth's output manifest.

The hook is the HTTP provider's ``HttpHook`` with Label Studio's token header: the ``label-studio-sdk`` pins numpy,
PyJWT and OpenCV below what Airflow 3's constraints (and MWAA's) require, so it cannot share the workers' venv. The
connection (``label_studio_default``): host/port/schema of the server, the API token as the password (legacy
``Token`` auth). Airflow masks connection passwords in task logs; the token is never put in an XCom.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import BaseOperator, BaseSensorOperator

from include.labeling import label_studio as ls
from include.labeling.ground_truth import parse_label_categories

IMPORT_CHUNK = 500


class LabelStudioError(RuntimeError):
    """Label Studio answered a request with an error."""


class LabelStudioHook(HttpHook):
    """Label Studio's REST API (``/api/...``) with ``Authorization: Token <connection password>``."""

    conn_name_attr = "label_studio_conn_id"
    default_conn_name = "label_studio_default"
    conn_type = "http"
    hook_name = "Label Studio"

    def __init__(self, label_studio_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(method="GET", http_conn_id=label_studio_conn_id, **kwargs)

    @property
    def ui_url(self) -> str:
        """The server's address, from the connection (host, schema, port) without opening a session."""
        return self.url_from_endpoint("").rstrip("/")

    def call(self, method: str, endpoint: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        self.method = method
        token = self.get_connection(self.http_conn_id).password
        if not token:
            raise LabelStudioError(f"connection {self.http_conn_id} has no API token (its password)")
        headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        response = self.run(endpoint, data=json.dumps(body) if body is not None else dict(params or {}),
                            headers=headers, extra_options={"check_response": False, "timeout": 120})
        if response.status_code >= 400:
            raise LabelStudioError(f"Label Studio {method} {endpoint}: HTTP {response.status_code}: "
                                   f"{response.text[:500]}")
        return response.json() if response.content else None

    def project(self, title: str) -> dict[str, Any] | None:
        """The project with this exact title, or None."""
        page = self.call("GET", "/api/projects", params={"title": title, "page_size": 100})
        found = [p for p in page.get("results", []) if p.get("title") == title]
        return found[0] if found else None

    def project_by_id(self, project_id: int) -> dict[str, Any]:
        return self.call("GET", f"/api/projects/{int(project_id)}")

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of a project (paged)."""
        return ls.paged_tasks(lambda params: self.call("GET", "/api/tasks", params=params), project_id)

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """Every task with its annotations and ``meta`` (Label Studio's JSON export)."""
        return self.call("GET", f"/api/projects/{int(project_id)}/export",
                         params={"exportType": "JSON", "download_all_tasks": "true"})


def _s3_storage(s3: Any, bucket: str, project_id: int) -> dict[str, Any]:
    """The S3 source storage Label Studio presigns the frames through. On AWS Label Studio uses its own IAM role;
    against another endpoint (the local stack) it gets that endpoint and the client's credentials (the worker's
    role session: key, secret and session token)."""
    storage: dict[str, Any] = {"project": project_id, "title": f"frames ({bucket})", "bucket": bucket,
                               "presign": True, "presign_ttl": 60, "use_blob_urls": True,
                               "regex_filter": r".*\.jpg", "recursive_scan": True}
    endpoint = s3.meta.endpoint_url
    if not endpoint.endswith("amazonaws.com"):
        credentials = s3._request_signer._credentials.get_frozen_credentials()  # botocore's resolved keys
        storage.update(s3_endpoint=endpoint, region_name=s3.meta.region_name,
                       aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key)
        if credentials.token:
            storage["aws_session_token"] = credentials.token
    return storage


class LabelStudioRoundOperator(BaseOperator):
    """
    Start a labeling round in Label Studio from a ``CreateLabelingJob`` request (idempotent by the job name).

    :param config: the CreateLabelingJob request (templated)
    :param predictions: the champion's predictions for these frames (templated): ``{"uri": S3 prefix of the
        trainer's predict output, "frames_prefix": S3 prefix its frame paths are relative to}``; None or no ``uri``:
        no pre-annotation
    """

    template_fields: Sequence[str] = ("config", "predictions")

    def __init__(self, *, config: dict, predictions: dict | None = None,
                 label_studio_conn_id: str = LabelStudioHook.default_conn_name, aws_conn_id: str = "aws_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config, self.predictions = config, predictions
        self.label_studio_conn_id, self.aws_conn_id = label_studio_conn_id, aws_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from include.s3 import split_uri

        round_ = ls.Round.from_request(self.config)
        hook, s3 = LabelStudioHook(self.label_studio_conn_id), S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

        def read(uri: str) -> str:
            bucket, key = split_uri(uri)
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()

        classes = parse_label_categories(read(round_.label_config_uri), round_.label_config_uri)
        records = [json.loads(line) for line in read(round_.manifest_uri).splitlines() if line.strip()]
        project = hook.project(round_.name)
        if project is None:
            project = hook.call("POST", "/api/projects", {
                "title": round_.name, "label_config": ls.label_config(classes, round_.review),
                "maximum_annotations": round_.workers, "show_skip_button": False,
                "description": f"{'Review' if round_.review else 'First pass'} of {len(records)} frame(s); "
                               f"{round_.workers} annotation(s) per frame"})
            self.log.info("Created Label Studio project %s for round %s", project["id"], round_.name)
        else:
            self.log.info("Label Studio project %s exists for round %s: not creating it again", project["id"],
                          round_.name)
        project_id = project["id"]
        buckets = sorted({split_uri(r["source-ref"])[0] for r in records})
        connected = {s["bucket"] for s in hook.call("GET", "/api/storages/s3", params={"project": project_id})}
        for bucket in buckets:
            if bucket not in connected:
                hook.call("POST", "/api/storages/s3", _s3_storage(s3, bucket, project_id))
        # A task's data.image comes back resolved (a presigning URL): its frame is the manifest line in its meta.
        present = {((t.get("meta") or {}).get("line") or {}).get("source-ref") for t in hook.tasks(project_id)}
        missing = [r for r in records if r["source-ref"] not in present]
        predicted = self._predictions(read, classes) if missing and not round_.review else {}
        sizes = _frame_sizes(read, [r["source-ref"] for r in missing])
        tasks = [ls.task(r, *sizes[r["source-ref"]], classes, round_, predicted.get(r["source-ref"], ()))
                 for r in missing]
        for start in range(0, len(tasks), IMPORT_CHUNK):
            hook.call("POST", f"/api/projects/{project_id}/import", tasks[start:start + IMPORT_CHUNK])
        suggested = sum(1 for t in tasks if t.get("predictions"))
        self.log.info("Round %s: %d task(s) imported (%d already there), %d with suggested boxes; %d annotation(s) "
                      "per task. Label at %s/projects/%s", round_.name, len(tasks), len(records) - len(missing),
                      suggested, round_.workers, hook.ui_url, project_id)
        context["ti"].xcom_push(key="project_id", value=project_id)  # what the sensor and the export read
        return {"project_id": project_id, "project_url": f"{hook.ui_url}/projects/{project_id}",
                "tasks": len(records), "imported": len(tasks), "pre_annotated": suggested}

    def _predictions(self, read: Any, classes: Sequence[str]) -> dict[str, list]:
        if not (self.predictions or {}).get("uri"):
            self.log.info("No pre-annotations (no champion model yet): annotators draw every box")
            return {}
        prefix = self.predictions["uri"].rstrip("/")
        found = ls.predictions_by_frame(read(f"{prefix}/predictions.jsonl").splitlines(),
                                        self.predictions["frames_prefix"], classes)
        self.log.info("Pre-annotations: %d frame(s) predicted by %s", len(found),
                      self.predictions.get("model", "the champion"))
        return found


def _frame_sizes(read: Any, uris: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Each frame's size from its video's ``frames.json`` (the frame extractor's description: one read per video)."""
    sizes: dict[str, tuple[int, int]] = {}
    described: dict[str, dict] = {}
    for uri in uris:
        folder = uri.rsplit("/", 1)[0]
        if folder not in described:
            described[folder] = json.loads(read(f"{folder}/frames.json"))
        sizes[uri] = (int(described[folder]["width"]), int(described[folder]["height"]))
    return sizes


class LabelStudioRoundSensor(BaseSensorOperator):
    """
    Wait until every task of a round's project has the annotations it needs (its ``maximum_annotations``).

    :param project_id: the project (templated)
    """

    template_fields: Sequence[str] = ("project_id",)

    def __init__(self, *, project_id: Any, label_studio_conn_id: str = LabelStudioHook.default_conn_name,
                 **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.project_id, self.label_studio_conn_id = project_id, label_studio_conn_id

    def poke(self, context: Any) -> bool:
        hook = LabelStudioHook(self.label_studio_conn_id)
        project = hook.project_by_id(int(self.project_id))
        needed = int(project.get("maximum_annotations") or 1)
        # Counted here rather than read from the project's finished_task_number: Label Studio counts a task finished
        # only with that many *distinct* annotators, and the local simulated workforce submits as one API user.
        counts = [int(t.get("total_annotations") or 0) for t in hook.tasks(int(self.project_id))]
        done = sum(1 for n in counts if n >= needed)
        self.log.info("Label Studio project %s: %d/%d task(s) done (%d annotation(s) each), %d started, "
                      "%d annotation(s)", self.project_id, done, len(counts), needed, sum(1 for n in counts if n),
                      sum(counts))
        return bool(counts) and done == len(counts)


class LabelStudioExportOperator(BaseOperator):
    """
    Export a finished round and write it as Ground Truth's output manifest; returns ``{"LabelingJob": ...}`` as
    :class:`~surgical_mlops.ground_truth.SageMakerLabelingOperator` does.

    :param config: the round's CreateLabelingJob request (templated)
    :param project_id: its Label Studio project (templated)
    """

    template_fields: Sequence[str] = ("config", "project_id")

    def __init__(self, *, config: dict, project_id: Any,
                 label_studio_conn_id: str = LabelStudioHook.default_conn_name, aws_conn_id: str = "aws_default",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config, self.project_id = config, project_id
        self.label_studio_conn_id, self.aws_conn_id = label_studio_conn_id, aws_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from include.s3 import split_uri

        round_ = ls.Round.from_request(self.config)
        hook, s3 = LabelStudioHook(self.label_studio_conn_id), S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        bucket, key = split_uri(round_.label_config_uri)
        classes = parse_label_categories(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(),
                                         round_.label_config_uri)
        exported = hook.export(int(self.project_id))
        manifest, counters, errors = ls.output_manifest(exported, classes, round_)
        for error in errors:
            self.log.error("%s: left out of the round's output", error)
        if counters["TotalLabeled"] == 0:
            raise LabelStudioError(f"round {round_.name}: no task of project {self.project_id} could be used "
                                   f"({len(errors)} error(s), {counters['Unlabeled']} unlabeled)")
        out_bucket, out_key = split_uri(round_.output_manifest_uri)
        s3.put_object(Bucket=out_bucket, Key=out_key, Body=manifest.encode())
        s3.put_object(Bucket=out_bucket, Key=out_key.rsplit("/manifests/", 1)[0] + "/annotations/label-studio.json",
                      Body=json.dumps(exported).encode())
        self.log.info("Round %s exported: %s -> %s", round_.name, counters, round_.output_manifest_uri)
        return {"LabelingJob": round_.describe(counters, f"{hook.ui_url}/projects/{self.project_id}")}
