"""Errors of the tracking server, split by who must act.

    RunstreamError
    ├── RequestError                 the caller's input; HTTP 4xx
    │   ├── InvalidParameter         400 INVALID_PARAMETER_VALUE
    │   ├── AlreadyExists            400 RESOURCE_ALREADY_EXISTS
    │   ├── NotFound                 404 RESOURCE_DOES_NOT_EXIST
    │   └── InvalidState             400 INVALID_STATE (a deleted run or experiment)
    ├── Overloaded                   503 TEMPORARILY_UNAVAILABLE, with Retry-After
    ├── ConfigurationError           settings or environment; raised at start-up
    └── StoreError                   the database failed; 500 INTERNAL_ERROR

The HTTP boundary (``routes.wire.error_middleware``) turns each class into
its status and MLflow ``error_code`` from ``HTTP_STATUS`` below. Anything
else that escapes a handler is our bug: a logged 500.
"""

from __future__ import annotations


class RunstreamError(Exception):
    """Base of every error the server raises on purpose."""

    error_code = "INTERNAL_ERROR"


class RequestError(RunstreamError):
    """The request is wrong; the message names the field and the value."""

    error_code = "INVALID_PARAMETER_VALUE"


class InvalidParameter(RequestError):
    error_code = "INVALID_PARAMETER_VALUE"


class AlreadyExists(RequestError):
    error_code = "RESOURCE_ALREADY_EXISTS"


class NotFound(RequestError):
    error_code = "RESOURCE_DOES_NOT_EXIST"


class InvalidState(RequestError):
    # MLflow answers a write to a deleted run with INVALID_PARAMETER_VALUE
    # and HTTP 400; keep its code so the real client reacts the same way.
    error_code = "INVALID_PARAMETER_VALUE"


class Overloaded(RunstreamError):
    """The writer's queue is full; the caller should retry after a pause."""

    error_code = "TEMPORARILY_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(RunstreamError):
    """Settings or the environment make the server unable to start."""


class StoreError(RunstreamError):
    """The database refused or failed an operation that should have worked."""


HTTP_STATUS: dict[type[RunstreamError], int] = {
    InvalidParameter: 400,
    AlreadyExists: 400,
    NotFound: 404,
    InvalidState: 400,
    RequestError: 400,
    Overloaded: 503,
    StoreError: 500,
    ConfigurationError: 500,
    RunstreamError: 500,
}


def http_status(error: RunstreamError) -> int:
    """The HTTP status for an error: the entry of its nearest class."""
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
