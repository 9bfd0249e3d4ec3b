"""Fixtures of the load-test tests: a killable server on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from runstream.loadtest.settings import LoadtestSettings
from runstream.loadtest.targets import EmbeddedDatabase, RunstreamServer
from runstream.loadtest.workload import DriverOptions, Workload

# Small and paced: every scenario test takes a few seconds.
SMALL = Workload(workers=2, keys=5, rate=5_000, duration=2.5)
FAST_RETRIES = DriverOptions(batch_points=500, batch_age=0.05, retry_for=30)


def small_settings(**update: object) -> LoadtestSettings:
    """Settings for a short run: fault at 0.7 s for 0.7 s, quick drain."""
    values: dict[str, object] = {
        "workload": SMALL,
        "options": FAST_RETRIES,
        "fault_at": 0.7,
        "fault_for": 0.7,
        "drain_timeout": 30.0,
    }
    values.update(update)
    return LoadtestSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def own_server(make_database, tmp_path: Path) -> AsyncIterator[RunstreamServer]:
    """A runstream server of this test's own, on a fresh database; may be killed."""
    async with RunstreamServer(make_database(), folder=tmp_path / "server") as server:
        yield server


@pytest.fixture
async def own_cluster_server(tmp_path: Path) -> AsyncIterator[RunstreamServer]:
    """A server on a PostgreSQL cluster of this test's own, which may be stopped."""
    # A folder of its own under /tmp: pytest's tmp_path is closed to the
    # system user the cluster runs as under root.
    async with EmbeddedDatabase() as database:
        url = await database.create_database()
        async with RunstreamServer(
            url, folder=tmp_path / "server", database=database
        ) as server:
            yield server
