"""Errors of the Cloud Run emulator.

    EmulatorError
     +-- ApiError                    an Admin/Logging API call answered with a Google error
     |    +-- InvalidArgument        400 INVALID_ARGUMENT
     |    +-- FailedPrecondition     400 FAILED_PRECONDITION
     |    +-- NotFound               404 NOT_FOUND
     |    +-- AlreadyExists          409 ALREADY_EXISTS
     |    +-- Aborted                409 ABORTED (etag mismatch)
     |    +-- ResourceExhausted      429 RESOURCE_EXHAUSTED
     |    +-- Internal               500 INTERNAL
     |    +-- Unimplemented          501 UNIMPLEMENTED
     |    +-- Unavailable            503 UNAVAILABLE
     +-- PortInUseError              the emulator's own port is taken

`GOOGLE_STATUS` is the one table from an error class to its HTTP status, Google status name and
gRPC code; the error middleware and long-running operations both read it, so the HTTP answer and an
operation's `error.code` always agree.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class EmulatorError(Exception):
    """Root of every error the emulator raises on purpose."""


class ApiError(EmulatorError):
    """An API call that fails with a Google-style error; subclasses pick the status."""

    def __init__(self, message: str, *, resource: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.resource = resource


class InvalidArgument(ApiError):
    pass


class FailedPrecondition(ApiError):
    pass


class NotFound(ApiError):
    pass


class AlreadyExists(ApiError):
    pass


class Aborted(ApiError):
    pass


class ResourceExhausted(ApiError):
    pass


class Internal(ApiError):
    pass


class Unimplemented(ApiError):
    pass


class Unavailable(ApiError):
    pass


class Unauthenticated(ApiError):
    pass


class PermissionDenied(ApiError):
    pass


class PortInUseError(EmulatorError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"{host}:{port} is already in use; pick another --port")
        self.host = host
        self.port = port


class GoogleStatus(NamedTuple):
    http_status: int
    status: str
    grpc_code: int


GOOGLE_STATUS: dict[type[ApiError], GoogleStatus] = {
    InvalidArgument: GoogleStatus(400, "INVALID_ARGUMENT", 3),
    FailedPrecondition: GoogleStatus(400, "FAILED_PRECONDITION", 9),
    NotFound: GoogleStatus(404, "NOT_FOUND", 5),
    AlreadyExists: GoogleStatus(409, "ALREADY_EXISTS", 6),
    Aborted: GoogleStatus(409, "ABORTED", 10),
    ResourceExhausted: GoogleStatus(429, "RESOURCE_EXHAUSTED", 8),
    Internal: GoogleStatus(500, "INTERNAL", 13),
    Unimplemented: GoogleStatus(501, "UNIMPLEMENTED", 12),
    Unavailable: GoogleStatus(503, "UNAVAILABLE", 14),
    Unauthenticated: GoogleStatus(401, "UNAUTHENTICATED", 16),
    PermissionDenied: GoogleStatus(403, "PERMISSION_DENIED", 7),
}


def google_status(error: ApiError) -> GoogleStatus:
    for cls in type(error).__mro__:
        found = GOOGLE_STATUS.get(cls)
        if found is not None:
            return found
    return GOOGLE_STATUS[Internal]


def error_body(error: ApiError) -> dict[str, Any]:
    """The JSON body Google APIs answer an error with."""
    status = google_status(error)
    return {"error": {"code": status.http_status, "message": error.message, "status": status.status}}


def operation_error(error: ApiError) -> dict[str, Any]:
    """A `google.rpc.Status` for a failed long-running operation."""
    return {"code": google_status(error).grpc_code, "message": error.message}
