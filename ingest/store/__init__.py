"""The store: PostgreSQL persistence of experiments, runs and metrics.

``Store`` owns the connection pool; its parts share it. The metric write
path is not here but in ``ingest.writer`` (binary COPY, group commit).
"""

from __future__ import annotations

from types import TracebackType

import asyncpg
from runstream.ingest.errors import ConfigurationError
from runstream.ingest.schema import migrate
from runstream.ingest.store.experiments import ExperimentStore
from runstream.ingest.store.metrics import MetricStore
from runstream.ingest.store.runs import RunStore


class Store:
    """Experiments, runs and metrics in one PostgreSQL database."""

    def __init__(self, url: str, *, pool_size: int, default_artifact_root: str) -> None:
        self.url = url
        self._pool_size = pool_size
        self._default_artifact_root = default_artifact_root
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is not started")
        return self._pool

    async def start(self, *, apply_migrations: bool = True) -> None:
        """Connect, and bring the schema to this code's version."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=2, max_size=self._pool_size
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigurationError(f"cannot connect to the database: {exc}") from exc
        if apply_migrations:
            async with self._pool.acquire() as connection:
                await migrate(connection)
        self.experiments = ExperimentStore(
            self._pool, default_artifact_root=self._default_artifact_root
        )
        self.runs = RunStore(self._pool)
        self.metrics = MetricStore(self._pool)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
