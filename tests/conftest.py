"""Shared fixtures: a private local AWS stack for the integration tests (own state folder, own free port)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from local_aws import bootstrap, stack
from local_aws.settings import StackSettings, load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """``aws("s3")``: a boto3 client of the test stack."""
    return lambda service: bootstrap.client(local_stack, service)


@pytest.fixture(scope="session")
def toy_image(local_stack: StackSettings) -> str:
    """The tiny test container (tests/containers/toy) in the stack's image registry."""
    from pathlib import Path

    repository = bootstrap.register_containers(local_stack, [Path(__file__).parent / "containers" / "toy"])[0]
    return bootstrap.image_uri(repository)
