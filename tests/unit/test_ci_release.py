"""CI release steps: Lambda zips and parameter files; the MWAA bundle uploaded with its object versions."""

from __future__ import annotations

import json

import boto3
import pytest
import yaml

from local_aws.bootstrap import _load_template
from local_aws.settings import REPO_ROOT
from tools import ci_release
from tools.mwaa_bundle import build


@pytest.fixture
def s3(in_process_aws):
    client = boto3.client("s3", region_name="us-east-1")
    for bucket in ("surgical-mlops-deploy-123456789012-us-east-1", "airflow-surgical-mlops-dev-123456789012"):
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return client


def _parameters(template: str) -> set[str]:
    return set(_load_template(REPO_ROOT / "infra" / template)["Parameters"])


def test_lambda_step_writes_a_parameter_file_per_stack(s3, tmp_path):
    configs = ci_release.release_lambdas(s3, "surgical-mlops-deploy-123456789012-us-east-1", "dev", tmp_path)
    for name, stack_template in [("foundation.json", "foundation.yaml"), ("platform.json", "platform.yaml"),
                                 ("monitoring.json", "monitoring.yaml"), ("api.json", "api.yaml")]:
        written = json.loads((tmp_path / name).read_text())
        assert written == configs[name]
        assert set(written["Parameters"]) <= _parameters(stack_template), name
    keys = [configs["foundation.json"]["Parameters"]["S3ToSqsCodeKey"],
            configs["monitoring.json"]["Parameters"]["TriggerCodeKey"]]
    for key in keys:
        s3.head_object(Bucket="surgical-mlops-deploy-123456789012-us-east-1", Key=key)
    assert configs["foundation.json"]["Parameters"]["BucketSuffix"] == "-dev"


def test_bundle_step_wires_object_versions_and_mirrors_dags(s3, tmp_path):
    bucket = "airflow-surgical-mlops-dev-123456789012"
    s3.put_object(Bucket=bucket, Key="dags/removed_dag.py", Body=b"old")
    bundle = build(tmp_path / "mwaa")
    first = ci_release.release_bundle(s3, bucket, "dev", bundle, tmp_path / "cfn")
    parameters = first["Parameters"]
    assert set(parameters) <= _parameters("mwaa.yaml")
    for name, parameter in ci_release.VERSIONED_OBJECTS.items():
        assert s3.head_object(Bucket=bucket, Key=name)["VersionId"] == parameters[parameter]
    assert first["dags_deleted"] == ["dags/removed_dag.py"]
    s3.head_object(Bucket=bucket, Key="dags/include/config.py")
    # The same bundle again: same versions, so CloudFormation sees no change and MWAA is not updated.
    again = ci_release.release_bundle(s3, bucket, "dev", bundle, tmp_path / "cfn")
    assert again["Parameters"] == parameters
    assert json.loads((tmp_path / "cfn" / "mwaa.json").read_text())["Parameters"] == parameters


def test_buildspec_runs_make_test_and_builds_the_four_containers():
    spec = yaml.safe_load((REPO_ROOT / "buildspec.yml").read_text())
    script = "\n".join(spec["phases"]["build"]["commands"])
    assert "bash .ci/run" in script and "containers/*/Dockerfile" in script
    assert "tools.mwaa_bundle" in script and "tools.ci_release bundle" in script
    assert (REPO_ROOT / ".ci" / "run").read_text().strip().endswith("exec make test")


def test_pipeline_gates_production_on_a_manual_approval():
    stages = _load_template(REPO_ROOT / "infra" / "cicd.yaml")["Resources"]["Pipeline"]["Properties"]["Stages"]
    names = [s["Name"] for s in stages]
    assert names == ["Source", "Test", "Images", "Dev", "ApproveProduction", "Prod"]
    approval = stages[names.index("ApproveProduction")]["Actions"][0]["ActionTypeId"]
    assert (approval["Category"], approval["Provider"]) == ("Approval", "Manual")
    repositories = [r for r in _load_template(REPO_ROOT / "infra" / "cicd.yaml")["Resources"].values()
                    if r["Type"] == "AWS::ECR::Repository"]
    names = {r["Properties"]["RepositoryName"]["Sub"].split("/", 1)[1] for r in repositories}
    assert names == {"frame-extractor", "trainer", "inference", "drift-monitor"}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_stage_deploy_gets_every_parameter_and_the_names_of_its_stage(s3, tmp_path, stage):
    """dev and prod share one account: each CloudFormation action of the stage gets a value for every parameter
    without a default (its parameter file from tools/ci_release.py plus its ParameterOverrides), and the names the
    stacks share with the DAGs are the stage preset's."""
    from include.config import build_config

    config = build_config(stage)
    files = ci_release.release_lambdas(s3, "surgical-mlops-deploy-123456789012-us-east-1", stage, tmp_path)
    files["mwaa.json"] = ci_release._template_config(
        {"Stage": stage, "StageSuffix": ci_release.stage_suffix(stage),
         "BucketSuffix": ci_release.bucket_suffix(stage),
         "ConnectionSecretName": ci_release.connection_secret_name(stage),
         **dict.fromkeys(ci_release.VERSIONED_OBJECTS.values(), "v1")}, stage)  # as release_bundle writes it
    stages = _load_template(REPO_ROOT / "infra" / "cicd.yaml")["Resources"]["Pipeline"]["Properties"]["Stages"]
    (pipeline_stage,) = [s for s in stages if s["Name"] == stage.capitalize()]
    deployed = {}
    for action in pipeline_stage["Actions"]:
        if action["ActionTypeId"]["Provider"] != "CloudFormation":
            continue
        settings = action["Configuration"]
        assert settings["StackName"].endswith(f"-{stage}"), settings["StackName"]
        template = _load_template(REPO_ROOT / settings["TemplatePath"].split("::", 1)[1])
        parameters = dict(files[settings["TemplateConfiguration"].split("::", 1)[1]]["Parameters"])
        parameters.update(json.loads(settings.get("ParameterOverrides", "{}")))
        required = {name for name, spec in template["Parameters"].items() if "Default" not in spec}
        assert required <= set(parameters) <= set(template["Parameters"]), action["Name"]
        deployed[action["Name"]] = parameters
    assert set(deployed) == {"Foundation", "Platform", "Mwaa", "Monitoring", "Api"}
    assert deployed["Foundation"]["StageSuffix"] == deployed["Foundation"]["BucketSuffix"] == f"-{stage}"
    assert config.raw_bucket == f"surgical-videos-raw{deployed['Foundation']['BucketSuffix']}"
    assert config.video_queue == f"video-processing-queue{deployed['Foundation']['StageSuffix']}"
    for name in ("Platform", "Mwaa", "Monitoring", "Api"):
        assert deployed[name]["Stage"] == stage, name
    for name in ("Platform", "Mwaa"):  # the role, queue, endpoint, ... names of the preset: StageSuffix
        assert deployed[name]["StageSuffix"] == f"-{stage}", name
    assert deployed["Monitoring"]["EndpointName"] == deployed["Api"]["EndpointName"] == config.endpoint_name
    assert deployed["Monitoring"]["MonitoringScheduleName"] == config.monitoring_schedule_name
    assert deployed["Mwaa"]["ConnectionSecretName"] == f"airflow/connections/{stage}/label_studio_default"
