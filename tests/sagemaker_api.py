"""SageMaker requests the project builds, checked as the local SageMaker checks them (what the real API accepts):
botocore's shapes with lengths, patterns and enums (``local_aws.sagemaker.validation``), then SageMaker's documented
rules (``local_aws.sagemaker.rules``: KMS key formats and instance storage, time limits, paths)."""

from __future__ import annotations

import re

from local_aws.sagemaker.exceptions import ValidationException
from local_aws.sagemaker.rules import check
from local_aws.sagemaker.validation import service_model, validate

MODEL = service_model("sagemaker")
# The KMS keys the tests' requests name: key ARNs of the test account (no KMS to ask in a unit test).
TEST_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
_TEST_KEYS = re.compile(r"arn:aws:kms:[a-z0-9-]+:123456789012:key/[0-9a-f-]{36}")


def key_exists(key: str) -> bool:
    """The tests' KMS: every key ARN of the test account exists, nothing else does."""
    return bool(_TEST_KEYS.fullmatch(key))


def problems(operation: str, request: dict) -> str | None:
    """The local SageMaker's ``ValidationException`` message for ``request``, or None when it is accepted."""
    try:
        validate(MODEL.operation_model(operation), request)
        check(operation, request, key_exists)
    except ValidationException as exc:
        return exc.message
    return None


def valid(operation: str, request: dict) -> None:
    """Fails the test with the server's report when ``request`` is not a valid ``operation`` request."""
    report = problems(operation, request)
    assert report is None, report
