"""One load test from start to verdict.

``run_loadtest`` starts (or reaches) the server, creates the runs, starts
the workers together, samples throughput and the server's and PostgreSQL's
CPU and memory while a scenario injects its fault, then verifies every
series and returns the result (see ``result.build_result`` for its shape).
Everything it starts it stops, also on error or cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from runstream.loadtest.errors import TargetError
from runstream.loadtest.measure import TreeSampler
from runstream.loadtest.pool import WorkerPool
from runstream.loadtest.proxy import TcpProxy
from runstream.loadtest.result import Timeline, build_result
from runstream.loadtest.scenarios import FaultContext, scenario
from runstream.loadtest.settings import LoadtestSettings
from runstream.loadtest.targets import (
    EmbeddedDatabase,
    ExternalServer,
    MlflowServer,
    RunstreamServer,
    Target,
)
from runstream.loadtest.verify import (
    Expected,
    Reader,
    Verification,
    check,
    history_reader,
    native_reader,
    sql_reader,
)
from runstream.loadtest.worker import WorkerSpec
from runstream.loadtest.workload import DriverOptions, Workload, key_name, seeds

logger = logging.getLogger(__name__)

TICK = 0.25
Display = Callable[[dict[str, Any]], None]


async def run_loadtest(
    settings: LoadtestSettings,
    *,
    target: Target | None = None,
    display: Display | None = None,
) -> dict[str, Any]:
    """Run one load test and return its result as a JSON-ready dict.

    Without ``target`` the server is started here (runstream on an embedded
    PostgreSQL unless ``settings.db`` or ``settings.url`` says otherwise) and
    stopped at the end. Raises ConfigurationError when the scenario cannot
    run against the target, TargetError or WorkerError when a process fails;
    lost or duplicated points are not errors but a result that did not pass.
    """
    fault = scenario(settings.scenario)
    workload, options = fault.adjust(
        settings.workload, settings.options, overload_factor=settings.overload_factor
    )
    async with contextlib.AsyncExitStack() as stack:
        folder = stack.enter_context(_folder(settings.folder))
        if target is None:
            target = await stack.enter_async_context(_own_target(settings, folder))
        assert target is not None, "given, or started just above"
        fault.check(target)
        url = target.url
        if fault.needs_proxy or settings.proxy:
            host, port = _host_port(target.url)
            proxy = await stack.enter_async_context(TcpProxy(host, port))
            url = proxy.url
        else:
            proxy = None
        runs = await create_runs(
            target.url, workers=workload.workers, runs=workload.runs
        )
        storage_before = await target.storage_bytes()
        pool = WorkerPool(
            _worker_specs(
                settings, workload, options, url=url, runs=runs, folder=folder
            ),
            folder=folder,
        )
        stack.push_async_callback(pool.kill)
        await pool.start()

        timeline = Timeline()
        server = TreeSampler(target.server_pid, proportional=True)
        postgres = TreeSampler(target.postgres_pid, proportional=True)
        await asyncio.to_thread(_sample, server, postgres)
        await pool.go()
        started = time.monotonic()
        duration = workload.duration or 0.0
        context = FaultContext(
            target=target,
            proxy=proxy,
            started=started,
            fault_at=settings.fault_at
            if settings.fault_at is not None
            else duration / 3,
            fault_for=settings.fault_for,
        )
        injector = asyncio.create_task(fault.run(context))
        stack.push_async_callback(_cancel, injector)
        await _monitor(
            pool,
            timeline,
            server,
            postgres,
            started,
            display,
            limit=_time_limit(settings, duration),
        )
        await injector

        reports = await pool.reports()
        verification = await _verify(target, reports, runs, keys=workload.keys)
        storage_after = await target.storage_bytes()
        return build_result(
            settings=settings,
            workload=workload,
            options=options,
            target=target,
            reports=reports,
            verification=verification,
            timeline=timeline,
            context=context,
            server=server.usage,
            postgres=postgres.usage,
            storage=(storage_before, storage_after),
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def create_runs(
    url: str, *, workers: int, runs: int
) -> list[list[tuple[str, str]]]:
    """Create one experiment and ``runs`` runs per worker with MLflow's REST API."""
    base = url.rstrip("/") + "/api/2.0/mlflow"
    name = f"loadtest-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        reply = await _post(session, base + "/experiments/create", {"name": name})
        experiment_id = reply["experiment_id"]
        limit = asyncio.Semaphore(16)

        async def create(worker: int, run: int) -> tuple[str, str]:
            body = {
                "experiment_id": experiment_id,
                "run_name": f"rank-{worker}-run-{run}",
                "start_time": int(time.time() * 1000),
                "tags": [{"key": "rank", "value": str(worker)}],
            }
            async with limit:
                info = (await _post(session, base + "/runs/create", body))["run"][
                    "info"
                ]
            return info["run_id"], info["artifact_uri"]

        created = await asyncio.gather(
            *(create(w, r) for w in range(workers) for r in range(runs))
        )
    return [created[w * runs : (w + 1) * runs] for w in range(workers)]


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as reply:
        if reply.status != 200:
            raise TargetError(
                f"POST {url}: HTTP {reply.status} {(await reply.text())[:300]}"
            )
        return await reply.json()


async def _monitor(
    pool: WorkerPool,
    timeline: Timeline,
    server: TreeSampler,
    postgres: TreeSampler,
    started: float,
    display: Display | None,
    *,
    limit: float,
) -> None:
    """Sample every TICK until the workers exit, or kill them at ``limit``."""
    deadline = started + limit
    while not pool.finished and time.monotonic() < deadline:
        await asyncio.sleep(TICK)
        await asyncio.to_thread(_sample, server, postgres)
        row = timeline.add(time.monotonic() - started, pool.totals(), server, postgres)
        if display is not None:
            display(row)
    await pool.wait(timeout=max(1.0, deadline - time.monotonic()))


def _sample(server: TreeSampler, postgres: TreeSampler) -> None:
    server.sample()
    postgres.sample()


def _time_limit(settings: LoadtestSettings, duration: float) -> float:
    """How long workers may run before they are killed: all bounds plus slack."""
    fault = (settings.fault_at or 0.0) + settings.fault_for + 60.0
    run = duration if settings.workload.duration else 3600.0
    return max(run, fault) + settings.drain_timeout + 30.0


def _expected(
    reports: list[dict[str, Any]], runs: list[list[tuple[str, str]]], keys: int
) -> list[Expected]:
    expected = []
    for report in reports:
        worker = int(report["worker"])
        for run, (run_id, _uri) in enumerate(runs[worker]):
            run_seeds = seeds(worker, run, keys)
            for key in range(keys):
                expected.append(
                    Expected(
                        run_id=run_id,
                        key=key_name(key),
                        seed=int(run_seeds[key]),
                        offered=int(report["steps"]),
                        acked=report["acked_ranges"][run * keys + key],
                    )
                )
    return expected


def _reader(target: Target) -> tuple[Reader, str]:
    if target.kind == "mlflow":
        return history_reader(target.url), "get-history"
    if target.database_url is not None:
        return sql_reader(target.database_url), "sql"
    return native_reader(target.url), "series"


def _worker_specs(
    settings: LoadtestSettings,
    workload: Workload,
    options: DriverOptions,
    *,
    url: str,
    runs: list[list[tuple[str, str]]],
    folder: Path,
) -> list[WorkerSpec]:
    """What each worker process is told: its runs, driver and report file."""
    return [
        WorkerSpec(
            worker=w,
            url=url,
            driver=settings.driver,
            workload=workload,
            options=options,
            runs=runs[w],
            report_path=folder / f"report-{w}.json",
            drain_timeout=settings.drain_timeout,
        )
        for w in range(workload.workers)
    ]


async def _verify(
    target: Target,
    reports: list[dict[str, Any]],
    runs: list[list[tuple[str, str]]],
    *,
    keys: int,
) -> Verification:
    """Read every series back and count what is missing or doubled."""
    expected = _expected(reports, runs, keys)
    reader, method = _reader(target)
    stored = await reader([(e.run_id, e.key) for e in expected])
    verification = check(expected, stored)
    verification.method = method
    return verification


@contextlib.asynccontextmanager
async def _own_target(
    settings: LoadtestSettings, folder: Path
) -> AsyncIterator[Target]:
    """The server this test starts, and its embedded database when it needs one."""
    if settings.url is not None:
        async with ExternalServer(
            settings.url, kind=settings.server, database_url=settings.db
        ) as target:
            yield target
        return
    if settings.server == "mlflow":
        async with _mlflow_target(folder) as target:
            yield target
        return
    if settings.db is not None:
        async with RunstreamServer(settings.db, folder=folder / "server") as target:
            yield target
        return
    async with EmbeddedDatabase(folder / "postgres") as database:
        url = await database.create_database()
        async with RunstreamServer(
            url, folder=folder / "server", database=database
        ) as target:
            yield target


@contextlib.asynccontextmanager
async def _mlflow_target(folder: Path) -> AsyncIterator[Target]:
    """MLflow's server on an embedded PostgreSQL, as ours runs; on SQLite
    when psycopg2, which its SQL store needs for PostgreSQL, is missing."""
    if importlib.util.find_spec("psycopg2") is None:
        logger.warning("psycopg2 is not installed: MLflow's server runs on SQLite")
        async with MlflowServer(folder=folder / "mlflow") as target:
            yield target
        return
    async with EmbeddedDatabase(folder / "postgres") as database:
        url = await database.create_database()
        async with MlflowServer(
            folder=folder / "mlflow", database_url=url, database=database
        ) as target:
            yield target


@contextlib.contextmanager
def _folder(folder: Path | None):  # type: ignore[no-untyped-def]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    created = Path(tempfile.mkdtemp(prefix="runstream-loadtest-"))
    # An embedded cluster inside may run as another user, who must get through.
    created.chmod(0o755)
    try:
        yield created
    finally:
        shutil.rmtree(created, ignore_errors=True)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
