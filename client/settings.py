"""The client's settings: one object, read once from arguments and environment.

Every field can be set with a ``RUNSTREAM_<FIELD>`` environment variable.
MLflow's names are honoured where a user would expect them:
``MLFLOW_TRACKING_URI``, ``MLFLOW_RUN_ID`` and ``MLFLOW_EXPERIMENT_NAME``
apply when the runstream variable is unset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from runstream.client.errors import ConfigurationError
from runstream.client.transport import backoff

LABEL_PATTERN = r"^[\w.\-:/]{0,64}$"


def default_spool_dir() -> Path:
    """The user's cache folder, as the platform names it, plus runstream/spool."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData/Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "runstream" / "spool"


class ClientSettings(BaseSettings):
    """How the client reaches the server, batches, retries and spills."""

    model_config = SettingsConfigDict(
        env_prefix="RUNSTREAM_", extra="ignore", populate_by_name=True
    )

    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "tracking_uri", "RUNSTREAM_TRACKING_URI", "MLFLOW_TRACKING_URI"
        ),
    )
    run_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("run_id", "RUNSTREAM_RUN_ID", "MLFLOW_RUN_ID"),
    )
    experiment_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "experiment_name", "RUNSTREAM_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_NAME"
        ),
    )
    # A per-process label kept with every point, such as the rank.
    label: str = Field(default="", pattern=LABEL_PATTERN)

    # A run's buffer is sealed into a batch at this many points, or when its
    # oldest point is this old.
    flush_points: int = Field(default=100_000, ge=1, le=5_000_000)
    flush_age_ms: int = Field(default=500, ge=1)
    max_in_flight: int = Field(default=4, ge=1, le=64)

    # Bytes of sealed batches not yet acknowledged that may stay in memory;
    # past it the overflow policy applies.
    max_buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    overflow: Literal["spill", "block"] = "spill"
    # How long the "block" policy holds a caller before spilling anyway.
    block_timeout: float = Field(default=60.0, gt=0)
    spool_dir: Path = Field(default_factory=default_spool_dir)
    spool_segment_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    request_timeout: float = Field(default=30.0, gt=0)
    retry_initial: float = Field(default=0.1, gt=0)
    retry_max: float = Field(default=10.0, gt=0)
    # Attempts for the management calls (runs/create, log-batch of params...);
    # metric batches are retried until they are acknowledged or spooled.
    call_attempts: int = Field(default=7, ge=1)
    exit_timeout: float = Field(default=10.0, ge=0)

    strict: bool = False

    def retry_delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based), with jitter."""
        return backoff(attempt, initial=self.retry_initial, maximum=self.retry_max)

    @field_validator("tracking_uri")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value


def load_settings(**overrides: object) -> ClientSettings:
    """Settings from the environment with the given overrides (None means unset).

    Raises ConfigurationError naming the field when a value is invalid.
    """
    given: dict[str, Any] = {
        name: value for name, value in overrides.items() if value is not None
    }
    try:
        return ClientSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigurationError(f"invalid client settings: {problems}") from exc
