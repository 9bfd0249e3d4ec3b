"""Measurements: latency histograms and CPU and memory of process trees.

The histogram records nanoseconds in buckets of 1/8 of a power of two (at
most 9% wide), cheap enough to time every log call, and merges across
workers by adding counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_SUB_BITS = 3
_SUB = 1 << _SUB_BITS


class Histogram:
    """Counts of durations in nanoseconds, in logarithmic buckets."""

    __slots__ = ("counts", "max_ns", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        if ns < _SUB:
            bucket = ns
        else:
            shift = ns.bit_length() - _SUB_BITS - 1
            bucket = ((shift + 1) << _SUB_BITS) + ((ns >> shift) & (_SUB - 1))
        counts = self.counts
        counts[bucket] = counts.get(bucket, 0) + 1
        self.total += 1
        self.max_ns = max(self.max_ns, ns)

    def merge(self, other: Histogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.total += other.total
        self.max_ns = max(self.max_ns, other.max_ns)

    def quantile(self, q: float) -> float:
        """The q-quantile in seconds (the upper edge of its bucket); 0 when empty."""
        if self.total == 0:
            return 0.0
        rank = q * self.total
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(bucket_upper(bucket), self.max_ns) / 1e9
        return self.max_ns / 1e9

    def summary(self) -> dict[str, float | int]:
        return {
            "count": self.total,
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "max": self.max_ns / 1e9,
        }

    def to_json(self) -> dict[str, object]:
        return {
            "counts": [[b, c] for b, c in sorted(self.counts.items())],
            "max_ns": self.max_ns,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Histogram:
        histogram = cls()
        for bucket, count in data["counts"]:  # type: ignore[attr-defined]
            histogram.counts[int(bucket)] = int(count)
            histogram.total += int(count)
        histogram.max_ns = int(data["max_ns"])  # type: ignore[call-overload]
        return histogram


def bucket_upper(bucket: int) -> int:
    """The exclusive upper edge of a bucket, in nanoseconds."""
    if bucket < _SUB:
        return bucket + 1
    shift = (bucket >> _SUB_BITS) - 1
    mantissa = _SUB + (bucket & (_SUB - 1))
    return (mantissa + 1) << shift


@dataclass
class TreeUsage:
    """CPU seconds and peak memory of one process tree over a run."""

    cpu_seconds: float = 0.0
    peak_bytes: int = 0
    last_bytes: int = 0
    _cpu_by_pid: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, float | int]:
        return {
            "cpu_seconds": round(self.cpu_seconds, 3),
            "peak_rss_bytes": self.peak_bytes,
        }


class TreeSampler:
    """Samples a process and its children: CPU time used and resident memory.

    ``root`` returns the current root pid (it changes when a server restarts)
    or None while there is none. Memory is the sum of proportional set sizes
    where the kernel reports them, so PostgreSQL's shared buffers count once.
    Sampling reads /proc: call it from a thread, not the event loop.
    """

    def __init__(self, root: object, *, proportional: bool = False) -> None:
        self._root = root
        self._proportional = proportional
        self.usage = TreeUsage()
        self._baseline: dict[int, float] = {}
        self._started = False

    def sample(self) -> None:
        pid = self._root() if callable(self._root) else self._root
        if pid is None:
            return
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        memory = 0
        for process in processes:
            try:
                times = process.cpu_times()
                memory += self._memory(process)
            except psutil.Error:
                continue
            cpu = times.user + times.system
            if not self._started:
                self._baseline[process.pid] = cpu
            key = process.pid
            start = self._baseline.get(key, 0.0)
            self.usage._cpu_by_pid[key] = cpu - start
        self._started = True
        self.usage.cpu_seconds = sum(self.usage._cpu_by_pid.values())
        self.usage.last_bytes = memory
        self.usage.peak_bytes = max(self.usage.peak_bytes, memory)

    def _memory(self, process: psutil.Process) -> int:
        if self._proportional:
            try:
                return int(process.memory_full_info().pss)
            except (AttributeError, psutil.AccessDenied):
                pass
        return int(process.memory_info().rss)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server running on a data folder, if any."""
    try:
        first = (Path(data_dir) / "postmaster.pid").read_text().split("\n", 1)[0]
        return int(first)
    except (OSError, ValueError):
        return None
