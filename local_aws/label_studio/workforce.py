"""The simulated workforce of the local Ground Truth, working Label Studio tasks through Label Studio's REST API.

So that the demo and the tests run unattended, the same annotators (``local_aws.sagemaker.labeling.Workforce``:
seeded per project, each with a skill, drawing boxes from the hidden truth of generated videos with their noise)
open each task that still lacks annotations and submit theirs (``POST /api/tasks/<id>/annotations``), one per
annotator, up to the project's overlap (``maximum_annotations``). Each simulated annotator is a Label Studio user of
its own (``<worker id>@workforce.local``, created on first use, credited as ``completed_by``), so Label Studio's own
counters (a task is finished with that many *distinct* annotators) and its UI show who labeled what. A review
task (``meta.review``) is worked as the label adjustment job is: the annotators start from the suggested boxes. A
task a person already annotated counts: the workforce only adds the annotations still missing. Everything goes over
HTTP as a person's browser would.

``python -m local_aws.label_studio.workforce [--once] [--project ID]``; the stack's Label Studio and S3 from
``LOCAL_AWS_HOME``/``LOCAL_AWS_PORT`` as ``make up`` has them.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Iterable
from typing import Any

import requests

from include.labeling.label_studio import boxes_from_result, finished, paged_tasks, rectangle
from local_aws.label_studio import server
from local_aws.sagemaker.labeling import FrameCatalog, WorkerAnswer, Workforce, existing_boxes, noise_settings
from local_aws.settings import StackSettings, load_settings

log = logging.getLogger("local_aws.label_studio.workforce")


class LabelStudioWorkforce:
    def __init__(self, settings: StackSettings, s3: Any | None = None) -> None:
        from local_aws import bootstrap

        self.settings = settings
        self.s3 = s3 or bootstrap.client(settings, "s3")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {server.token(settings)}"
        self.base = server.url(settings)
        self._users: dict[str, int] = {}
        # Tasks whose frame could not be read (e.g. an earlier demo's project, its bucket gone): left for a person,
        # said once per project, and not read again on every pass.
        self.left_for_person: set[int] = set()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base + path, timeout=60, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def user(self, worker_id: str) -> int:
        """The Label Studio user id of a simulated annotator (created in the organization on first use)."""
        email = f"{worker_id}@workforce.local"
        if not self._users:
            self._users = {u["email"]: u["id"] for u in self._call("GET", "/api/users/")}
        if email not in self._users:
            created = self._call("POST", "/api/users/", json={"email": email, "username": worker_id,
                                                              "first_name": "Simulated", "last_name": worker_id[-6:]})
            self._users[email] = created["id"]
        return self._users[email]

    def projects(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/projects", params={"page_size": 1000}).get("results", [])

    def tasks(self, project_id: int) -> Iterable[dict[str, Any]]:
        return paged_tasks(lambda params: self._call("GET", "/api/tasks", params=params), project_id)

    def work(self, project_ids: Iterable[int] | None = None) -> int:
        """Submit every annotation the projects still need; returns how many were submitted."""
        wanted = set(project_ids) if project_ids is not None else None
        submitted = 0
        for project in self.projects():
            if wanted is not None and project["id"] not in wanted:
                continue
            if (project.get("total_annotations_number") or 0) >= (project.get("task_number") or 0) * int(
                    project.get("maximum_annotations") or 1):
                continue
            submitted += self._work_project(project)
        return submitted

    def _work_project(self, project: dict[str, Any]) -> int:
        config = (project.get("parsed_label_config") or {}).get("label") or {}
        classes = list(config.get("labels") or [])
        overlap = int(project.get("maximum_annotations") or 1)
        workforce = Workforce(project["title"], classes, overlap, noise_settings())
        catalog = FrameCatalog(self.s3, self.settings.truth_dir, classes)
        submitted, unreadable = 0, []
        for item in self.tasks(project["id"]):
            done = [a for a in item.get("annotations") or [] if finished(a)]
            if len(done) >= overlap or item["id"] in self.left_for_person:
                continue
            answers = self._answers(item, workforce, catalog, classes)
            if answers is None:
                unreadable.append(item["id"])
                continue
            width, height = item["meta"]["width"], item["meta"]["height"]  # what the answers were drawn on
            annotators = {a.get("completed_by") for a in done}
            for answer in answers:
                if len(annotators) >= overlap:
                    break
                user = self.user(answer.worker.worker_id)
                if user in annotators:
                    continue
                self._call("POST", f"/api/tasks/{item['id']}/annotations", json={
                    "result": [rectangle(b, classes, width, height) for b in answer.boxes],
                    "lead_time": answer.seconds, "was_cancelled": False, "completed_by": user})
                annotators.add(user)
                submitted += 1
        if unreadable:
            self.left_for_person.update(unreadable)
            log.warning("project %s (%s): %d task(s) with an unreadable frame left for a person (tasks %s)",
                        project["id"], project["title"], len(unreadable), _ranges(unreadable))
        if submitted:
            log.info("project %s (%s): %d annotation(s) submitted", project["id"], project["title"], submitted)
        return submitted

    def _answers(self, item: dict[str, Any], workforce: Workforce, catalog: FrameCatalog,
                 classes: list[str]) -> list[WorkerAnswer] | None:
        meta = item.get("meta") or {}
        try:  # data.image comes back as Label Studio's resolver URL: the frame is the manifest line's source-ref
            frame = catalog.info((meta.get("line") or {}).get("source-ref"))
        except ValueError:
            frame = None
        if frame is None or not meta.get("width"):
            return None  # the caller leaves it for a person
        # The task's size is the frame's (both from the video's frames.json), and so is the truth's scale.
        width, height, truth = frame.width, frame.height, list(frame.truth or [])
        object_id = int(item.get("inner_id") or item["id"])
        if meta.get("review"):
            predictions = item.get("predictions") or []
            suggested = boxes_from_result(predictions[0]["result"], classes, width, height) if predictions else \
                existing_boxes(meta.get("line") or {}, "", classes, width, height)
            if frame.truth is None:
                return [WorkerAnswer(w, tuple(suggested), 3.0) for w in workforce.crew(object_id)]
            return workforce.adjust(object_id, truth, suggested, width, height)
        if frame.truth is None:
            return [WorkerAnswer(w, (), 3.0) for w in workforce.crew(object_id)]
        return workforce.annotate(object_id, truth, width, height)


def _ranges(ids: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    ids, parts = sorted(ids), []
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def run(settings: StackSettings, stop: threading.Event, interval_s: float = 2.0,
        project_ids: Iterable[int] | None = None) -> None:
    """Work new tasks every ``interval_s`` until ``stop`` is set (errors are logged, the loop goes on)."""
    workforce = LabelStudioWorkforce(settings)
    while not stop.is_set():
        try:
            workforce.work(project_ids)
        except (requests.RequestException, ValueError, KeyError) as exc:
            log.warning("workforce round failed: %s", exc)
        stop.wait(interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_aws.label_studio.workforce", description=__doc__)
    parser.add_argument("--once", action="store_true", help="work what is there, then exit")
    parser.add_argument("--project", type=int, action="append", help="only this project (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    if args.once:
        print(f"{LabelStudioWorkforce(settings).work(args.project)} annotation(s) submitted")
        return 0
    run(settings, threading.Event(), project_ids=args.project)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
