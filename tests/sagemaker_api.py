"""SageMaker requests the project builds, checked against botocore's service model (what the real API accepts)."""

from __future__ import annotations

import botocore.session
from botocore.validate import ParamValidator

MODEL = botocore.session.get_session().get_service_model("sagemaker")


def valid(operation: str, request: dict) -> None:
    """Fails the test with botocore's report when ``request`` is not a valid ``operation`` request."""
    report = ParamValidator().validate(request, MODEL.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()
