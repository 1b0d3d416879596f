"""Typed service errors and their gRPC status codes.

Handlers raise these (or let a library's ``ValidationError`` escape); the error-mapping interceptor
turns them into a status with a message that names the offending field and a structured
``trillium.common.v1.ErrorDetail`` in the trailing metadata key ``trillium-error-bin``. Anything
unexpected becomes INTERNAL with the request id — never UNKNOWN.
"""

from __future__ import annotations

import grpc

ERROR_DETAIL_METADATA_KEY = "trillium-error-bin"


class ServiceError(Exception):
    """An error with a definite gRPC status; ``field`` names the request field at fault, if any."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str = "", retry_after_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_seconds = retry_after_seconds

    def status_message(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def __str__(self) -> str:
        return self.status_message()


class ValidationError(ServiceError, ValueError):
    """Bad request content; maps to INVALID_ARGUMENT. ``field`` is required."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        if not field:
            raise ValueError("ValidationError needs the name of the offending field")
        super().__init__(message, field=field)


class NotFoundError(ServiceError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceededError(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
