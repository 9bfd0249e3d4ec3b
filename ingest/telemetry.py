"""Prometheus counters of the ingest path, exposed at /metrics.

Each server process keeps its own registry; with --workers N a scrape sees
the process that answered it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.points = Counter(
            "runstream_points_committed",
            "Metric points committed.",
            registry=self.registry,
        )
        self.batches = Counter(
            "runstream_batches_committed",
            "Batches committed (retries excluded).",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "runstream_batches_duplicate",
            "Retried batches acknowledged without a write.",
            registry=self.registry,
        )
        self.group_size = Histogram(
            "runstream_group_size",
            "Requests committed together in one transaction.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "runstream_commit_seconds",
            "Duration of one group commit.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.queue_points = Gauge(
            "runstream_queue_points",
            "Points waiting for the writer.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "runstream_requests_rejected",
            "Requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def observe_commit(
        self, *, batches: int, points: int, group: int, seconds: float
    ) -> None:
        self.points.inc(points)
        self.batches.inc(batches)
        self.group_size.observe(group)
        self.commit_seconds.observe(seconds)
