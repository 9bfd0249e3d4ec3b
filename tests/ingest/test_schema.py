"""Migrations: applied once, recorded, and a newer database is refused."""

from __future__ import annotations

import asyncpg
import pytest
from runstream.ingest.errors import ConfigurationError
from runstream.ingest.schema import load_migrations, migrate

pytestmark = pytest.mark.timeout(60)


async def test_a_current_database_starts_unchanged(make_database) -> None:
    connection = await asyncpg.connect(make_database())
    try:
        before = await connection.fetch("SELECT * FROM schema_migrations")

        version = await migrate(connection)

        after = await connection.fetch("SELECT * FROM schema_migrations")
        assert version == load_migrations()[-1].version
        assert before == after
        assert (
            await connection.fetchval(
                "SELECT name FROM experiments WHERE experiment_id = 0"
            )
            == "Default"
        )
    finally:
        await connection.close()


async def test_a_newer_database_is_refused(make_database) -> None:
    connection = await asyncpg.connect(make_database())
    try:
        await connection.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')"
        )

        with pytest.raises(ConfigurationError, match="newer than this runstream"):
            await migrate(connection)
    finally:
        await connection.close()
