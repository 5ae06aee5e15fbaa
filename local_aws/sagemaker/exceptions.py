"""SageMaker's error shapes as the JSON 1.1 protocol returns them (``__type`` + ``message``, HTTP 400)."""

from __future__ import annotations


class SageMakerError(Exception):
    code = "InternalFailure"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


class ValidationException(SageMakerError):
    code, status = "ValidationException", 400


class AccessDeniedException(SageMakerError):
    code, status = "AccessDeniedException", 400


class ResourceNotFound(SageMakerError):
    code, status = "ResourceNotFound", 400


class ResourceInUse(SageMakerError):
    code, status = "ResourceInUse", 400


class ResourceLimitExceeded(SageMakerError):
    code, status = "ResourceLimitExceeded", 400


class ConflictException(SageMakerError):
    code, status = "ConflictException", 400


class ThrottlingException(SageMakerError):
    code, status = "ThrottlingException", 400


class UnknownOperation(SageMakerError):
    code, status = "UnknownOperationException", 400


class ModelError(SageMakerError):
    """InvokeEndpoint: the model container answered with an error (AWS: 424 with the original status)."""

    code, status = "ModelError", 424

    def __init__(self, message: str, original_status: int, original_message: str, log_stream: str) -> None:
        super().__init__(message)
        self.original_status, self.original_message, self.log_stream = original_status, original_message, log_stream

    def body(self) -> dict[str, object]:
        return {"__type": self.code, "message": self.message, "OriginalStatusCode": self.original_status,
                "OriginalMessage": self.original_message, "LogStreamArn": self.log_stream}


class UnrecognizedClientException(SageMakerError):
    """The request's access key is unknown to IAM (``LOCAL_AWS_IAM=enforce``)."""

    code, status = "UnrecognizedClientException", 400


class MissingAuthenticationToken(SageMakerError):
    """An unsigned request (``LOCAL_AWS_IAM=enforce``)."""

    code, status = "MissingAuthenticationTokenException", 403
