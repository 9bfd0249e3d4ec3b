"""``runstream loadtest``: run a workload, a fault scenario, or the benchmark table.

The exit status is 0 when every acknowledged point is stored exactly once
and nothing is left unacknowledged, 1 when not (or when a server, database
or worker failed), 2 for bad options.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from runstream.loadtest.compare import compare, markdown_table
from runstream.loadtest.errors import LoadtestError
from runstream.loadtest.progress import LiveProgress
from runstream.loadtest.report import write_html, write_json
from runstream.loadtest.runner import run_loadtest
from runstream.loadtest.scenarios import SCENARIOS
from runstream.loadtest.settings import LoadtestSettings
from runstream.loadtest.workload import DriverOptions, Workload

_WORKLOAD = (
    "workers", "runs", "keys", "rate", "duration", "steps", "params", "tags",
    "model_bytes",
)  # fmt: skip
_OPTIONS = ("batch_points", "max_in_flight", "request_timeout", "retry_for")


@click.command("loadtest")
@click.option(
    "--workers", type=int, default=4, show_default=True, help="worker processes (ranks)"
)
@click.option("--runs", type=int, default=1, show_default=True, help="runs per worker")
@click.option("--keys", type=int, default=100, show_default=True, help="keys per run")
@click.option(
    "--rate",
    type=float,
    default=0.0,
    show_default=True,
    help="points/s per worker; 0 = as fast as possible",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="seconds of logging [10 unless --steps is given]",
)
@click.option("--steps", type=int, default=None, help="steps per series")
@click.option("--params", type=int, default=0, show_default=True, help="params per run")
@click.option("--tags", type=int, default=0, show_default=True, help="tags per run")
@click.option(
    "--model-bytes",
    type=int,
    default=0,
    show_default=True,
    help="upload one model file of this size per run",
)
@click.option(
    "--driver",
    type=click.Choice(["runstream", "native", "mlflow"]),
    default="native",
    show_default=True,
)
@click.option("--url", default=None, help="a running server; without it one is started")
@click.option(
    "--server",
    type=click.Choice(["runstream", "mlflow"]),
    default="runstream",
    show_default=True,
    help="the server to start (or that --url is)",
)
@click.option(
    "--db",
    default=None,
    help="PostgreSQL URL for the started runstream server [embedded]",
)
@click.option(
    "--scenario", type=click.Choice(list(SCENARIOS)), default="none", show_default=True
)
@click.option(
    "--fault-at",
    type=float,
    default=None,
    help="seconds into the run [a third of --duration]",
)
@click.option(
    "--fault-for",
    type=float,
    default=1.0,
    show_default=True,
    help="seconds the fault lasts",
)
@click.option("--overload-factor", type=int, default=4, show_default=True)
@click.option("--batch-points", type=int, default=10_000, show_default=True)
@click.option("--max-in-flight", type=int, default=4, show_default=True)
@click.option("--request-timeout", type=float, default=30.0, show_default=True)
@click.option("--retry-for", type=float, default=120.0, show_default=True)
@click.option(
    "--drain-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="seconds workers may flush after logging",
)
@click.option(
    "--proxy/--no-proxy",
    default=False,
    help="route through the TCP proxy even without a network fault",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None)
@click.option(
    "--folder",
    type=click.Path(path_type=Path),
    default=None,
    help="keep logs and worker files here",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="live display [on when stderr is a terminal]",
)
@click.option(
    "--compare",
    "compare_setups",
    is_flag=True,
    help="run the benchmark table: each server with each client",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(path_type=Path),
    default=None,
    help="with --compare: write the table here",
)
@click.option("-v", "--verbose", is_flag=True, help="log at INFO")
def loadtest_command(**values: Any) -> None:
    """Load-test a tracking server with a simulated distributed training job."""
    logging.basicConfig(level=logging.INFO if values["verbose"] else logging.WARNING)
    console = Console(stderr=True)
    settings = _settings(values)
    show = values["progress"] if values["progress"] is not None else console.is_terminal
    try:
        if values["compare_setups"]:
            passed = asyncio.run(_compare(settings, values))
        else:
            passed = asyncio.run(_one(settings, values, console, show))
    except LoadtestError as exc:
        raise click.ClickException(str(exc)) from exc
    if not passed:
        raise SystemExit(1)


def _settings(values: dict[str, Any]) -> LoadtestSettings:
    if values["duration"] is None and values["steps"] is None:
        values["duration"] = 10.0
    try:
        return LoadtestSettings(
            workload=Workload(**{k: values[k] for k in _WORKLOAD}),
            options=DriverOptions(**{k: values[k] for k in _OPTIONS}),
            **{
                k: values[k]
                for k in (
                    "driver",
                    "url",
                    "server",
                    "db",
                    "scenario",
                    "fault_at",
                    "fault_for",
                    "overload_factor",
                    "drain_timeout",
                    "proxy",
                    "folder",
                )
            },
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(e['loc'][-1]).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(problems) from None


async def _one(
    settings: LoadtestSettings, values: dict[str, Any], console: Console, show: bool
) -> bool:
    title = f"{settings.scenario} · {settings.driver} → {settings.server}"
    if show:
        with LiveProgress(title, console=console) as display:
            result = await run_loadtest(settings, display=display)
    else:
        result = await run_loadtest(settings)
    await _write(result, values)
    _summary(console, result)
    return bool(result["passed"])


async def _compare(settings: LoadtestSettings, values: dict[str, Any]) -> bool:
    rows = await compare(settings)
    table = markdown_table(rows)
    click.echo(table)
    if values["markdown_path"] is not None:
        await asyncio.to_thread(values["markdown_path"].write_text, table)
    results = [row["result"] for row in rows if "result" in row]
    if values["json_path"] is not None:
        document = {
            "passed": all(r["passed"] for r in results),
            "missing": sum(r["missing"] for r in results),
            "duplicated": sum(r["duplicated"] for r in results),
            "setups": rows,
        }
        await asyncio.to_thread(write_json, document, values["json_path"])
    return all(result["passed"] for result in results)


async def _write(result: dict[str, Any], values: dict[str, Any]) -> None:
    if values["json_path"] is not None:
        await asyncio.to_thread(write_json, result, values["json_path"])
    if values["html_path"] is not None:
        await asyncio.to_thread(write_html, result, values["html_path"])


def _summary(console: Console, result: dict[str, Any]) -> None:
    points = result["points"]
    verdict = "[green]passed[/]" if result["passed"] else "[red]FAILED[/]"
    latency = result["latency"]["log_call"]
    console.print(
        f"{verdict}: {points['acked']:,} of {points['offered']:,} points acknowledged, "
        f"{result['missing']} missing, {result['duplicated']} duplicated, "
        f"{points['unacked']:,} unacknowledged; "
        f"{result['throughput']['acked_per_second']:,.0f} points/s acknowledged; "
        f"log call p99 {latency['p99'] * 1e6:.1f} µs"
    )
    for error in result["errors"][:5]:
        console.print(f"  {error}", markup=False)
