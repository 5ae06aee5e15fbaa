"""labeling with the Label Studio backend, end to end: frames -> project -> pre-annotations by the champion ->
annotations by the simulated workforce through Label Studio's API -> review round -> a dataset version in the same
format as the Ground Truth path's. A real Label Studio server (its own venv) on the test stack."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from local_aws.label_studio import server
from local_aws.label_studio.workforce import LabelStudioWorkforce
from local_aws.settings import REPO_ROOT
from tests.conftest import run_dag_test, wait_for
from tests.e2e.frames import upload_and_extract

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
ANNOTATIONS, MODELS = "surgical-annotations", "surgical-models"
GROUP = "ls-e2e-detector"  # its own model group: the champion registered here is seen by no other test
# The test's champion is an untrained network (every box scores about 0.25): suggest its boxes all the same.
SETTINGS = {"labeling_backend": "label_studio", "model_package_group": GROUP, "pre_annotation_min_score": 0.0}


@pytest.fixture(scope="module")
def airflow_home(harness_airflow_home):
    """This module's DAG runs use a model group of their own, which the MWAA execution role does not grant: they sign
    as the harness (tests/conftest.py harness_airflow_home)."""
    return harness_airflow_home


@pytest.fixture(scope="module")
def label_studio(local_stack):
    server.up(local_stack)
    yield local_stack
    server.down(local_stack)


@pytest.fixture(scope="module")
def env(airflow_home, label_studio) -> dict[str, str]:
    return {**airflow_home, **server.airflow_environment(label_studio),
            "AIRFLOW_VAR_PIPELINE_CONFIG": json.dumps(SETTINGS)}


class Annotators(LabelStudioWorkforce):
    """The simulated workforce in a thread, working every new task while the DAG waits for it; ``on`` can be
    cleared so that a person (the browser test) gets to a task first."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.on, self.stop = threading.Event(), threading.Event()
        self.on.set()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            if self.on.is_set():
                try:
                    self.work()
                except Exception as exc:  # a round that failed is tried again the next second
                    print(f"workforce round failed: {exc!r}")


@pytest.fixture(scope="module")
def workforce(label_studio):
    annotators = Annotators(label_studio)
    annotators.thread.start()
    yield annotators
    annotators.stop.set()
    annotators.thread.join(timeout=30)


def _run(env: dict, video_ids: list[str]) -> tuple[dict, str]:
    return run_dag_test(env, REPO_ROOT / "dags", "labeling", conf={"video_ids": video_ids}, timeout=900)


def _dataset(s3) -> tuple[str, list[dict]]:
    version = json.loads(s3.get_object(Bucket=ANNOTATIONS, Key="datasets/latest.json")["Body"].read())["version"]
    lines = s3.get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/manifest.jsonl")["Body"].read().decode()
    return version, [json.loads(line) for line in lines.splitlines()]


def _no_token(label_studio, env: dict, output: str) -> None:
    token = server.token(label_studio)
    assert token not in output
    assert token not in (label_studio.log_dir / "label-studio.log").read_text(errors="ignore")
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        values = [str(row[0]) for row in db.execute("SELECT value FROM xcom")]
    assert values and not any(token in value for value in values)
    assert not any(token in p.read_text(errors="ignore") for p in REPO_ROOT.rglob("*.py"))


def test_label_studio_round_to_a_dataset_version(aws, env, label_studio, workforce, airflow_home, local_stack,
                                                 tmp_path_factory):
    from pycocotools.coco import COCO

    videos = upload_and_extract(aws, airflow_home, local_stack, tmp_path_factory.mktemp("ls-videos"), "ls",
                                seeds=(300, 301))
    states, output = _run(env, videos)
    assert states["publish"] == "success", output[-8000:]
    assert states["label_studio.first_pass.round.export"] == "success"
    assert states["ground_truth.first_pass"] == "skipped"
    assert states["label_studio.first_pass.predict"] == "skipped"  # no champion in its model group yet
    s3 = aws("s3")
    version, frames = _dataset(s3)
    labeled = [f for f in frames if f["source-ref"].split("/")[-2] in videos]
    assert len(labeled) == 20  # 2 videos x 2 s x 5 fps
    assert sum(len(f["boxes"]) for f in labeled) > 0
    projects = {p["title"]: p for p in workforce.projects()}
    rounds = [p for t, p in projects.items() if not t.endswith("-review")]
    assert any(p["task_number"] == 20 and p["total_annotations_number"] == 60 for p in rounds)  # 3 per frame
    if states.get("label_studio.review.export") == "success":
        reviewed = [p for t, p in projects.items() if t.endswith("-review")]
        assert reviewed and reviewed[0]["total_annotations_number"] == 3 * reviewed[0]["task_number"] > 0
        card = json.loads(s3.get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/card.json")["Body"].read())
        assert card["label_sources"]["reviewed"] > 0
    path = tmp_path_factory.mktemp("ls-coco") / "train.json"
    path.write_bytes(s3.get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/coco_train.json")["Body"].read())
    assert COCO(str(path)).getImgIds()
    _no_token(label_studio, env, output)
    # A re-run finds the frames labeled: nothing new, no second project.
    states, output = _run(env, videos)
    assert states["select_frames"] == "skipped", output[-4000:]
    assert len(workforce.projects()) == len(projects)


def test_pre_annotations_by_the_champion(aws, env, label_studio, workforce, airflow_home, local_stack,
                                         tmp_path_factory):
    from tests.inference_model import model_archive, shared_model_dir

    s3, sagemaker = aws("s3"), aws("sagemaker")
    s3.put_object(Bucket=MODELS, Key="ls-e2e/model.tar.gz", Body=model_archive(shared_model_dir()))
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    sagemaker.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/"
                                                         "surgical-mlops/inference:latest",
                                                "ModelDataUrl": f"s3://{MODELS}/ls-e2e/model.tar.gz"}],
                                "SupportedContentTypes": ["image/jpeg"],
                                "SupportedResponseMIMETypes": ["application/json"]})
    videos = upload_and_extract(aws, airflow_home, local_stack, tmp_path_factory.mktemp("ls-videos-2"), "lspre",
                                seeds=(310,))
    states, output = _run(env, videos)
    assert states["label_studio.first_pass.predict"] == "success", output[-8000:]
    assert states["publish"] == "success", output[-8000:]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ANNOTATIONS, Prefix="labeling/")["Contents"]
            if o["Key"].endswith("predictions.jsonl")]
    assert len(keys) == 1
    rows = [json.loads(line) for line in s3.get_object(Bucket=ANNOTATIONS, Key=keys[0])["Body"].read().splitlines()]
    assert len(rows) == 10
    with_boxes = {r["frame"] for r in rows if r["boxes"]}
    assert with_boxes
    project = next(p for p in workforce.projects() if p["task_number"] == 10 and not p["title"].endswith("-review"))
    tasks = list(workforce.tasks(project["id"]))
    suggested = {t["meta"]["line"]["source-ref"].split("/", 3)[3] for t in tasks if t.get("total_predictions")}
    assert suggested == with_boxes
    _no_token(label_studio, env, output)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _wait_for_project(workforce, tasks: int, run: Future, timeout: float = 600) -> dict:
    """The new project of ``run`` (the labeling DAG run, given at most its own 900 s; the project comes before its
    round); a run that ended without making it fails the test with its output."""
    known = {p["id"] for p in workforce.projects()}

    def created() -> dict | None:
        project = next((p for p in workforce.projects() if p["id"] not in known and p["task_number"] == tasks), None)
        if project is None and run.done():
            states, output = run.result()
            raise AssertionError(f"the labeling run ended without a project of {tasks} tasks: {states}\n"
                                 f"{output[-6000:]}")
        return project

    return wait_for(created, timeout, interval=2, message=f"no new Label Studio project with {tasks} tasks")


def _settled_box(locator, timeout: float = 60) -> dict:
    """The element's bounding box once it is drawn and has kept its place and size over three looks half a second
    apart (the canvas is laid out again when the frame's image has loaded)."""
    seen: list[dict | None] = []

    def settled() -> dict | None:
        seen.append(locator.bounding_box())
        last = seen[-3:]
        return last[0] if len(last) == 3 and last[0] and last[0]["width"] > 0 and last.count(last[0]) == 3 else None

    return wait_for(settled, timeout, interval=0.5,
                    message=lambda: f"the canvas never settled (last boxes {seen[-3:]})")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: 'make setup' installs Debian's (apt-get, as root)")
def test_a_person_corrects_a_suggested_box_in_the_browser(aws, env, label_studio, workforce, airflow_home,
                                                          local_stack, tmp_path_factory):
    """Headless Chromium: log in, open a task of the round, see the champion's suggested box, move it and change
    its class, submit; the simulated workforce does the other frames; the edit is in the published dataset."""
    from playwright.sync_api import sync_playwright

    videos = upload_and_extract(aws, airflow_home, local_stack, tmp_path_factory.mktemp("ls-videos-ui"), "lsui",
                                seeds=(320,))
    # One annotation per frame and no review: the person's boxes are the frame's label as they drew them.
    settings = {**SETTINGS, "labeling_workers": 1, "review_confidence_threshold": 0.0, "pre_annotation_max_boxes": 1}
    workforce.on.clear()
    known = {p["id"] for p in workforce.projects()}
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(_run, {**env, "AIRFLOW_VAR_PIPELINE_CONFIG": json.dumps(settings)}, videos)
        project = _wait_for_project(workforce, tasks=10, run=run)
        assert project["id"] not in known
        tasks = list(workforce.tasks(project["id"]))
        item = next(t for t in tasks if t.get("total_predictions"))
        [prediction] = workforce._call("GET", "/api/predictions/", params={"task": item["id"]})
        [suggestion] = prediction["result"]  # pre_annotation_max_boxes 1
        suggested = suggestion["value"]
        width, height = item["meta"]["width"], item["meta"]["height"]
        old_label = suggested["rectanglelabels"][0]
        new_label = next(c for c in ("scalpel", "retractor", "tumor") if c != old_label)
        left, top = suggested["x"] * width / 100, suggested["y"] * height / 100
        w, h = suggested["width"] * width / 100, suggested["height"] * height / 100
        dx = 40 if left + w + 40 <= width else -min(40, left)
        credentials = server.credentials(label_studio)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{server.url(label_studio)}/user/login/")
            page.fill("input[name=email]", credentials["LABEL_STUDIO_USERNAME"])
            page.fill("input[name=password]", credentials["LABEL_STUDIO_PASSWORD"])
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{server.url(label_studio)}/projects/{project['id']}/data?task={item['id']}")
            page.get_by_text("Submit", exact=True).wait_for(timeout=60000)
            page.get_by_text(old_label, exact=True).last.wait_for(timeout=30000)  # the suggested region is listed
            canvas = _settled_box(page.locator("canvas").first)
            sx, sy = canvas["width"] / width, canvas["height"] / height
            cx, cy = canvas["x"] + (left + w / 2) * sx, canvas["y"] + (top + h / 2) * sy
            page.mouse.click(cx, cy)
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + dx * sx, cy, steps=10)
            page.mouse.up()
            page.get_by_text(new_label, exact=True).first.click()
            page.screenshot(path=str(tmp_path_factory.mktemp("ls-ui") / "edited.png"))
            page.get_by_text("Submit", exact=True).click()
            # the browser stays open until Label Studio has stored the submitted annotation
            annotations = wait_for(lambda: workforce._call("GET", f"/api/tasks/{item['id']}")["annotations"], 60,
                                   message="the submitted annotation never reached Label Studio")
            browser.close()
        [annotation] = annotations
        [region] = annotation["result"]
        assert region["value"]["rectanglelabels"] == [new_label]
        workforce.on.set()  # the annotators take the other frames
        states, output = run.result(timeout=900)
    assert states["publish"] == "success", output[-8000:]
    moved_left = region["value"]["x"] * width / 100
    assert abs(moved_left - (left + dx)) <= 4
    _, frames = _dataset(aws("s3"))
    frame = next(f for f in frames if f["source-ref"] == item["meta"]["line"]["source-ref"])
    assert [b["label"] for b in frame["boxes"]] == [new_label]
    assert abs(frame["boxes"][0]["x"] - moved_left) <= 1.5
