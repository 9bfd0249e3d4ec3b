"""Ingest benchmark: the server's native endpoint against raw COPY, on one database.

    python -m benchmarks.ingest [--points 4000000] [--senders 3] [--json PATH]

In one go, on one PostgreSQL (the embedded one unless --db is given):

a. baseline: raw binary COPY from asyncpg into an unindexed 5-column table
   (run, key, step, timestamp, value), two connections, 10,000 rows a COPY;
b. end to end: several sender processes post binary batches to a real
   ``runstream server`` until every point is acknowledged;

then prints points per second for both and the ratio b/a, bytes on disk per
stored point (indexes and TOAST included), the time to read a 1,000,000
point series natively and through MLflow's paged get-history, and the
server's peak RSS under a sustained overload. Sender, server and PostgreSQL
share the machine's cores, as they would on one box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import struct
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import numpy as np
import orjson
import psutil

from benchmarks.setup import database_and_server

BINARY = "application/vnd.runstream.batch"


def binary_batch(
    series: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]],
) -> bytes:
    header = orjson.dumps(
        {
            "batch_id": str(uuid.uuid4()),
            "series": [
                {"run_id": r, "key": k, "n": len(v)} for r, k, _, _, v in series
            ],
        }
    )
    parts = [b"RSB1", struct.pack("<I", len(header)), header]
    for _, _, steps, timestamps, values in series:
        parts += [steps.tobytes(), timestamps.tobytes(), values.tobytes()]
    return b"".join(parts)


# -- (a) raw COPY baseline -------------------------------------------------


async def copy_baseline(url: str, points: int) -> float:
    setup = await asyncpg.connect(url)
    await setup.execute(
        "DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows "
        "(run bigint, key integer, step bigint, timestamp bigint, value float8)"
    )
    await setup.close()
    rows_per_copy = 10_000
    now = int(time.time() * 1000)
    template = [(1, i % 20, i, now + i, i * 0.001) for i in range(rows_per_copy)]
    copies = points // rows_per_copy

    async def copier(count: int) -> None:
        connection = await asyncpg.connect(url)
        for _ in range(count):
            await connection.copy_records_to_table(
                "bench_rows",
                records=template,
                columns=["run", "key", "step", "timestamp", "value"],
            )
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(copier(copies // 2), copier(copies - copies // 2))
    elapsed = time.perf_counter() - started
    return copies * rows_per_copy / elapsed


# -- (b) end to end through the server ---------------------------------------


def _sender(
    url: str,
    run_id: str,
    batches: int,
    keys: int,
    per_key: int,
    in_flight: int,
    offset: int,
    out: multiprocessing.Queue,
) -> None:
    import aiohttp

    async def main() -> None:
        rng = np.random.default_rng(offset)
        now = int(time.time() * 1000)
        values = rng.random((keys, per_key))
        bodies = []
        for b in range(batches):
            step0 = offset + b * per_key
            steps = np.arange(step0, step0 + per_key, dtype="<i8")
            timestamps = now + steps
            bodies.append(
                binary_batch(
                    [
                        (run_id, f"metric_{k}", steps, timestamps, values[k])
                        for k in range(keys)
                    ]
                )
            )
        acked = 0
        queue = list(reversed(bodies))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=in_flight)
        ) as session:

            async def worker() -> None:
                nonlocal acked
                while queue:
                    body = queue.pop()
                    while True:
                        async with session.post(
                            url + "/api/runstream/v1/batches",
                            data=body,
                            headers={"Content-Type": BINARY},
                        ) as reply:
                            if reply.status == 200:
                                acked += (await reply.json())["points"]
                                break
                            if reply.status in (429, 503):
                                await asyncio.sleep(
                                    float(reply.headers.get("Retry-After", "1"))
                                )
                                continue
                            raise RuntimeError(await reply.text())

            await asyncio.gather(*(worker() for _ in range(in_flight)))
        out.put(acked)

    asyncio.run(main())


def create_run(base: str, name: str) -> str:
    request = urllib.request.Request(
        base + "/api/2.0/mlflow/runs/create",
        data=orjson.dumps({"experiment_id": "0", "run_name": name}),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        return str(json.loads(reply.read())["run"]["info"]["run_id"])


def end_to_end(
    base: str, *, points: int, senders: int, keys: int, per_key: int, in_flight: int
) -> tuple[float, list[str]]:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()
    per_batch = keys * per_key
    batches = max(1, points // (per_batch * senders))
    run_ids = [create_run(base, f"bench-{i}") for i in range(senders)]
    processes = [
        context.Process(
            target=_sender,
            args=(base, run_ids[i], batches, keys, per_key, in_flight, 0, out),
        )
        for i in range(senders)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    acked = sum(out.get(timeout=600) for _ in processes)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join()
    return acked / elapsed, run_ids


# -- storage and reads --------------------------------------------------------


async def bytes_per_point(url: str) -> tuple[float, int]:
    connection = await asyncpg.connect(url)
    size = await connection.fetchval(
        "SELECT pg_total_relation_size('metric_chunks') "
        "+ pg_total_relation_size('latest_metrics')"
    )
    stored = await connection.fetchval("SELECT coalesce(sum(n), 0) FROM metric_chunks")
    await connection.close()
    return size / max(stored, 1), int(stored)


def read_series(base: str, run_id: str, points: int) -> tuple[float, float, float]:
    """Log a series of ``points`` points, then time the native and MLflow reads."""
    per_batch = 10_000
    now = int(time.time() * 1000)
    for start in range(0, points, per_batch):
        steps = np.arange(start, start + per_batch, dtype="<i8")
        body = binary_batch(
            [(run_id, "long_series", steps, now + steps, np.random.random(per_batch))]
        )
        request = urllib.request.Request(
            base + "/api/runstream/v1/batches",
            data=body,
            headers={"Content-Type": BINARY},
        )
        urllib.request.urlopen(request).read()

    started = time.perf_counter()
    with urllib.request.urlopen(
        f"{base}/api/runstream/v1/series?run_id={run_id}&key=long_series"
    ) as reply:
        native = orjson.loads(reply.read())
    native_seconds = time.perf_counter() - started
    assert len(native["values"]) == points

    started = time.perf_counter()
    received = 0
    token = ""
    while True:
        page = f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run_id}"
        page += f"&metric_key=long_series&max_results=25000&page_token={token}"
        with urllib.request.urlopen(page) as reply:
            document = orjson.loads(reply.read())
        received += len(document["metrics"])
        token = document.get("next_page_token", "")
        if not token:
            break
    paged_seconds = time.perf_counter() - started
    assert received == points

    from mlflow import MlflowClient

    started = time.perf_counter()
    history = MlflowClient(tracking_uri=base).get_metric_history(run_id, "long_series")
    client_seconds = time.perf_counter() - started
    assert len(history) == points
    return native_seconds, points / paged_seconds, points / client_seconds


def overload_rss(
    base: str, pid: int, run_id: str, seconds: float
) -> tuple[int, int, int]:
    """Flood the server from many connections; returns (peak RSS, 200s, 503s)."""
    import aiohttp

    process = psutil.Process(pid)
    peak = process.memory_info().rss
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    counts = {"ok": 0, "busy": 0}
    now = int(time.time() * 1000)
    steps = np.arange(10_000, dtype="<i8")
    series = [
        (run_id, f"flood_{k}", steps, now + steps, np.random.random(10_000))
        for k in range(10)
    ]

    async def main() -> None:
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64)
        ) as session:

            async def flood() -> None:
                while time.monotonic() < deadline:
                    async with session.post(
                        base + "/api/runstream/v1/batches",
                        data=binary_batch(series),
                        headers={"Content-Type": BINARY},
                    ) as reply:
                        await reply.read()
                        counts["ok" if reply.status == 200 else "busy"] += 1

            await asyncio.gather(*(flood() for _ in range(64)))

    asyncio.run(main())
    stop.set()
    watcher.join()
    return peak, counts["ok"], counts["busy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: an embedded cluster)")
    parser.add_argument("--points", type=int, default=4_000_000)
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--per-key", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--series-points", type=int, default=1_000_000)
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with database_and_server(args.db) as (url, server):
        baseline = asyncio.run(copy_baseline(url, args.points))
        print(f"(a) raw COPY, 2 connections:        {baseline:>12,.0f} points/s")
        server.start()
        through, run_ids = end_to_end(
            server.url,
            points=args.points,
            senders=args.senders,
            keys=args.keys,
            per_key=args.per_key,
            in_flight=args.in_flight,
        )
        print(f"(b) server, native endpoint:        {through:>12,.0f} points/s")
        print(f"    ratio b/a:                      {through / baseline:>12.2f}")
        per_point, stored = asyncio.run(bytes_per_point(url))
        print(
            f"    bytes on disk per point:        {per_point:>12.1f} "
            f"({stored:,} points)"
        )
        native_s, paged_pps, client_pps = read_series(
            server.url, run_ids[0], args.series_points
        )
        print(f"    native read of {args.series_points:,} points: {native_s:>9.2f} s")
        print(f"    MLflow get-history, HTTP pages: {paged_pps:>12,.0f} points/s")
        print(f"    ... through the mlflow client:  {client_pps:>12,.0f} points/s")
        assert server.process is not None
        peak, ok, busy = overload_rss(
            server.url, server.process.pid, run_ids[0], args.overload_seconds
        )
        print(
            f"    server peak RSS under overload: {peak / 2**20:>12.0f} MiB "
            f"({ok} accepted, {busy} refused with 503)"
        )
        result = {
            "copy_points_per_second": baseline,
            "server_points_per_second": through,
            "ratio": through / baseline,
            "bytes_per_point": per_point,
            "native_read_seconds": native_s,
            "mlflow_history_points_per_second": paged_pps,
            "mlflow_client_history_points_per_second": client_pps,
            "overload_peak_rss_bytes": peak,
            "overload_accepted": ok,
            "overload_refused": busy,
        }
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(main())
