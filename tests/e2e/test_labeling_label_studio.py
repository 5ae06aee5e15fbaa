"""labeling with the Label Studio backend, end to end: frames -> project -> pre-annotations by the champion ->
annotations by the simulated workforce through Label Studio's API -> review round -> a dataset version in the same
format as the Ground Truth path's. A real Label Studio server (its own venv) on the test stack."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from local_aws.label_studio import server
from local_aws.label_studio.workforce import LabelStudioWorkforce, run
from local_aws.settings import REPO_ROOT
from tests.conftest import run_dag_test
from tests.e2e.frames import upload_and_extract

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
ANNOTATIONS, MODELS = "surgical-annotations", "surgical-models"
GROUP = "ls-e2e-detector"  # its own model group: the champion registered here is seen by no other test
# The test's champion is an untrained network (every box scores about 0.25): suggest its boxes all the same.
SETTINGS = {"labeling_backend": "label_studio", "model_package_group": GROUP, "pre_annotation_min_score": 0.0}


@pytest.fixture(scope="module")
def label_studio(local_stack):
    server.up(local_stack)
    yield local_stack
    server.down(local_stack)


@pytest.fixture(scope="module")
def env(airflow_home, label_studio) -> dict[str, str]:
    return {**airflow_home, **server.airflow_environment(label_studio),
            "AIRFLOW_VAR_PIPELINE_CONFIG": json.dumps(SETTINGS)}


@pytest.fixture(scope="module")
def workforce(label_studio):
    """The simulated annotators, working every new task while the DAG waits for them."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(label_studio, stop, 1.0), daemon=True)
    thread.start()
    yield LabelStudioWorkforce(label_studio)
    stop.set()
    thread.join(timeout=30)


def _run(env: dict, video_ids: list[str]) -> tuple[dict, str]:
    return run_dag_test(env, REPO_ROOT / "dags", "labeling", conf={"video_ids": video_ids}, timeout=900)


def _dataset(s3) -> tuple[str, list[dict]]:
    version = json.loads(s3.get_object(Bucket=ANNOTATIONS, Key="datasets/latest.json")["Body"].read())["version"]
    lines = s3.get_object(Bucket=ANNOTATIONS, Key=f"datasets/{version}/manifest.jsonl")["Body"].read().decode()
    return version, [json.loads(line) for line in lines.splitlines()]


def _no_token(label_studio, env: dict, output: str) -> None:
    token = server.token(label_studio)
    assert token not in output
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
    assert any(p["task_number"] == 20 and p["finished_task_number"] == 20 for p in rounds)
    if states.get("label_studio.review.export") == "success":
        reviewed = [p for t, p in projects.items() if t.endswith("-review")]
        assert reviewed and reviewed[0]["finished_task_number"] == reviewed[0]["task_number"] > 0
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
