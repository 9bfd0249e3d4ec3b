"""A server that sheds load: the client waits as told and still delivers everything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from runstream.client import AsyncClient, ClientSettings

from tests.servers import ServerProcess


@pytest.mark.timeout(120)
async def test_client_honours_503_and_delivers_every_point_once(
    make_database,
    tmp_path: Path,
) -> None:
    url = make_database()
    server = ServerProcess(
        url,
        artifacts_root=tmp_path / "artifacts",
        env={"RUNSTREAM_MAX_QUEUE_POINTS": "1000", "RUNSTREAM_WRITER_CONNECTIONS": "1"},
    )
    server.start()
    blocker = await asyncpg.connect(url)
    settings = ClientSettings(
        tracking_uri=server.url,
        spool_dir=tmp_path / "spool",
        flush_points=1_000,
        flush_age_ms=20,
        retry_initial=0.05,
        retry_max=0.5,
    )
    try:
        async with AsyncClient(settings=settings) as client:
            run = await client.create_run()
            # Hold the writer in its first commit: the queue fills, and every
            # further batch is answered 503 with Retry-After until it lets go.
            hold = blocker.transaction()
            await hold.start()
            await blocker.execute("LOCK TABLE applied_batches IN EXCLUSIVE MODE")
            for step in range(10_000):
                run.log_metric("loss", 0.5, step=step)
            await asyncio.sleep(2.0)
            await hold.rollback()

            report = await client.flush(timeout=60)
            stored = await client.get_series(run.run_id, "loss")

        assert report.ok, report.summary()
        assert report.errors.get("http 503", 0) > 0, report.errors
        assert sorted(stored["steps"]) == list(range(10_000))
    finally:
        await blocker.close()
        server.stop()
