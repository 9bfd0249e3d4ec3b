"""The seam between a worker's training loop and the way it reaches a server.

A driver takes points one call at a time (``log``, no I/O) and delivers them
by its own means: raw native batches, runstream's client, or the real
``mlflow`` client. It records every acknowledged step range in ``Acks`` so
the verifier can compare what the server said it stored with what it holds.

Series are numbered within a worker: series ``s`` is run ``s // keys``,
key ``s % keys``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from runstream.loadtest.measure import Histogram
from runstream.loadtest.workload import DriverName, DriverOptions


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    artifact_uri: str


@dataclass
class Acks:
    """What a worker's server acknowledged: step ranges per series, and counters."""

    series: int
    ranges: list[list[tuple[int, int]]] = field(init=False)
    points: int = 0
    retries: int = 0
    overloaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    latency: Histogram = field(default_factory=Histogram)

    def __post_init__(self) -> None:
        self.ranges = [[] for _ in range(self.series)]

    def add(self, series: int, start: int, stop: int) -> None:
        """Steps ``start`` up to ``stop`` (exclusive) of a series are acknowledged."""
        self.ranges[series].append((start, stop))
        self.points += stop - start

    def error(self, message: str) -> None:
        # Keep the first few: a fault can fail thousands of requests alike.
        if len(self.errors) < 20:
            self.errors.append(message)

    def merged(self) -> list[list[list[int]]]:
        """The ranges of each series, sorted and merged where they touch."""
        result = []
        for ranges in self.ranges:
            merged: list[list[int]] = []
            for start, stop in sorted(ranges):
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], stop)
                else:
                    merged.append([start, stop])
            result.append(merged)
        return result


class Driver(abc.ABC):
    """Delivers one worker's points; an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        runs: list[RunInfo],
        keys: list[str],
        options: DriverOptions,
        acks: Acks,
    ) -> None:
        self.url = url.rstrip("/")
        self.runs = runs
        self.keys = keys
        self.options = options
        self.acks = acks

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections; called once before the first point."""

    @abc.abstractmethod
    def log(self, series: int, step: int, timestamp: int, value: float) -> bool:
        """Take one point without I/O; True when the caller must ``await wait()``."""

    @abc.abstractmethod
    async def wait(self) -> None:
        """Block until the driver can take more points (backpressure)."""

    @abc.abstractmethod
    async def log_extras(
        self, run: RunInfo, *, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        """Log a run's params and tags, retrying like points."""

    @abc.abstractmethod
    async def upload_model(self, run: RunInfo, data: bytes) -> None:
        """Upload one model file to the run's artifacts."""

    @abc.abstractmethod
    async def flush(self, timeout: float) -> None:
        """Deliver everything taken so far, waiting at most ``timeout`` seconds."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; points not flushed are abandoned."""

    @property
    def acknowledged(self) -> int:
        """Points acknowledged so far, for progress."""
        return self.acks.points

    @property
    def in_flight(self) -> int:
        """Points taken but not yet acknowledged, for progress."""
        return 0

    async def __aenter__(self) -> Driver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def driver_class(name: DriverName) -> type[Driver]:
    """The driver class for a name; imports its dependencies lazily."""
    if name == "native":
        from runstream.loadtest.native import NativeDriver

        return NativeDriver
    if name == "mlflow":
        from runstream.loadtest.mlflow_driver import MlflowDriver

        return MlflowDriver
    if name == "runstream":
        from runstream.loadtest.client_driver import ClientDriver

        return ClientDriver
    raise ValueError(f"driver {name!r} is not one of native, runstream, mlflow")
