"""Shared fixtures: a private local AWS stack for the integration tests (own state folder, own free port)."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator

import pytest

from local_aws import bootstrap, stack
from local_aws.settings import StackSettings, load_settings


def free_port(count: int = 4) -> int:
    """A base port with ``count`` free ports from it (the stack's services take consecutive ports)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free loopback ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    """The whole stack as 'make up' starts it, on a port of its own so a developer's running stack is untouched."""
    os.environ.setdefault("LOCAL_LAMBDA_RETRY_DELAYS", "0.2,0.2")  # Lambda's async retries, in fractions of s
    settings = load_settings(home=tmp_path_factory.mktemp("local-aws"), base_port=free_port())
    stack.up(settings, quiet=True)
    try:
        yield settings
    finally:
        stack.down(settings)


@pytest.fixture(scope="session")
def aws(local_stack: StackSettings):
    """``aws("s3")``: a boto3 client of the test stack (keyword arguments: botocore Config options)."""
    return lambda service, **config: bootstrap.client(local_stack, service, **config)


@pytest.fixture(scope="session")
def toy_image(local_stack: StackSettings) -> str:
    """The tiny test container (tests/containers/toy) in the stack's image registry."""
    from pathlib import Path

    repository = bootstrap.register_containers(local_stack, [Path(__file__).parent / "containers" / "toy"])[0]
    return bootstrap.image_uri(repository)
