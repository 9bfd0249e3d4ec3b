"""End-to-end benchmark: one process logging as fast as it can, acknowledged.

    python -m benchmarks.client_e2e [--points 5000000] [--keys 10] [--db URL]

Starts PostgreSQL (the embedded one unless --db is given) and a real
``runstream server`` on this machine, then measures in one go:

a. baseline: one process posting pre-encoded binary batches of the same
   size to the native endpoint, 4 in flight: what the server takes from
   one sender that spends nothing on building batches;
b. the client: a fresh interpreter whose loop calls the fluent
   ``log_metric`` over --keys keys, then ``flush()``; points per second
   from the first call until the flush returns (everything acknowledged).

Prints both, the ratio b/a, and the logging loop's own rate (calls per
second while the flusher runs beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from runstream.client.batch import Series, encode
from runstream.client.client import AsyncClient
from runstream.client.transport import Transport

from benchmarks.setup import database_and_server

LOGGER = """
import json, os, sys, time
import runstream.client as rs

points, keys = int(sys.argv[1]), int(sys.argv[2])
names = [f"metric_{k}" for k in range(keys)]
with rs.start_run(run_name="client-e2e") as run:
    log_metric = rs.log_metric
    start = time.perf_counter()
    for step in range(points // keys):
        for name in names:
            log_metric(name, 0.5, step)
    logged = time.perf_counter()
    report = rs.flush()
    done = time.perf_counter()
print(json.dumps({"seconds": done - start, "logging_seconds": logged - start,
                  "acknowledged": report.acknowledged, "pending": report.pending}))
"""


async def baseline(url: str, points: int, keys: int, batch_points: int) -> float:
    async with AsyncClient(url, spool_dir=tempfile.gettempdir()) as client:
        run_id = (await client.create_run(run_name="baseline")).run_id
    per_key = batch_points // keys
    bodies = []
    for index in range(points // batch_points):
        steps = np.arange(index * per_key, (index + 1) * per_key, dtype=np.int64)
        stamps = np.full(per_key, int(time.time() * 1000), dtype=np.int64)
        values = np.full(per_key, 0.5)
        series = [
            Series(run_id, f"metric_{k}", "", steps, stamps, values)
            for k in range(keys)
        ]
        bodies.append(encode(uuid.uuid4(), series))
    async with Transport(url, timeout=120, connections=6) as transport:
        slots = asyncio.Semaphore(4)

        async def send(body: bytes) -> None:
            async with slots:
                await transport.send_batch(body)

        start = time.perf_counter()
        await asyncio.gather(*(send(body) for body in bodies))
        return len(bodies) * per_key * keys / (time.perf_counter() - start)


def client_run(url: str, points: int, keys: int, spool: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", LOGGER, str(points), str(keys)],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "RUNSTREAM_TRACKING_URI": url,
            "RUNSTREAM_SPOOL_DIR": str(spool),
        },
    )
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: an embedded cluster)")
    parser.add_argument("--points", type=int, default=5_000_000)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--batch-points", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with database_and_server(args.db) as (url, server):
        try:
            server.start()
            base = asyncio.run(
                baseline(server.url, args.points, args.keys, args.batch_points)
            )
            print(f"(a) pre-encoded batches, one sender: {base:>12,.0f} points/s")
            result = client_run(
                server.url,
                args.points,
                args.keys,
                server.artifacts_root.parent / "spool",
            )
            through = result["acknowledged"] / result["seconds"]
            calls = args.points / result["logging_seconds"]
            print(f"(b) fluent log_metric, acknowledged: {through:>12,.0f} points/s")
            print(f"    ratio b/a:                       {through / base:>12.2f}")
            print(f"    logging loop alone:              {calls:>12,.0f} calls/s")
            print(f"    pending after flush:             {result['pending']:>12}")
            if args.json:
                args.json.write_text(
                    json.dumps(
                        {"baseline": base, "client": through, "calls": calls}, indent=2
                    )
                )
        except Exception:
            print(server.log(), file=sys.stderr)
            raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
