"""Deploy ``infra/`` to the local stack exactly as to AWS, then apply what moto's CloudFormation drops.

1. The deployment bucket (on AWS the CI/CD pipeline owns it) receives the Lambda code zips, built from
   ``include/lambdas/`` the same way ``make mwaa-bundle``/CI builds them (deterministic zips, content-addressed keys).
2. ``infra/foundation.yaml`` is created or updated as a CloudFormation stack through moto's CloudFormation API.
3. Reconcile: moto's CloudFormation silently drops some properties (see DESIGN.md section 8). Each one is read
   from the template, compared with the deployed resource through the service API, and applied when missing, with
   a line saying so. Nothing is applied that the template does not declare.
4. ``infra/monitoring.yaml`` (stage ``local``): moto's CloudFormation has no ``AWS::CloudWatch::Alarm`` and fails the
   whole stack on a ``!GetAtt`` of one, so the stack is deployed without its alarms (their ARNs written in where
   the template reads them) and the alarms are created through the CloudWatch API from the template's properties.
   The trigger Lambda calls the local Airflow: ``LOCAL_AIRFLOW_API_URL`` (default http://127.0.0.1:<LOCAL_AIRFLOW_PORT
   or 8080>), ``LOCAL_AIRFLOW_API_USERNAME`` (else ``AIRFLOW_API_USERNAME``, else admin) and
   ``LOCAL_AIRFLOW_API_PASSWORD`` (else ``AIRFLOW_API_PASSWORD``, else empty), read at ``make up``.
5. The roles the pipeline runs as (``LOCAL_AWS_IAM=enforce`` checks requests against them): the ``AWS::IAM::Role``
   resources of ``infra/platform.yaml`` (the SageMaker execution role) and ``infra/mwaa.yaml`` (the MWAA execution
   role), with the parameters they use, deployed as the stack ``surgical-mlops-roles`` (stage ``local``, no suffix:
   the local preset's names; the foundation's data key). Each role is then compared through the IAM API with the
   template (trust policy, inline and managed policies, description) and what differs is applied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from local_aws.iam import as_list
from local_aws.settings import ACCOUNT_ID, REGION, REPO_ROOT, StackSettings

FOUNDATION_STACK = "surgical-mlops-foundation"
FOUNDATION_TEMPLATE = REPO_ROOT / "infra" / "foundation.yaml"
ARTIFACTS_BUCKET = "surgical-mlops-artifacts"
_LAMBDAS = REPO_ROOT / "include" / "lambdas"
# Template parameter -> the files of that function's deployment zip (the handler first).
LAMBDA_SOURCES = {"S3ToSqsCodeKey": [_LAMBDAS / "s3_to_sqs.py", _LAMBDAS / "quarantine.py"]}
MONITORING_STACK = "surgical-mlops-monitoring"
MONITORING_TEMPLATE = REPO_ROOT / "infra" / "monitoring.yaml"
MONITORING_LAMBDA_SOURCES = {"TriggerCodeKey": [_LAMBDAS / "trigger_drift_retrain.py"]}
ROLES_STACK = "surgical-mlops-roles"
# The templates whose AWS::IAM::Role resources the roles stack holds (the rest of them needs AWS: MWAA, VPC, Cognito).
ROLE_TEMPLATES = (REPO_ROOT / "infra" / "platform.yaml", REPO_ROOT / "infra" / "mwaa.yaml")
# Resource types moto's CloudFormation cannot create: bootstrap creates them through their service API.
_API_CREATED = {"AWS::CloudWatch::Alarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}"}
_INTRINSICS = {"If", "Not", "Equals", "And", "Or", "Sub", "Join", "Select", "Split", "FindInMap", "Base64",
               "GetAZs", "ImportValue", "Cidr"}


def client(settings: StackSettings, service: str, **config: Any) -> Any:
    """A boto3 client of the stack, resolved the way botocore resolves AWS_ENDPOINT_URL[_<SERVICE>]."""
    env = settings.aws_environment()
    endpoint = env.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}", env["AWS_ENDPOINT_URL"])
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(**config) if config else None,
    )


def lambda_zip(sources: list[Path]) -> bytes:
    """A deterministic zip of a function's files: same sources, same bytes, same key."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for source in sources:
            info = zipfile.ZipInfo(source.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, source.read_bytes())
    return buffer.getvalue()


def upload_lambda_code(settings: StackSettings, sources_by_parameter: dict[str, list[Path]] | None = None
                       ) -> dict[str, str]:
    s3 = client(settings, "s3")
    try:
        s3.head_bucket(Bucket=ARTIFACTS_BUCKET)
    except ClientError:
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
    keys = {}
    for parameter, sources in (sources_by_parameter or LAMBDA_SOURCES).items():
        body = lambda_zip(sources)
        key = f"lambda/{sources[0].stem}/{hashlib.sha256(body).hexdigest()[:16]}.zip"
        s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=key, Body=body)
        keys[parameter] = key
    return keys


def _load_template(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    # Intrinsic functions (!Ref, !Sub, ...) are kept as {"Fn": value}; reconcile only reads literal properties.
    def intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", intrinsic)
    return yaml.load(path.read_text(), Loader=Loader)  # noqa: S506 - SafeLoader subclass


def deploy_stack(settings: StackSettings, name: str, template: Path, parameters: dict[str, str],
                 body: str | None = None, source: str | None = None) -> dict[str, str]:
    """Create or update the stack ``name`` from ``template`` (or ``body`` built from it; ``source`` says from what,
    in the printed line)."""
    cfn = client(settings, "cloudformation")
    source = source or str(template.relative_to(REPO_ROOT))
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    body = body if body is not None else template.read_text()
    try:
        cfn.describe_stacks(StackName=name)
        exists = True
    except ClientError:
        exists = False
    if not exists:
        cfn.create_stack(StackName=name, TemplateBody=body, Parameters=params, Capabilities=["CAPABILITY_IAM"])
        cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        print(f"  stack    {name} created from {source}")
    elif _deployed_as(cfn, name, body, parameters):
        print(f"  stack    {name} up to date")
    else:
        try:
            cfn.update_stack(StackName=name, TemplateBody=body, Parameters=params, Capabilities=["CAPABILITY_IAM"])
            cfn.get_waiter("stack_update_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            print(f"  stack    {name} updated from {source}")
        except ClientError as exc:
            if "No updates" not in str(exc):
                raise
            print(f"  stack    {name} up to date")
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _deployed_as(cfn: Any, name: str, body: str, parameters: dict[str, str]) -> bool:
    """True when the stack already runs this template with these parameters (moto never answers 'No updates')."""
    current = cfn.describe_stacks(StackName=name)["Stacks"][0]
    current_parameters = {p["ParameterKey"]: p["ParameterValue"] for p in current.get("Parameters", [])}
    same_parameters = all(current_parameters.get(k) == v for k, v in parameters.items())
    return same_parameters and cfn.get_template(StackName=name)["TemplateBody"] == body


def _physical_ids(settings: StackSettings, stack: str) -> dict[str, str]:
    cfn = client(settings, "cloudformation")
    resources = cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
    return {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"]}


class Resolver:
    """Resolves the intrinsics the reconciled properties use (Ref, GetAtt .Arn) from the deployed stack."""

    _ARNS: ClassVar[dict[str, str]] = {
        "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{id}",
        "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{id}",
        "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
        "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{account}:table/{id}",
    }

    def __init__(self, template: dict[str, Any], physical: dict[str, str]) -> None:
        self.template, self.physical = template, physical

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and "Ref" in value:
            return self.physical[value["Ref"]]
        if isinstance(value, dict) and "GetAtt" in value:
            logical, attribute = value["GetAtt"].split(".", 1)
            assert attribute == "Arn", f"only .Arn is resolved, not {value}"
            physical = self.physical[logical]
            kind = self.template["Resources"][logical]["Type"]
            return self._ARNS[kind].format(region=REGION, account=ACCOUNT_ID, id=physical,
                                           name=physical.rsplit("/", 1)[-1])
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def _bucket_properties(s3: Any, bucket: str, props: dict[str, Any], resolve: Resolver) -> list[str]:
    applied = []
    wanted = props.get("VersioningConfiguration", {}).get("Status")
    if wanted and s3.get_bucket_versioning(Bucket=bucket).get("Status") != wanted:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": wanted})
        applied.append("versioning")
    block = props.get("PublicAccessBlockConfiguration")
    if block:
        try:
            current = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        except ClientError:
            current = {}
        if current != block:
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
            applied.append("public access block")
    if "BucketEncryption" in props:
        rules = [
            {"ApplyServerSideEncryptionByDefault": resolve(rule["ServerSideEncryptionByDefault"]),
             "BucketKeyEnabled": rule.get("BucketKeyEnabled", False)}
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        current = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        if current != rules:
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
            applied.append("bucket key")
    if "OwnershipControls" in props:
        try:
            current = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
        except ClientError:
            current = {}
        if current != props["OwnershipControls"]:
            s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=props["OwnershipControls"])
            applied.append("ownership controls")
    lambdas = props.get("NotificationConfiguration", {}).get("LambdaConfigurations", [])
    if lambdas:
        wanted_notifications = [
            {"LambdaFunctionArn": resolve(c["Function"]), "Events": [c["Event"]],
             "Filter": {"Key": {"FilterRules": c["Filter"]["S3Key"]["Rules"]}}}
            for c in lambdas
        ]
        current = s3.get_bucket_notification_configuration(Bucket=bucket).get("LambdaFunctionConfigurations", [])
        if [(c["LambdaFunctionArn"], c["Events"]) for c in current] != [
            (c["LambdaFunctionArn"], c["Events"]) for c in wanted_notifications
        ]:
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": wanted_notifications})
            applied.append("ObjectCreated notification to Lambda")
    return applied


def reconcile(settings: StackSettings, template: dict[str, Any], physical: dict[str, str]) -> list[str]:
    """Apply the properties and resources of the template that moto's CloudFormation did not deploy."""
    resolve = Resolver(template, physical)
    s3, ddb, lam = (client(settings, s) for s in ("s3", "dynamodb", "lambda"))
    applied = []
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::S3::Bucket":
            bucket = physical[logical]
            fixed = _bucket_properties(s3, bucket, props, resolve)
            if fixed:
                applied.append(f"{bucket}: {', '.join(fixed)}")
        elif resource["Type"] == "AWS::DynamoDB::Table" and "TimeToLiveSpecification" in props:
            table = physical[logical]
            ttl = props["TimeToLiveSpecification"]
            status = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"]
            if ttl.get("Enabled") and status != "ENABLED":
                ddb.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
                applied.append(f"{table}: time to live on {ttl['AttributeName']}")
        elif resource["Type"] == "AWS::KMS::Key" and "KeyPolicy" in props:
            # moto's CloudFormation stores the key policy as an object, and its KMS then fails every DescribeKey of
            # the key (it parses the stored policy as JSON text): the policy is put again through the KMS API.
            key = physical[logical]
            kms = client(settings, "kms")
            policy = json.dumps(resolve(substitute(props["KeyPolicy"], {})))
            if kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] != policy:
                kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy)
                applied.append(f"{key}: key policy (as JSON text)")
        elif resource["Type"] == "AWS::Lambda::EventInvokeConfig":
            function = resolve(props["FunctionName"])
            config = {k: resolve(props[k]) for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds",
                                                      "DestinationConfig") if k in props}
            current = lam.list_function_event_invoke_configs(FunctionName=function)["FunctionEventInvokeConfigs"]
            if not current:
                lam.put_function_event_invoke_config(FunctionName=function, **config)
                applied.append(f"{function}: event invoke config (retries, on-failure destination)")
    return applied


def image_repository(folder: Path) -> str:
    """ECR repository of a container folder: ``containers/frame_extractor`` -> ``surgical-mlops/frame-extractor``."""
    return f"surgical-mlops/{folder.name.replace('_', '-')}"


def register_containers(settings: StackSettings, folders: list[Path] | None = None) -> list[str]:
    """Create each container's ECR repository and map it to its folder for the local SageMaker."""
    from local_aws.sagemaker.containers import ContainerRegistry

    folders = folders if folders is not None else sorted(p.parent for p in (REPO_ROOT / "containers").glob(
        "*/Dockerfile"))
    ecr, registry = client(settings, "ecr"), ContainerRegistry(settings)
    repositories = []
    for folder in folders:
        repository = image_repository(folder)
        try:
            ecr.create_repository(repositoryName=repository, imageScanningConfiguration={"scanOnPush": True},
                                  encryptionConfiguration={"encryptionType": "KMS"})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "RepositoryAlreadyExistsException":
                raise
        registry.register(repository, folder)
        repositories.append(repository)
    return repositories


def image_uri(repository: str, tag: str = "latest") -> str:
    return f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/{repository}:{tag}"


# -- infra/monitoring.yaml: the stack without what moto cannot create, then those through their APIs ---------------
def substitute(value: Any, parameters: dict[str, str]) -> Any:
    """Resolve ``!Ref``/``!Sub`` of parameters and pseudo parameters (what the alarms' properties use)."""
    known = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws", **parameters}
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in known:
        return known[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Sub"} and isinstance(value["Sub"], str):
        return re.sub(r"\$\{([^}!]+)\}", lambda m: known[m.group(1)], value["Sub"])
    if isinstance(value, dict):
        return {k: substitute(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, parameters) for v in value]
    return value


def cloudformation_json(value: Any, arns: dict[str, str]) -> Any:
    """Short-form intrinsics back to CloudFormation JSON; ``GetAtt X.Arn`` of an API-created ``X`` -> its ARN."""
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), = value.items()
        if function == "GetAtt" and argument.split(".")[0] in arns:
            return arns[argument.split(".")[0]]
        if function == "GetAtt":
            return {"Fn::GetAtt": argument.split(".", 1)}
        if function in ("Ref", "Condition"):
            return {function: argument}
        if function in _INTRINSICS:
            return {f"Fn::{function}": cloudformation_json(argument, arns)}
    if isinstance(value, dict):
        return {k: cloudformation_json(v, arns) for k, v in value.items()}
    if isinstance(value, list):
        return [cloudformation_json(v, arns) for v in value]
    return value


def deployable_template(template: dict[str, Any], parameters: dict[str, str]) -> str:
    """The template as moto's CloudFormation can deploy it: API-created resources out, their ARNs written in."""
    arns = {}
    for logical, resource in template["Resources"].items():
        pattern = _API_CREATED.get(resource["Type"])
        if pattern:
            name = substitute(resource["Properties"]["AlarmName"], parameters)
            arns[logical] = pattern.format(region=REGION, account=ACCOUNT_ID, name=name)
    stripped = {**template, "Resources": {k: v for k, v in template["Resources"].items() if k not in arns}}
    return json.dumps(cloudformation_json(stripped, arns), indent=1, sort_keys=True)


_ALARM_PROPERTIES = ("AlarmName", "AlarmDescription", "Namespace", "MetricName", "Dimensions", "Statistic",
                     "ExtendedStatistic", "Period", "EvaluationPeriods", "DatapointsToAlarm", "Threshold",
                     "ComparisonOperator", "TreatMissingData", "Unit", "ActionsEnabled", "AlarmActions",
                     "OKActions", "InsufficientDataActions")


def create_alarms(settings: StackSettings, template: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """``AWS::CloudWatch::Alarm`` resources through PutMetricAlarm (only when missing or different: a put resets
    the alarm's state)."""
    cloudwatch = client(settings, "cloudwatch")
    applied = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        values = {**{k: str(v["Default"]) for k, v in template.get("Parameters", {}).items() if "Default" in v},
                  **parameters}
        props = substitute({k: v for k, v in resource["Properties"].items() if k in _ALARM_PROPERTIES}, values)
        props["Threshold"] = float(props["Threshold"])
        props["Period"], props["EvaluationPeriods"] = int(props["Period"]), int(props["EvaluationPeriods"])
        current = cloudwatch.describe_alarms(AlarmNames=[props["AlarmName"]])["MetricAlarms"]
        if not current or any(current[0].get(k) != v for k, v in props.items()):
            cloudwatch.put_metric_alarm(**props)
            applied.append(f"{props['AlarmName']}: alarm on {props['Namespace']} {props['MetricName']}")
    return applied


def monitoring_parameters(settings: StackSettings) -> dict[str, str]:
    """infra/monitoring.yaml's parameters on the local stack: stage local, the local Airflow instead of MWAA."""
    from include.config import build_config

    config = build_config("local")
    return {"Stage": "local", "EndpointName": config.endpoint_name,
            "MonitoringScheduleName": config.monitoring_schedule_name, "ArtifactsBucket": ARTIFACTS_BUCKET,
            "DriftThreshold": str(config.drift_psi_threshold),
            "AirflowApiUrl": os.environ.get("LOCAL_AIRFLOW_API_URL")
            or f"http://127.0.0.1:{os.environ.get('LOCAL_AIRFLOW_PORT', '8080')}",
            "AirflowApiUsername": os.environ.get("LOCAL_AIRFLOW_API_USERNAME")
            or os.environ.get("AIRFLOW_API_USERNAME", "admin"),
            "AirflowApiPassword": os.environ.get("LOCAL_AIRFLOW_API_PASSWORD")
            or os.environ.get("AIRFLOW_API_PASSWORD", ""),
            **upload_lambda_code(settings, MONITORING_LAMBDA_SOURCES)}


def deploy_monitoring(settings: StackSettings) -> dict[str, str]:
    parameters = monitoring_parameters(settings)
    template = _load_template(MONITORING_TEMPLATE)
    outputs = deploy_stack(settings, MONITORING_STACK, MONITORING_TEMPLATE, parameters,
                           body=deployable_template(template, parameters))
    for line in create_alarms(settings, template, parameters):
        print(f"  applied  {line}  (moto's CloudFormation has no AWS::CloudWatch::Alarm)")
    return outputs


# -- infra/platform.yaml + infra/mwaa.yaml: their IAM roles, as a stack of their own --------------------------------
def _references(value: Any) -> set[str]:
    """The names a value refers to: ``Ref``, ``GetAtt`` and ``${...}`` of ``Sub`` (parameters, pseudo parameters,
    resources; not a ``Sub``'s own variables)."""
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), = value.items()
        if function == "Ref" and isinstance(argument, str):
            return {argument}
        if function == "GetAtt":
            return {(argument.split(".", 1) if isinstance(argument, str) else argument)[0]}
        if function == "Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            names = {m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!]+)\}", text)} - set(variables)
            return names | _references(variables)
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value))
    return set()


def roles_template(paths: tuple[Path, ...] = ROLE_TEMPLATES) -> tuple[dict[str, Any], list[str]]:
    """A template of the ``AWS::IAM::Role`` resources of ``paths`` and the parameters they use, and a line per
    policy statement left out because it refers to another resource of its template (no such role in infra/ today;
    the local stack would have no such resource to name)."""
    parameters: dict[str, dict[str, Any]] = {}
    resources: dict[str, dict[str, Any]] = {}
    dropped = []
    for path in paths:
        template = _load_template(path)
        others = {k for k, r in template["Resources"].items() if r["Type"] != "AWS::IAM::Role"}
        for logical, resource in template["Resources"].items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            if logical in resources:
                raise ValueError(f"{path.name}: role {logical} is also in another template of the roles stack")
            resource = json.loads(json.dumps(resource))  # a copy: statements may be left out below
            for policy in resource["Properties"].get("Policies", []):
                kept = []
                for statement in policy["PolicyDocument"]["Statement"]:
                    named = sorted(_references(statement) & others)
                    if named:
                        dropped.append(f"{path.name} {logical} {policy['PolicyName']} statement "
                                       f"{statement.get('Sid', '?')}: names {', '.join(named)}, not deployed locally")
                    else:
                        kept.append(statement)
                policy["PolicyDocument"]["Statement"] = kept
            named = sorted(_references(resource) & others)
            if named:
                raise ValueError(f"{path.name} {logical} refers to {', '.join(named)} outside its policy statements")
            resources[logical] = resource
            for name in sorted(_references(resource) & set(template.get("Parameters", {}))):
                spec = template["Parameters"][name]
                known = parameters.setdefault(name, spec)
                if any(known.get(k) != spec.get(k) for k in ("Type", "Default", "AllowedValues", "AllowedPattern")):
                    raise ValueError(f"parameter {name} differs between the templates of the roles stack")
    sources = " and ".join(str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else p.name for p in paths)
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"The IAM roles of {sources}, as local_aws/bootstrap.py deploys them to the local stack.",
            "Parameters": parameters, "Resources": resources}, dropped


def roles_parameters(data_key_arn: str, stage: str = "local") -> dict[str, str]:
    """The roles' parameters on the local stack: stage local with the local preset's unsuffixed names (another stage:
    its ``-<stage>`` names, as tools/ci_release.py passes them), the stage's data key (also for MWAA's key: there is
    no MWAA environment locally), the local repositories."""
    from tools.ci_release import connection_secret_name

    suffix = "" if stage == "local" else f"-{stage}"
    return {"Stage": stage, "StageSuffix": suffix, "BucketSuffix": suffix, "DataKeyArn": data_key_arn,
            "MwaaKeyArn": data_key_arn,
            "ImageRepositoryPrefix": image_repository(REPO_ROOT / "containers" / "trainer").rsplit("/", 1)[0],
            "ConnectionSecretName": connection_secret_name(stage)}


def _unresolved(value: Any) -> bool:
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in {"Ref", "GetAtt", *_INTRINSICS}:
        return True
    if isinstance(value, dict):
        return any(_unresolved(v) for v in value.values())
    if isinstance(value, list):
        return any(_unresolved(v) for v in value)
    return False


def reconcile_roles(settings: StackSettings, template: dict[str, Any], parameters: dict[str, str],
                    physical: dict[str, str]) -> tuple[list[str], list[str]]:
    """Each role as the template declares it, through the IAM API: (a line per role, a line per property applied).
    The trust policy, the inline policies (exactly these), the managed policies and the description."""
    iam = client(settings, "iam")
    values = {**{k: str(v["Default"]) for k, v in template["Parameters"].items() if "Default" in v}, **parameters}
    roles, applied = [], []
    for logical, resource in template["Resources"].items():
        props = substitute(resource["Properties"], values)
        if _unresolved(props):
            raise ValueError(f"role {logical}: an intrinsic the roles stack does not resolve: {props}")
        props = json.loads(json.dumps(props))  # JSON values, as IAM returns them
        name = props.get("RoleName") or physical[logical]
        trust = props["AssumeRolePolicyDocument"]
        fixed = []
        try:
            role = iam.get_role(RoleName=name)["Role"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchEntity":
                raise
            role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                                   Description=props.get("Description", ""), Path=props.get("Path", "/"))["Role"]
            fixed.append("role")
        if role.get("AssumeRolePolicyDocument") != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            fixed.append("trust policy")
        if "Description" in props and role.get("Description", "") != props["Description"]:
            iam.update_role(RoleName=name, Description=props["Description"])
            fixed.append("description")
        wanted = {p["PolicyName"]: p["PolicyDocument"] for p in props.get("Policies", [])}
        current = set(iam.list_role_policies(RoleName=name)["PolicyNames"])
        for policy, document in wanted.items():
            if policy not in current or iam.get_role_policy(RoleName=name, PolicyName=policy)[
                    "PolicyDocument"] != document:
                iam.put_role_policy(RoleName=name, PolicyName=policy, PolicyDocument=json.dumps(document))
                fixed.append(f"inline policy {policy}")
        for policy in sorted(current - set(wanted)):
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
            fixed.append(f"inline policy {policy} removed (not in the template)")
        managed = set(props.get("ManagedPolicyArns", []))
        attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
        for arn in sorted(managed - attached):
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            fixed.append(f"managed policy {arn}")
        for arn in sorted(attached - managed):
            iam.detach_role_policy(RoleName=name, PolicyArn=arn)
            fixed.append(f"managed policy {arn} detached (not in the template)")
        if fixed:
            applied.append(f"{name}: {', '.join(fixed)}")
        services = sorted({s for statement in trust["Statement"] for s in
                           as_list(statement.get("Principal", {}).get("Service"))})
        roles.append(f"{name} ({logical}): trusts {', '.join(services) or 'no service'}; "
                     f"inline {', '.join(wanted) or 'none'}")
    return roles, applied


def deploy_roles(settings: StackSettings, outputs: dict[str, str], stage: str = "local") -> dict[str, str]:
    """infra/platform.yaml's and infra/mwaa.yaml's roles as the stack ``surgical-mlops-roles`` (``outputs``: the
    foundation's, for its data key), then each role reconciled through the IAM API. Another ``stage``'s roles (the
    dev and prod stages side by side in the one account) go to the stack ``surgical-roles-<stage>``."""
    template, dropped = roles_template()
    for line in dropped:
        print(f"  dropped  {line}")
    parameters = {k: v for k, v in roles_parameters(outputs["DataKeyArn"], stage).items()
                  if k in template["Parameters"]}
    sources = ", ".join(str(p.relative_to(REPO_ROOT)) for p in ROLE_TEMPLATES)
    name = ROLES_STACK if stage == "local" else f"surgical-roles-{stage}"
    stack_outputs = deploy_stack(settings, name, ROLE_TEMPLATES[0], parameters,
                                 body=json.dumps(cloudformation_json(template, {}), indent=1, sort_keys=True),
                                 source=f"the IAM roles of {sources}")
    roles, applied = reconcile_roles(settings, template, parameters, _physical_ids(settings, name))
    for line in applied:
        print(f"  applied  {line}  (not deployed as declared by moto's CloudFormation)")
    for line in roles:
        print(f"  role     {line}")
    return stack_outputs


def deploy(settings: StackSettings) -> dict[str, str]:
    parameters = {"ArtifactsBucket": ARTIFACTS_BUCKET, **upload_lambda_code(settings)}
    outputs = deploy_stack(settings, FOUNDATION_STACK, FOUNDATION_TEMPLATE, parameters)
    template = _load_template(FOUNDATION_TEMPLATE)
    for line in reconcile(settings, template, _physical_ids(settings, FOUNDATION_STACK)):
        print(f"  applied  {line}  (dropped by moto's CloudFormation)")
    outputs.update(deploy_roles(settings, outputs))
    outputs.update(deploy_monitoring(settings))
    repositories = register_containers(settings)
    if repositories:
        print(f"  images   {', '.join(repositories)} -> containers/")
    return outputs
