"""The result of a load test: one JSON-ready dict, and the timeline behind it.

Top-level keys: ``passed``, ``missing``, ``duplicated`` (the verdict),
``scenario`` (fault times and recovery), ``driver``, ``target``,
``workload``, ``options``, ``points``, ``requests``, ``throughput``,
``latency`` (seconds), ``resources`` (CPU seconds, peak bytes),
``storage``, ``verification``, ``errors``, ``timeline`` and
``histograms`` (for the report's plots).
"""

from __future__ import annotations

from typing import Any

from runstream.loadtest.measure import Histogram, TreeSampler, TreeUsage
from runstream.loadtest.scenarios import FaultContext
from runstream.loadtest.settings import LoadtestSettings
from runstream.loadtest.targets import Target
from runstream.loadtest.verify import Verification
from runstream.loadtest.workload import DriverOptions, Workload

COLUMNS = (
    "t", "offered", "acked", "retries", "overloaded", "in_flight",
    "server_rss", "postgres_rss", "server_cpu", "postgres_cpu", "worker_rss",
)  # fmt: skip


class Timeline:
    """Rows of cumulative counters and resource samples, one per tick."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def add(
        self,
        t: float,
        totals: dict[str, int],
        server: TreeSampler,
        postgres: TreeSampler,
    ) -> dict[str, float]:
        row = {
            "t": round(t, 3),
            "offered": totals["offered"],
            "acked": totals["acked"],
            "retries": totals["retries"],
            "overloaded": totals["overloaded"],
            "in_flight": totals["in_flight"],
            "server_rss": server.usage.last_bytes,
            "postgres_rss": postgres.usage.last_bytes,
            "server_cpu": round(server.usage.cpu_seconds, 3),
            "postgres_cpu": round(postgres.usage.cpu_seconds, 3),
            "worker_rss": totals["rss"],
        }
        self.rows.append(row)
        return row

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(COLUMNS),
            "rows": [[row[c] for c in COLUMNS] for row in self.rows],
        }


def recovery(rows: list[dict[str, float]], restored_at: float | None) -> dict[str, Any]:
    """How acknowledgements came back after a fault was repaired (seconds).

    ``first_ack``: until the first new acknowledgement; ``caught_up``: until
    everything offered before the repair was acknowledged; ``longest_stall``:
    the longest stretch of the whole run with points waiting and no ack.
    """
    result: dict[str, Any] = {"first_ack": None, "caught_up": None}
    result["longest_stall"] = _longest_stall(rows)
    if restored_at is None:
        return result
    before = [row for row in rows if row["t"] <= restored_at]
    acked = before[-1]["acked"] if before else 0
    offered = before[-1]["offered"] if before else 0
    for row in rows:
        if row["t"] <= restored_at:
            continue
        if result["first_ack"] is None and row["acked"] > acked:
            result["first_ack"] = round(row["t"] - restored_at, 3)
        if row["acked"] >= offered:
            result["caught_up"] = round(row["t"] - restored_at, 3)
            break
    return result


def _longest_stall(rows: list[dict[str, float]]) -> float:
    longest = 0.0
    since = None
    previous = 0.0
    for row in rows:
        waiting = row["offered"] > row["acked"]
        if row["acked"] > previous or not waiting:
            since = None
        elif since is None:
            since = row["t"]
        else:
            longest = max(longest, row["t"] - since)
        previous = row["acked"]
    return round(longest, 3)


def build_result(
    *,
    settings: LoadtestSettings,
    workload: Workload,
    options: DriverOptions,
    target: Target,
    reports: list[dict[str, Any]],
    verification: Verification,
    timeline: Timeline,
    context: FaultContext,
    server: TreeUsage,
    postgres: TreeUsage,
    storage: tuple[int | None, int | None],
) -> dict[str, Any]:
    """Assemble the JSON result; ``passed`` needs zero of every bad count."""
    offered = sum(int(r["offered"]) for r in reports)
    acked = sum(int(r["acked"]) for r in reports)
    unacked = offered - acked
    log_latency, ack_latency = Histogram(), Histogram()
    for report in reports:
        log_latency.merge(Histogram.from_json(report["log_latency"]))
        ack_latency.merge(Histogram.from_json(report["ack_latency"]))
    passed = verification.passed and unacked == 0
    return {
        "passed": passed,
        "missing": verification.missing,
        "duplicated": verification.duplicated,
        "scenario": _scenario(settings, context, timeline),
        "driver": settings.driver,
        "target": {"kind": target.kind, "url": target.url},
        "workload": workload.model_dump(),
        "options": options.model_dump(),
        "points": {
            "offered": offered,
            "acked": acked,
            "unacked": unacked,
            "stored": verification.stored,
            "unexpected": verification.unexpected,
            "corrupted": verification.corrupted,
            "unacked_stored": verification.unacked_stored,
        },
        "requests": {
            name: sum(int(r[name]) for r in reports)
            for name in ("retries", "overloaded", "duplicates", "rejected")
        },
        "throughput": _throughput(timeline.rows, offered, acked),
        "latency": {"log_call": log_latency.summary(), "ack": ack_latency.summary()},
        "resources": {
            "server": server.to_json(),
            "postgres": postgres.to_json(),
            "workers": {
                "peak_rss_bytes": max(
                    (int(r["peak_rss_bytes"]) for r in reports), default=0
                ),
                "count": len(reports),
            },
        },
        "storage": _storage(storage, acked),
        "verification": verification.to_json(),
        "errors": [e for r in reports for e in r["errors"]][:20],
        "timeline": timeline.to_json(),
        "histograms": {"log_call": log_latency.to_json(), "ack": ack_latency.to_json()},
    }


def _scenario(
    settings: LoadtestSettings, context: FaultContext, timeline: Timeline
) -> dict[str, Any]:
    return {
        "name": settings.scenario,
        "fault_at": context.fault_at,
        "fault_for": context.fault_for,
        "injected_at": context.injected_at,
        "restored_at": context.restored_at,
        "restore_seconds": context.restore_seconds,
        "recovery": recovery(timeline.rows, context.restored_at),
        "events": context.events,
    }


def _throughput(
    rows: list[dict[str, float]], offered: int, acked: int
) -> dict[str, Any]:
    """Points per second: offered over the logging time, acked until the last ack."""
    logging_end = next((r["t"] for r in rows if r["offered"] >= offered), None)
    acking_end = next((r["t"] for r in rows if r["acked"] >= acked), None)
    logging_end = logging_end or (rows[-1]["t"] if rows else 0.0)
    acking_end = acking_end or (rows[-1]["t"] if rows else 0.0)
    return {
        "logging_seconds": logging_end,
        "acking_seconds": acking_end,
        "offered_per_second": round(offered / logging_end, 1) if logging_end else 0.0,
        "acked_per_second": round(acked / acking_end, 1) if acking_end else 0.0,
    }


def _storage(storage: tuple[int | None, int | None], acked: int) -> dict[str, Any]:
    before, after = storage
    if before is None or after is None or not acked:
        return {"bytes": None, "bytes_per_point": None}
    grown = after - before
    return {"bytes": grown, "bytes_per_point": round(grown / acked, 2)}
