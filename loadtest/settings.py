"""The load test's settings: read once at the edge, from options and variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from runstream.loadtest.targets import ServerKind
from runstream.loadtest.workload import DriverName, DriverOptions, Workload


class LoadtestSettings(BaseSettings):
    """Everything one load test is told; ``RUNSTREAM_LOADTEST_*`` variables too."""

    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_LOADTEST_", extra="forbid")

    workload: Workload = Field(default_factory=Workload)
    options: DriverOptions = Field(default_factory=DriverOptions)
    driver: DriverName = "native"
    url: str | None = Field(
        default=None, description="a running server; without it one is started"
    )
    server: ServerKind = Field(
        default="runstream", description="which server to start when no url is given"
    )
    db: str | None = Field(
        default=None,
        description="PostgreSQL URL for the runstream server started here; "
        "without it an embedded cluster is started",
    )
    scenario: str = "none"
    fault_at: float | None = Field(
        default=None, ge=0, description="s after start; default a third of the run"
    )
    fault_for: float = Field(default=1.0, gt=0, le=3600)
    overload_factor: int = Field(default=4, ge=1, le=64)
    drain_timeout: float = Field(default=60.0, gt=0, le=3600)
    proxy: bool = Field(default=False, description="route through the TCP proxy")
    progress: bool = False
    folder: Path | None = Field(
        default=None,
        description="where logs and worker files go; default a temp folder",
    )
