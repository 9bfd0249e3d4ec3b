"""Versioned SQL migrations, applied at start-up and recorded in a table.

Migrations are the files ``migrations/NNNN_name.sql`` beside this module.
A file that has landed is never edited; a change is a new file. Each file is
applied in its own transaction under an advisory lock, so several server
processes starting together apply it once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from runstream.ingest.errors import ConfigurationError

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
# Any constant works; it only has to be the same in every server process.
_MIGRATION_LOCK = 0x72756E73


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped with this code, in version order."""
    folder = resources.files("runstream.ingest") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(
                Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ConfigurationError(
                f"migration {migration.version:04d} follows a gap; "
                f"expected {expected:04d}"
            )
    return found


async def migrate(connection: asyncpg.Connection) -> int:
    """Bring the database to the code's schema version and return that version.

    Raises ConfigurationError when the database is newer than the code.
    """
    migrations = load_migrations()
    latest = migrations[-1].version
    await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        current = await connection.fetchval(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        )
        if current > latest:
            raise ConfigurationError(
                f"the database schema is at version {current}, newer than this "
                f"runstream ({latest}); upgrade runstream to use this database"
            )
        for migration in migrations[current:]:
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            logger.info("applied migration %04d_%s", migration.version, migration.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return latest
