"""runstream's tracking client: an async core and MLflow's fluent API.

The fluent functions are the everyday entry; ``AsyncClient`` is the core
they run on, for async programs and for logging into runs directly.
"""

from runstream.client.client import AsyncClient
from runstream.client.entities import Experiment, Run, RunData, RunInfo
from runstream.client.errors import (
    ConfigurationError,
    FlushError,
    InvalidInput,
    NotFound,
    RequestRejected,
    ServerError,
    SpoolError,
    TrackingError,
    Unavailable,
)
from runstream.client.fluent import (
    ActiveRun,
    active_run,
    end_run,
    flush,
    get_run,
    get_tracking_uri,
    last_active_run_id,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    set_experiment,
    set_tag,
    set_tags,
    set_tracking_uri,
    start_run,
)
from runstream.client.report import FlushReport
from runstream.client.run import RunHandle
from runstream.client.settings import ClientSettings

__all__ = [
    "ActiveRun",
    "AsyncClient",
    "ClientSettings",
    "ConfigurationError",
    "Experiment",
    "FlushError",
    "FlushReport",
    "InvalidInput",
    "NotFound",
    "RequestRejected",
    "Run",
    "RunData",
    "RunHandle",
    "RunInfo",
    "ServerError",
    "SpoolError",
    "TrackingError",
    "Unavailable",
    "active_run",
    "end_run",
    "flush",
    "get_run",
    "get_tracking_uri",
    "last_active_run_id",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "set_experiment",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]
