"""The simulated training job: who logs what, how fast, and for how long.

A workload is N workers (the ranks of a training job), each owning R runs
and logging K metric keys to each of them. Every series (one run's key) gets
the steps 0, 1, 2, ... once each, so a stored point is identified by its
series and step, and gaps and duplicates can be counted exactly. The value of
a point is a hash of (worker, run, key, step): it needs all 53 bits of a
float64, as a real loss does, and the verifier recomputes it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DriverName = Literal["runstream", "native", "mlflow"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(11)


class Workload(BaseModel):
    """What every worker logs; shared by all drivers so runs compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default=4, ge=1, le=256)
    runs: int = Field(default=1, ge=1, le=1000, description="runs per worker")
    keys: int = Field(default=100, ge=1, le=10_000, description="keys per run")
    rate: float = Field(
        default=0.0, ge=0, description="points/s per worker; 0 = as fast as possible"
    )
    duration: float | None = Field(default=10.0, gt=0, le=86_400, description="s")
    steps: int | None = Field(default=None, ge=1, description="steps per series")
    params: int = Field(default=0, ge=0, le=100, description="params per run")
    tags: int = Field(default=0, ge=0, le=100, description="tags per run")
    model_bytes: int = Field(
        default=0, ge=0, le=1 << 30, description="size of one model file per run"
    )

    @model_validator(mode="after")
    def _bounded(self) -> Workload:
        if self.duration is None and self.steps is None:
            raise ValueError("a workload needs a duration or a number of steps")
        return self

    @property
    def series_per_worker(self) -> int:
        return self.runs * self.keys

    @property
    def step_interval(self) -> float:
        """Seconds between two steps of one worker; 0 when unpaced."""
        if self.rate == 0:
            return 0.0
        return self.series_per_worker / self.rate


class DriverOptions(BaseModel):
    """How a driver batches and retries; the same for every worker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_points: int = Field(default=10_000, ge=1, le=1_000_000)
    batch_age: float = Field(default=0.2, gt=0, le=60, description="s")
    max_in_flight: int = Field(default=4, ge=1, le=256)
    max_pending: int = Field(
        default=8, ge=1, le=10_000, description="batches cut but not yet sent"
    )
    request_timeout: float = Field(default=30.0, gt=0, le=3600, description="s")
    retry_for: float = Field(
        default=120.0, gt=0, le=86_400, description="s a batch is retried"
    )


def key_name(key: int) -> str:
    return f"metric/{key:04d}"


def seeds(worker: int, run: int, keys: int) -> np.ndarray:
    """One seed per key of a run, as uint64."""
    base = worker * 1_000_003 + run * 10_007
    return (base + 101 * np.arange(keys, dtype=np.uint64)).astype(np.uint64)


def point_values(seed: np.ndarray | np.uint64, steps: np.ndarray | int) -> np.ndarray:
    """The values of points: a float in [0, 1) per (seed, step), exact to recompute."""
    with np.errstate(over="ignore"):
        mixed = (np.asarray(steps, dtype=np.uint64) + seed) * _GOLDEN
    return (mixed >> _SHIFT).astype(np.float64) / float(2**53)
