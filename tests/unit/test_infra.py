"""infra/ templates: cfn-lint clean, and the security properties the design promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from local_aws.bootstrap import _load_template
from local_aws.settings import REPO_ROOT

TEMPLATES = sorted((REPO_ROOT / "infra").glob("*.yaml"))


def test_cfn_lint_is_clean():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_buckets_are_versioned_encrypted_and_private(path: Path):
    for name, resource in _load_template(path)["Resources"].items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        props = resource["Properties"]
        assert props["VersioningConfiguration"]["Status"] == "Enabled", name
        encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms", name
        assert all(props["PublicAccessBlockConfiguration"].values()), name


def _dead_letter_queues(resources: dict) -> set[str]:
    """Logical ids of the queues a template uses as dead-letter or on-failure destinations: a queue's
    ``RedrivePolicy.deadLetterTargetArn``, a Lambda's ``DestinationConfig.OnFailure.Destination``, a rule target's
    ``DeadLetterConfig.Arn``."""
    text = json.dumps(resources)
    queues = {name for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    return {q for q in queues
            if re.search(rf'"(deadLetterTargetArn|Destination|Arn)": {{"GetAtt": "{q}.Arn"}}', text)}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_dead_letter_queue_has_an_alarm(path: Path):
    resources = _load_template(path)["Resources"]
    alarmed = {json.dumps(r["Properties"]["Dimensions"]) for r in resources.values()
               if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("Namespace") == "AWS/SQS"
               and r["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
               and r["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
               and r["Properties"]["Threshold"] == 0}
    for queue in _dead_letter_queues(resources):
        name = resources[queue]["Properties"]["QueueName"]  # the same !Sub as the queue's own name
        assert json.dumps([{"Name": "QueueName", "Value": name}]) in alarmed, queue


def test_the_dead_letter_queues_are_found():
    found = {p.name: _dead_letter_queues(_load_template(p)["Resources"]) for p in TEMPLATES}
    assert found["foundation.yaml"] == {"VideoDeadLetterQueue", "IngestLambdaFailedEvents"}
    assert found["monitoring.yaml"] == {"TriggerFailedEvents"}


# IAM's service authorization reference lists no resource type for these: "*" is the only valid Resource.
UNSCOPED_ACTIONS = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "logs:DescribeLogGroups",
                    "s3:GetAccountPublicAccessBlock", "sagemaker:ListProcessingJobs", "sagemaker:ListTrainingJobs",
                    "sagemaker:ListMonitoringExecutions"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_role_policies_name_their_actions(path: Path):
    for name, resource in _load_template(path)["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all("*" not in action for action in actions), (name, statement)
                if statement["Resource"] == "*":  # only actions that have no resource-level permissions
                    assert all(action in UNSCOPED_ACTIONS for action in actions), (name, statement)


def _template(name: str) -> dict:
    return _load_template(REPO_ROOT / "infra" / name)


def test_mwaa_reads_only_the_label_studio_connection_from_secrets_manager():
    from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend

    mwaa, label_studio = _template("mwaa.yaml"), _template("label_studio.yaml")
    secret = label_studio["Parameters"]["ConnectionSecretName"]["Default"]
    parameter = mwaa["Parameters"]["ConnectionSecretName"]
    assert parameter["Default"] == secret and re.fullmatch(parameter["AllowedPattern"], secret)
    options = mwaa["Resources"]["Environment"]["Properties"]["AirflowConfigurationOptions"]
    assert options["secrets.backend"] == f"{SecretsManagerBackend.__module__}.{SecretsManagerBackend.__name__}"
    text, variables = options["secrets.backend_kwargs"]["Sub"]
    index, (separator, name) = variables["Prefix"]["Select"][0], variables["Prefix"]["Select"][1]["Split"]
    assert name == {"Ref": "ConnectionSecretName"}
    kwargs = json.loads(text.replace("${Prefix}", secret.split(separator)[index]))
    backend = SecretsManagerBackend(**kwargs)  # the installed provider takes exactly these options
    assert backend.kwargs == {} and backend.variables_prefix is None and backend.config_prefix is None
    assert f"{backend.connections_prefix}/label_studio_default" == secret
    # Only label_studio_default is looked up (the provider matches with re.match and IGNORECASE).
    pattern = backend.connections_lookup_pattern
    assert re.match(pattern, "label_studio_default", re.IGNORECASE)
    assert not any(re.match(pattern, c, re.IGNORECASE) for c in
                   ("aws_default", "label_studio_default_2", "http_default", "sagemaker_default"))
    statements = [s for p in mwaa["Resources"]["AirflowExecutionRole"]["Properties"]["Policies"]
                  for s in p["PolicyDocument"]["Statement"] if "secretsmanager" in str(s["Action"])]
    assert [(s["Action"], s["Resource"]) for s in statements] == [("secretsmanager:GetSecretValue", {
        "Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
               "${ConnectionSecretName}-??????"})]


def test_frames_bucket_allows_only_reads_from_the_label_studio_origin():
    foundation = _template("foundation.yaml")
    assert foundation["Parameters"]["LabelStudioOrigin"]["Default"] == ""
    assert foundation["Conditions"]["HasLabelStudioOrigin"] == {"Not": [{"Equals": [{"Ref": "LabelStudioOrigin"}, ""]}]}
    condition, cors, otherwise = foundation["Resources"]["FramesBucket"]["Properties"]["CorsConfiguration"]["If"]
    assert (condition, otherwise) == ("HasLabelStudioOrigin", {"Ref": "AWS::NoValue"})
    (rule,) = cors["CorsRules"]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD"]
    assert rule["AllowedOrigins"] == [{"Ref": "LabelStudioOrigin"}]
    others = [n for n, r in foundation["Resources"].items() if r["Type"] == "AWS::S3::Bucket" and n != "FramesBucket"]
    assert others and not any("CorsConfiguration" in foundation["Resources"][n]["Properties"] for n in others)


# -- stages in one account (infra/cicd.yaml deploys dev and prod into one account): every name carries the stage ----
# Properties that name a resource account- or region-wide (two stages' stacks would clash on a shared one).
_ACCOUNT_WIDE_NAMES = {"BucketName", "QueueName", "TableName", "FunctionName", "LogGroupName", "AliasName", "RoleName",
                       "Name", "UserPoolName", "TopicName", "WorkteamName", "ClusterName", "AlarmName", "Domain"}
_STAGE_PARAMETERS = ("${Stage}", "${StageSuffix}", "${BucketSuffix}", "{'Ref': 'Stage'}")
# A name given by a parameter whose value the deployer chooses per stage.
_NAMED_BY_PARAMETER = {("label_studio.yaml", "AirflowConnectionSecret"): "ConnectionSecretName",
                       ("label_studio.yaml", "DnsRecord"): "DomainName"}


@pytest.mark.parametrize("path", [p for p in TEMPLATES if p.name != "cicd.yaml"], ids=lambda p: p.name)
def test_every_resource_name_carries_the_stage(path: Path):
    """cicd.yaml is the one stack both stages share (pipeline, ECR repositories, deployment bucket)."""
    template = _load_template(path)
    for logical, resource in template["Resources"].items():
        for prop, value in resource.get("Properties", {}).items():
            if prop not in _ACCOUNT_WIDE_NAMES or not isinstance(value, dict | str):
                continue
            if resource["Type"] == "AWS::EC2::EIP":  # Domain: vpc, not a name
                continue
            if isinstance(value, dict) and ("GetAtt" in value or value.get("Ref") in template["Resources"]):
                continue  # a reference to a resource of the stack
            if (path.name, logical) in _NAMED_BY_PARAMETER:
                assert value == {"Ref": _NAMED_BY_PARAMETER[(path.name, logical)]}, (logical, prop)
                continue
            assert any(p in str(value) for p in _STAGE_PARAMETERS), f"{path.name} {logical}.{prop} = {value}"


def _render(name: str, **parameters: str):
    from tools import iam_lint

    template = _template(name)
    render = iam_lint.Renderer(template)
    render.parameters.update(parameters)
    return template, render


@pytest.mark.parametrize(("stage", "suffix"), [("local", ""), ("dev", "-dev"), ("prod", "-prod")])
def test_the_foundation_names_are_the_names_of_the_stage_preset(stage, suffix):
    from include.config import build_config

    config = build_config(stage)
    template, render = _render("foundation.yaml", StageSuffix=suffix, BucketSuffix=suffix)
    names = {logical: render(next(v for k, v in r["Properties"].items() if k in _ACCOUNT_WIDE_NAMES))
             for logical, r in template["Resources"].items()
             if r["Type"] in ("AWS::SQS::Queue", "AWS::S3::Bucket", "AWS::KMS::Alias")}
    assert names == {
        "DataKeyAlias": config.kms_key_alias, "VideoQueue": config.video_queue,
        "VideoDeadLetterQueue": config.video_dlq, "IngestLambdaFailedEvents": f"video-ingest-lambda-dlq{suffix}",
        "RawVideosBucket": config.raw_bucket, "FramesBucket": config.frames_bucket,
        "AnnotationsBucket": config.annotations_bucket, "ModelsBucket": config.models_bucket}
    function = template["Resources"]["IngestLambda"]["Properties"]
    assert render(function["FunctionName"]) == f"surgical-s3-to-sqs{suffix}"
    # The function works on its own stage's queue and table (references, not names).
    assert function["Environment"]["Variables"]["QUEUE_URL"] == {"Ref": "VideoQueue"}
    assert function["Environment"]["Variables"]["IDEMPOTENCY_TABLE"] == {"Ref": "IngestIdempotencyTable"}
    assert template["Parameters"]["StageSuffix"]["Default"] == ""
    assert re.fullmatch(template["Parameters"]["StageSuffix"]["AllowedPattern"], suffix)


@pytest.mark.parametrize(("stage", "suffix"), [("local", ""), ("dev", "-dev"), ("prod", "-prod")])
def test_platform_and_mwaa_agree_with_the_stage_preset_on_role_and_workteam(stage, suffix):
    """StageSuffix as tools/ci_release.py passes it (dev, prod) and local_aws/bootstrap.py (local: none)."""
    from include.config import build_config

    config = build_config(stage)
    platform, render_platform = _render("platform.yaml", Stage=stage, StageSuffix=suffix)
    resources = platform["Resources"]
    assert render_platform(resources["SageMakerExecutionRole"]["Properties"]["RoleName"]) == config.sagemaker_role_name
    assert render_platform(resources["Workteam"]["Properties"]["WorkteamName"]) == config.workteam_name
    mwaa, render_mwaa = _render("mwaa.yaml", Stage=stage, StageSuffix=suffix, BucketSuffix=suffix)
    statements = {s["Sid"]: s for p in mwaa["Resources"]["AirflowExecutionRole"]["Properties"]["Policies"]
                  for s in render_mwaa(p["PolicyDocument"])["Statement"]}
    assert statements["PassSageMakerRole"]["Resource"] == config.sagemaker_role_arn
    assert statements["VideoQueue"]["Resource"].endswith(f":{config.video_queue}")
    assert statements["DeadLetterMalformedMessages"]["Resource"].endswith(f":{config.video_dlq}")
    # Only this stage's endpoint: dev's DAGs cannot change prod's.
    others = {"dev", "prod"} - {stage}
    endpoints = [r for r in statements["RegisterAndDeployModels"]["Resource"] if ":endpoint/" in r]
    assert endpoints == [f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{config.endpoint_name}"]
    assert not any(f"-{other}" in r for r in statements["RegisterAndDeployModels"]["Resource"] for other in others)
    # The names that are not preset names keep the stage itself (the local alarms are surgical-*-local).
    assert render_mwaa(mwaa["Resources"]["AirflowExecutionRole"]["Properties"]["RoleName"]) == \
        f"surgical-mwaa-execution-{stage}"
    assert statements["ReadDriftAlarms"]["Resource"].endswith(f":alarm:surgical-*-{stage}")


def test_the_stage_endpoint_and_schedule_reach_the_alarms_and_the_api():
    monitoring = _template("monitoring.yaml")
    for name in ("EndpointName", "MonitoringScheduleName"):  # no shared default: each stage passes its own
        assert "Default" not in monitoring["Parameters"][name], name
    for logical in ("InputDriftAlarm", "PredictionDriftAlarm"):
        dimensions = monitoring["Resources"][logical]["Properties"]["Dimensions"]
        assert dimensions == [{"Name": "Endpoint", "Value": {"Ref": "EndpointName"}},
                              {"Name": "MonitoringSchedule", "Value": {"Ref": "MonitoringScheduleName"}}], logical
    api = _template("api.yaml")["Resources"]["DetectFunction"]["Properties"]
    assert api["Environment"]["Variables"]["ENDPOINT_NAME"] == {"Ref": "EndpointName"}


def test_the_local_roles_stack_holds_the_roles_of_platform_and_mwaa_and_the_parameters_they_use(tmp_path):
    """local_aws/bootstrap.py deploys these roles to the local stack; a statement naming another resource of its
    template (which the roles stack does not hold) is left out, and said so."""
    from local_aws import bootstrap

    template, dropped = bootstrap.roles_template()
    assert dropped == []
    assert {k: r["Type"] for k, r in template["Resources"].items()} == {
        "SageMakerExecutionRole": "AWS::IAM::Role", "AirflowExecutionRole": "AWS::IAM::Role"}
    assert template["Resources"]["AirflowExecutionRole"] == _template("mwaa.yaml")["Resources"]["AirflowExecutionRole"]
    local = bootstrap.roles_parameters("arn:aws:kms:us-east-1:123456789012:key/1111aaaa-0000-0000-0000-000000000000")
    assert set(template["Parameters"]) == set(local)
    for name, spec in template["Parameters"].items():
        assert local[name] in spec.get("AllowedValues", [local[name]]), name
        assert re.fullmatch(spec.get("AllowedPattern", ".*"), local[name]), name
    assert local["ImageRepositoryPrefix"] == _template("platform.yaml")["Parameters"]["ImageRepositoryPrefix"][
        "Default"]
    (tmp_path / "t.yaml").write_text("""
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {}
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
              - {Sid: Kept, Effect: Allow, Action: s3:ListAllMyBuckets, Resource: "*"}
              - {Sid: Named, Effect: Allow, Action: s3:GetObject, Resource: !Sub "${Bucket.Arn}/*"}
""")
    template, dropped = bootstrap.roles_template((tmp_path / "t.yaml",))
    statements = template["Resources"]["Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert [s["Sid"] for s in statements] == ["Kept"]
    assert dropped == ["t.yaml Role p statement Named: names Bucket, not deployed locally"]
