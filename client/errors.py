"""Errors of the tracking client, split by who must act.

    TrackingError
    ├── InvalidInput          the caller's input: a non-numeric value, a bad key,
    │                         a bad label; raised at the call in strict mode only
    ├── ConfigurationError    settings or environment: no tracking URI, a bad
    │                         policy name; raised when the client is created
    ├── ServerError           the server or the network
    │   ├── RequestRejected   a 4xx answer: permanent, never retried; carries
    │   │   │                 the status, MLflow error_code and message
    │   │   └── NotFound      404 RESOURCE_DOES_NOT_EXIST
    │   └── Unavailable       connection errors, 5xx, 429 or 503 that outlived
    │                         the retries or the deadline
    ├── SpoolError            the local spool could not be written or read
    └── FlushError            flush() found failures (strict mode); carries the
                              FlushReport

Outside strict mode nothing but ConfigurationError and the errors of the
explicit management calls (create_experiment, get_run, ...) reaches the
caller: logging calls count and log their failures instead, and a run
created while the server is unreachable starts offline rather than raise
Unavailable (a 4xx refusal still raises).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runstream.client.report import FlushReport


class TrackingError(Exception):
    """Base of every error the client raises on purpose."""


class InvalidInput(TrackingError, ValueError):
    """A logged value, key or label breaks the rules; the message names it."""


class ConfigurationError(TrackingError):
    """The settings make the client unable to work."""


class ServerError(TrackingError):
    """The server refused or could not be reached."""


class RequestRejected(ServerError):
    """The server answered 4xx: the request is wrong and retrying won't help."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class NotFound(RequestRejected):
    """The experiment, run or series does not exist."""


class Unavailable(ServerError):
    """The server did not answer in time, or kept answering 5xx, 429 or 503."""


class SpoolError(TrackingError):
    """The spool folder or one of its segments failed."""


class FlushError(TrackingError):
    """flush() found points that were rejected or not acknowledged in time."""

    def __init__(self, report: FlushReport) -> None:
        super().__init__(report.summary())
        self.report = report
