"""The local stack as a set of processes, and infra/ as what it runs."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from local_aws import bootstrap, stack
from local_aws.settings import REPO_ROOT, load_settings
from tests.conftest import free_port

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


def test_up_twice_is_harmless_and_down_leaves_no_process(tmp_path, capsys):
    settings = load_settings(home=tmp_path, base_port=free_port())
    try:
        stack.up(settings, quiet=True)
        pid = int((settings.pid_dir / "moto.pid").read_text())
        stack.up(settings, quiet=True)  # second start: same process, stack up to date
        assert int((settings.pid_dir / "moto.pid").read_text()) == pid
        out = capsys.readouterr().out
        assert "already running" in out and "up to date" in out
    finally:
        stack.down(settings)
    assert not _group_alive(pid)
    assert not list(settings.pid_dir.glob("*.pid"))


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        settings = load_settings(home=tmp_path, base_port=other.getsockname()[1])
        with pytest.raises(stack.StackError, match=r"port \d+ .* in use by a process that is not this stack"):
            stack.up(settings, quiet=True)
    assert not list(settings.pid_dir.glob("*.pid")) if settings.pid_dir.exists() else True
