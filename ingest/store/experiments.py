"""Experiments: MLflow's entity, persisted in PostgreSQL.

Methods return MLflow's JSON shapes (``Experiment`` messages as dicts), so
routes pass them through unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson
from runstream.ingest.errors import (
    AlreadyExists,
    InvalidParameter,
    InvalidState,
    NotFound,
)
from runstream.ingest.store import paging
from runstream.ingest.store.search import experiments_query


def now_ms() -> int:
    return int(time.time() * 1000)


class ExperimentStore:
    def __init__(self, pool: asyncpg.Pool, *, default_artifact_root: str) -> None:
        self._pool = pool
        self._root = default_artifact_root.rstrip("/")

    async def create(
        self, name: str, *, artifact_location: str | None, tags: list[tuple[str, str]]
    ) -> str:
        """Create an experiment; returns its id. Names are unique, deleted ones too."""
        if artifact_location and artifact_location.startswith("runs:"):
            raise InvalidParameter(
                f"artifact_location {artifact_location!r} cannot be a runs:/ URI"
            )
        now = now_ms()
        async with self._pool.acquire() as connection, connection.transaction():
            try:
                experiment_id = await connection.fetchval(
                    """
                    INSERT INTO experiments
                        (name, artifact_location, creation_time, last_update_time)
                    VALUES ($1, '', $2, $2) RETURNING experiment_id
                    """,
                    name,
                    now,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(
                    f"Experiment(name={name}) already exists. Error: name {name!r} "
                    "is taken (by an active or deleted experiment)"
                ) from None
            location = artifact_location or f"{self._root}/{experiment_id}"
            await connection.execute(
                "UPDATE experiments SET artifact_location = $2 "
                "WHERE experiment_id = $1",
                experiment_id,
                location,
            )
            if tags:
                await connection.executemany(
                    "INSERT INTO experiment_tags (experiment_id, key, value) "
                    "VALUES ($1, $2, $3) ON CONFLICT (experiment_id, key) "
                    "DO UPDATE SET value = excluded.value",
                    [(experiment_id, k, v) for k, v in tags],
                )
        return str(experiment_id)

    async def get(self, experiment_id: int) -> dict[str, Any]:
        found = await self._load("e.experiment_id = $1", experiment_id)
        if not found:
            raise NotFound(f"No Experiment with id={experiment_id} exists")
        return found[0]

    async def get_by_name(self, name: str) -> dict[str, Any]:
        found = await self._load("e.name = $1", name)
        if not found:
            raise NotFound(f"Could not find experiment with name '{name}'")
        return found[0]

    async def lifecycle(self, experiment_id: int) -> str:
        stage = await self._pool.fetchval(
            "SELECT lifecycle_stage FROM experiments WHERE experiment_id = $1",
            experiment_id,
        )
        if stage is None:
            raise NotFound(f"No Experiment with id={experiment_id} exists")
        return str(stage)

    async def search(
        self,
        *,
        filter_string: str,
        order_by: list[str],
        view_type: str,
        max_results: int,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        ids, token = await paging.page_of_ids(
            self._pool,
            lambda limit, offset: experiments_query(
                filter_string=filter_string,
                order_by=order_by,
                view_type=view_type,
                limit=limit,
                offset=offset,
            ),
            page_token=page_token,
            max_results=max_results,
        )
        by_id = {
            e["experiment_id"]: e
            for e in await self._load("e.experiment_id = ANY($1)", ids)
        }
        return [by_id[str(i)] for i in ids], token

    async def update_name(self, experiment_id: int, new_name: str) -> None:
        if await self.lifecycle(experiment_id) != "active":
            raise InvalidState(
                f"Cannot rename a non-active experiment (id={experiment_id})"
            )
        try:
            await self._pool.execute(
                "UPDATE experiments SET name = $2, last_update_time = $3 "
                "WHERE experiment_id = $1",
                experiment_id,
                new_name,
                now_ms(),
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"Experiment(name={new_name}) already exists") from None

    async def set_lifecycle(self, experiment_id: int, stage: str) -> None:
        """Delete (soft) or restore an experiment together with its runs."""
        now = now_ms()
        async with self._pool.acquire() as connection, connection.transaction():
            updated = await connection.execute(
                "UPDATE experiments SET lifecycle_stage = $2, last_update_time = $3 "
                "WHERE experiment_id = $1",
                experiment_id,
                stage,
                now,
            )
            if updated == "UPDATE 0":
                raise NotFound(f"No Experiment with id={experiment_id} exists")
            await connection.execute(
                "UPDATE runs SET lifecycle_stage = $2, deleted_time = "
                "CASE WHEN $2 = 'deleted' THEN $3::bigint END WHERE experiment_id = $1",
                experiment_id,
                stage,
                now,
            )

    async def set_tag(self, experiment_id: int, key: str, value: str) -> None:
        if await self.lifecycle(experiment_id) != "active":
            raise InvalidState(
                f"The experiment {experiment_id} must be in the 'active' state"
            )
        await self._pool.execute(
            "INSERT INTO experiment_tags (experiment_id, key, value) "
            "VALUES ($1, $2, $3) "
            "ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
            experiment_id,
            key,
            value,
        )

    async def delete_tag(self, experiment_id: int, key: str) -> None:
        await self.lifecycle(experiment_id)
        deleted = await self._pool.execute(
            "DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2",
            experiment_id,
            key,
        )
        if deleted == "DELETE 0":
            raise NotFound(f"No tag with name: {key} in experiment {experiment_id}")

    async def _load(self, condition: str, argument: object) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            f"""
            SELECT e.*, coalesce(
                (SELECT json_agg(json_build_object('key', t.key, 'value', t.value)
                                 ORDER BY t.key)::text
                 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id),
                '[]') AS tags
            FROM experiments e WHERE {condition}
            """,
            argument,
        )
        return [_experiment(row) for row in rows]


def _experiment(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "experiment_id": str(row["experiment_id"]),
        "name": row["name"],
        "artifact_location": row["artifact_location"],
        "lifecycle_stage": row["lifecycle_stage"],
        "creation_time": row["creation_time"],
        "last_update_time": row["last_update_time"],
        "tags": orjson.loads(row["tags"]),
    }
