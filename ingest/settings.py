"""The server's settings, read once at the edge: options and RUNSTREAM_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Everything ``runstream server`` can be told; passed down, never re-read."""

    model_config = SettingsConfigDict(env_prefix="RUNSTREAM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=0, le=65535)
    db: str | None = Field(
        default=None,
        description="PostgreSQL URL; without it an embedded cluster is started",
    )
    data_dir: Path | None = Field(
        default=None, description="folder of the embedded cluster"
    )
    artifacts_root: Path | None = Field(
        default=None, description="folder behind the mlflow-artifacts proxy"
    )
    default_artifact_root: str = Field(
        default="mlflow-artifacts:",
        description="URI prefix of new experiments' artifact locations",
    )
    workers: int = Field(default=1, ge=1, le=64)
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted besides local and private ones; * for any",
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins whose pages may write to the API; * for any",
    )

    # The writer: how many transactions run at once, and its bounds.
    writer_connections: int = Field(default=2, ge=1, le=32)
    pool_size: int = Field(default=8, ge=2, le=100)
    max_queue_points: int = Field(default=4_000_000, ge=1)
    max_group_points: int = Field(default=400_000, ge=1)
    retry_after_seconds: float = Field(default=1.0, gt=0)
    batch_id_retention_hours: float = Field(default=168.0, gt=0)
    max_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    shutdown_timeout: float = Field(default=30.0, gt=0)
    access_log: bool = Field(
        default=False, description="log every request (costly at high request rates)"
    )
    detect_blocking: bool = Field(
        default=False,
        description="fail any blocking call in the event loop (blockbuster; tests)",
    )
