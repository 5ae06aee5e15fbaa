"""The local stack as a set of processes, and infra/ as what it runs."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
from pathlib import Path

import pytest

from local_aws import bootstrap, stack
from local_aws.settings import REPO_ROOT, load_settings
from tests.conftest import ENDPOINT_WAITER, free_port

pytestmark = pytest.mark.integration


def test_the_stack_runs_the_template_in_infra(aws):
    deployed = aws("cloudformation").get_template(StackName=bootstrap.FOUNDATION_STACK)["TemplateBody"]
    assert deployed == (REPO_ROOT / "infra" / "foundation.yaml").read_text()


@pytest.mark.parametrize("bucket", ["surgical-videos-raw", "surgical-frames-processed", "surgical-annotations",
                                    "surgical-models"])
def test_buckets_are_versioned_encrypted_and_private(aws, bucket):
    s3 = aws("s3")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["BucketKeyEnabled"] is True
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4


def test_env_file_points_clients_at_the_stack(local_stack):
    lines = local_stack.env_file.read_text().splitlines()
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
    assert exports["AWS_ENDPOINT_URL"] == local_stack.moto_url
    assert exports["AWS_DEFAULT_REGION"] and exports["AWS_ACCESS_KEY_ID"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies of an exited group do not count.
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose environment mentions ``text`` (every process the stack starts carries its home path)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "environ").read_bytes():
                    state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_up_twice_is_harmless_and_down_leaves_no_process(tmp_path, capsys):
    settings = load_settings(home=tmp_path, base_port=free_port())
    try:
        stack.up(settings, quiet=True)
        pids = {p.stem: int(p.read_text()) for p in settings.pid_dir.glob("*.pid")}
        assert set(pids) == {"moto", "sagemaker", "apigateway"}
        stack.up(settings, quiet=True)  # second start: same processes, stack up to date
        assert {p.stem: int(p.read_text()) for p in settings.pid_dir.glob("*.pid")} == pids
        out = capsys.readouterr().out
        assert out.count("already running") == len(pids) and "up to date" in out
        _start_an_endpoint(settings)  # a long-running inference server of the stack's own
        assert len(_processes_mentioning(str(tmp_path))) > len(pids)
    finally:
        stack.down(settings)
    assert not any(_group_alive(pid) for pid in pids.values())
    assert _processes_mentioning(str(tmp_path)) == []
    assert not list(settings.pid_dir.glob("*.pid"))


def _start_an_endpoint(settings) -> None:
    repository = bootstrap.register_containers(settings, [REPO_ROOT / "tests" / "containers" / "toy"])[0]
    image = bootstrap.image_uri(repository)
    s3, sm = bootstrap.client(settings, "s3"), bootstrap.client(settings, "sagemaker")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = json.dumps({"mean": 1.0}).encode()
        info = tarfile.TarInfo("model.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="surgical-models", Key="toy/model.tar.gz", Body=buffer.getvalue())
    sm.create_model(ModelName="m", ExecutionRoleArn="arn:aws:iam::123456789012:role/surgical-sagemaker-execution",
                    PrimaryContainer={"Image": image, "ModelDataUrl": "s3://surgical-models/toy/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="e", EndpointConfigName="c")  # Creating at once: the waiter can start
    sm.get_waiter("endpoint_in_service").wait(EndpointName="e", WaiterConfig=ENDPOINT_WAITER)


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        settings = load_settings(home=tmp_path, base_port=other.getsockname()[1])
        with pytest.raises(stack.StackError, match=r"port \d+ .* in use by a process that is not this stack"):
            stack.up(settings, quiet=True)
    assert not list(settings.pid_dir.glob("*.pid")) if settings.pid_dir.exists() else True
