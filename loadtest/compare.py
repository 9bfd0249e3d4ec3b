"""The benchmark table: the same workload through each server and client.

Setups, run one after the other on a fresh server each:

1. runstream's server with runstream's client;
2. runstream's server with raw native batches (the client's upper bound);
3. runstream's server with the real ``mlflow`` client;
4. MLflow's own server (on PostgreSQL, or SQLite without psycopg2) with the
   ``mlflow`` client, when it starts.

Ratios are acknowledged points per second over the baseline: MLflow's
server with its client when it ran, else runstream's server with the
mlflow client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from runstream.loadtest.errors import LoadtestError
from runstream.loadtest.runner import Display, run_loadtest
from runstream.loadtest.settings import LoadtestSettings

logger = logging.getLogger(__name__)

SETUPS: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "runstream server + runstream client",
        {"server": "runstream", "driver": "runstream"},
    ),
    ("runstream server + native batches", {"server": "runstream", "driver": "native"}),
    ("runstream server + mlflow client", {"server": "runstream", "driver": "mlflow"}),
    ("MLflow server + mlflow client", {"server": "mlflow", "driver": "mlflow"}),
)
BASELINES = ("MLflow server + mlflow client", "runstream server + mlflow client")


async def compare(
    settings: LoadtestSettings,
    *,
    display_for: Callable[[str], Display | None] | None = None,
) -> list[dict[str, Any]]:
    """Run every setup on the settings' workload; one row per setup.

    A setup that cannot run (MLflow's server does not start, say) gives a
    row with ``error`` set instead of failing the comparison.
    """
    rows: list[dict[str, Any]] = []
    for name, update in SETUPS:
        display = display_for(name) if display_for else None
        try:
            result = await run_loadtest(
                settings.model_copy(update={**update, "url": None}), display=display
            )
        except LoadtestError as exc:
            logger.warning("%s did not run: %s", name, exc)
            rows.append({"setup": name, "error": str(exc)})
            continue
        rows.append({"setup": name, "result": result})
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    rates = {
        row["setup"]: row["result"]["throughput"]["acked_per_second"]
        for row in rows
        if "result" in row
    }
    baseline = next((b for b in BASELINES if rates.get(b)), None)
    for row in rows:
        if baseline is None or "result" not in row:
            row["ratio"] = None
            continue
        row["baseline"] = baseline
        row["ratio"] = round(rates[row["setup"]] / rates[baseline], 1)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's table: throughput, ratio, latencies, resources, the verdict."""
    head = (
        "| setup | acked points/s | ratio | log call p50 / p99 / p99.9 | ack p99 "
        "| server CPU s | server peak RSS | PostgreSQL peak | bytes/point "
        "| missing | duplicated |\n"
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for row in rows:
        if "result" not in row:
            lines.append(
                f"| {row['setup']} | not run: {row['error'][:80]} |" + " |" * 9
            )
            continue
        r = row["result"]
        log, ack = r["latency"]["log_call"], r["latency"]["ack"]
        server, postgres = r["resources"]["server"], r["resources"]["postgres"]
        ratio = f"{row['ratio']}x" if row.get("ratio") is not None else ""
        postgres_rss = (
            _mib(postgres["peak_rss_bytes"]) if postgres["peak_rss_bytes"] else "n/a"
        )
        lines.append(
            f"| {row['setup']} | {r['throughput']['acked_per_second']:,.0f} | {ratio} "
            f"| {_us(log['p50'])} / {_us(log['p99'])} / {_us(log['p999'])} "
            f"| {_us(ack['p99']) if ack['count'] else 'n/a'} "
            f"| {server['cpu_seconds']:.1f} | {_mib(server['peak_rss_bytes'])} "
            f"| {postgres_rss} "
            f"| {r['storage']['bytes_per_point'] or 'n/a'} "
            f"| {r['missing']} | {r['duplicated']} |"
        )
    return head + "\n".join(lines) + "\n"


def _us(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"
