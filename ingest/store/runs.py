"""Runs, their params and tags: MLflow's entities, persisted in PostgreSQL.

Methods return MLflow's JSON shapes (``Run``, ``RunInfo``) as dicts. A run's
metrics in those shapes are the latest value per key (``latest_metrics``);
the history lives in ``store.metrics``.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
from runstream.ingest.errors import (
    AlreadyExists,
    InvalidParameter,
    InvalidState,
    NotFound,
)
from runstream.ingest.protojson import double
from runstream.ingest.store import names, paging
from runstream.ingest.store.experiments import now_ms
from runstream.ingest.store.search import runs_query

RUN_NAME_TAG = "mlflow.runName"
_STATUSES = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}


class RunStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        experiment_id: int,
        user_id: str,
        run_name: str | None,
        start_time: int | None,
        tags: list[tuple[str, str]],
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a run; ``run_id`` lets a client name it (runstream's extension).

        A client that started a run while the server was unreachable chose
        its id itself; creating it again with the same id and experiment
        returns the existing run, so the create is safe to retry.
        """
        tag_map = dict(tags)
        tagged_name = tag_map.get(RUN_NAME_TAG)
        if run_name and tagged_name and run_name != tagged_name:
            raise InvalidParameter(
                f"run_name {run_name!r} and tag {RUN_NAME_TAG} {tagged_name!r} differ"
            )
        name = run_name or tagged_name or names.generate()
        tag_map[RUN_NAME_TAG] = name
        chosen = run_id is not None
        run_id = run_id or uuid.uuid4().hex
        async with self._pool.acquire() as connection, connection.transaction():
            experiment = await connection.fetchrow(
                "SELECT artifact_location, lifecycle_stage FROM experiments "
                "WHERE experiment_id = $1",
                experiment_id,
            )
            if experiment is None:
                raise NotFound(f"No Experiment with id={experiment_id} exists")
            if experiment["lifecycle_stage"] != "active":
                raise InvalidState(
                    f"The experiment {experiment_id} must be in the 'active' state"
                )
            location = experiment["artifact_location"].rstrip("/")
            run_num = await connection.fetchval(
                """
                INSERT INTO runs (run_uuid, experiment_id, name, user_id, start_time,
                                  artifact_uri)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (run_uuid) DO NOTHING RETURNING run_num
                """,
                run_id,
                experiment_id,
                name,
                user_id,
                start_time if start_time is not None else now_ms(),
                f"{location}/{run_id}/artifacts",
            )
            if run_num is None:
                await _check_same_run(connection, run_id, experiment_id, chosen)
            else:
                await _upsert(connection, "tags", run_num, list(tag_map.items()))
        return await self.get(run_id)

    async def get(self, run_id: str) -> dict[str, Any]:
        runs = await self._load_runs("r.run_uuid = $1", run_id)
        if not runs:
            raise NotFound(f"Run with id={run_id} not found")
        run = runs[0]
        del run["_run_num"]
        return run

    async def update(
        self,
        run_id: str,
        *,
        status: str | None,
        end_time: int | None,
        run_name: str | None,
    ) -> dict[str, Any]:
        if status is not None and status not in _STATUSES:
            raise InvalidParameter(f"status {status!r} is not a run status")
        async with self._pool.acquire() as connection, connection.transaction():
            run_num = await _active_run(connection, run_id)
            await connection.execute(
                """
                UPDATE runs SET status = coalesce($2, status),
                                end_time = coalesce($3, end_time),
                                name = coalesce($4, name)
                WHERE run_num = $1
                """,
                run_num,
                status,
                end_time,
                run_name or None,
            )
            if run_name:
                await _upsert(connection, "tags", run_num, [(RUN_NAME_TAG, run_name)])
        return (await self.get(run_id))["info"]

    async def set_lifecycle(self, run_id: str, stage: str) -> None:
        updated = await self._pool.execute(
            "UPDATE runs SET lifecycle_stage = $2, deleted_time = "
            "CASE WHEN $2 = 'deleted' THEN $3::bigint END WHERE run_uuid = $1",
            run_id,
            stage,
            now_ms(),
        )
        if updated == "UPDATE 0":
            raise NotFound(f"Run with id={run_id} not found")

    async def log_params_and_tags(
        self,
        run_id: str,
        *,
        params: list[tuple[str, str]],
        tags: list[tuple[str, str]],
    ) -> None:
        """Log params (a changed value is refused) and upsert tags, atomically."""
        async with self._pool.acquire() as connection, connection.transaction():
            run_num = await _active_run(connection, run_id)
            if params:
                await _insert_params(connection, run_id, run_num, params)
            if tags:
                await _upsert(connection, "tags", run_num, tags)
                names_given = [v for k, v in tags if k == RUN_NAME_TAG]
                if names_given:
                    await connection.execute(
                        "UPDATE runs SET name = $2 WHERE run_num = $1",
                        run_num,
                        names_given[-1],
                    )

    async def check_active(self, run_id: str) -> None:
        async with self._pool.acquire() as connection:
            await _active_run(connection, run_id)

    async def delete_tag(self, run_id: str, key: str) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            run_num = await _active_run(connection, run_id)
            deleted = await connection.execute(
                "DELETE FROM tags WHERE run_num = $1 AND key = $2", run_num, key
            )
            if deleted == "DELETE 0":
                raise NotFound(f"No tag with name: {key} in run with id {run_id}")

    async def log_inputs(self, run_id: str, datasets: list[dict[str, Any]]) -> None:
        """Record dataset inputs; an experiment shares datasets by (name, digest)."""
        async with self._pool.acquire() as connection, connection.transaction():
            run_num = await _active_run(connection, run_id)
            experiment_id = await connection.fetchval(
                "SELECT experiment_id FROM runs WHERE run_num = $1", run_num
            )
            for item in datasets:
                dataset = item["dataset"]
                dataset_uuid = await connection.fetchval(
                    """
                    INSERT INTO datasets (dataset_uuid, experiment_id, name, digest,
                                          source_type, source, schema, profile)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (experiment_id, name, digest)
                    DO UPDATE SET name = excluded.name
                    RETURNING dataset_uuid
                    """,
                    uuid.uuid4().hex,
                    experiment_id,
                    dataset["name"],
                    dataset["digest"],
                    dataset["source_type"],
                    dataset["source"],
                    dataset.get("schema"),
                    dataset.get("profile"),
                )
                await connection.execute(
                    "INSERT INTO run_inputs (run_num, dataset_uuid, tags) "
                    "VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING",
                    run_num,
                    dataset_uuid,
                    orjson.dumps(item.get("tags") or []).decode(),
                )

    async def search(
        self,
        *,
        experiment_ids: list[int],
        filter_string: str,
        order_by: list[str],
        view_type: str,
        max_results: int,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        run_nums, token = await paging.page_of_ids(
            self._pool,
            lambda limit, offset: runs_query(
                filter_string=filter_string,
                order_by=order_by,
                experiment_ids=experiment_ids,
                view_type=view_type,
                limit=limit,
                offset=offset,
            ),
            page_token=page_token,
            max_results=max_results,
        )
        loaded = await self._load_runs("r.run_num = ANY($1)", run_nums)
        by_num = {run.pop("_run_num"): run for run in loaded}
        return [by_num[n] for n in run_nums], token

    async def _load_runs(
        self, condition: str, argument: object
    ) -> list[dict[str, Any]]:
        """Runs with their latest metrics, params, tags and inputs, in few queries."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                f"SELECT r.* FROM runs r WHERE {condition}", argument
            )
            if not rows:
                return []
            nums = [row["run_num"] for row in rows]
            params = await connection.fetch(
                "SELECT run_num, key, value FROM params WHERE run_num = ANY($1) "
                "ORDER BY key",
                nums,
            )
            tags = await connection.fetch(
                "SELECT run_num, key, value FROM tags WHERE run_num = ANY($1) "
                "ORDER BY key",
                nums,
            )
            metrics = await connection.fetch(
                """
                SELECT l.run_num, k.key, l.value, l.timestamp, l.step
                FROM latest_metrics l JOIN metric_keys k USING (key_id)
                WHERE l.run_num = ANY($1) ORDER BY k.key
                """,
                nums,
            )
            inputs = await connection.fetch(
                """
                SELECT i.run_num, i.tags::text AS tags, d.name, d.digest,
                       d.source_type, d.source, d.schema, d.profile
                FROM run_inputs i JOIN datasets d USING (dataset_uuid)
                WHERE i.run_num = ANY($1) ORDER BY d.name
                """,
                nums,
            )
        runs = {row["run_num"]: _run(row) for row in rows}
        for row in params:
            runs[row["run_num"]]["data"]["params"].append(
                {"key": row["key"], "value": row["value"]}
            )
        for row in tags:
            runs[row["run_num"]]["data"]["tags"].append(
                {"key": row["key"], "value": row["value"]}
            )
        for row in metrics:
            runs[row["run_num"]]["data"]["metrics"].append(_metric(row))
        for row in inputs:
            runs[row["run_num"]]["inputs"].setdefault("dataset_inputs", []).append(
                _dataset_input(row)
            )
        return list(runs.values())


async def _check_same_run(
    connection: asyncpg.Connection, run_id: str, experiment_id: int, chosen: bool
) -> None:
    """A run id that exists already is a retried create, or a conflict."""
    existing = await connection.fetchval(
        "SELECT experiment_id FROM runs WHERE run_uuid = $1", run_id
    )
    if not chosen or existing != experiment_id:
        raise AlreadyExists(f"run_id {run_id} exists already, in experiment {existing}")


async def _active_run(connection: asyncpg.Connection, run_id: str) -> int:
    row = await connection.fetchrow(
        "SELECT run_num, lifecycle_stage FROM runs WHERE run_uuid = $1", run_id
    )
    if row is None:
        raise NotFound(f"Run with id={run_id} not found")
    if row["lifecycle_stage"] != "active":
        raise InvalidState(
            f"The run {run_id} must be in the 'active' state. "
            f"Current state is {row['lifecycle_stage']}."
        )
    return int(row["run_num"])


async def _insert_params(
    connection: asyncpg.Connection,
    run_id: str,
    run_num: int,
    params: list[tuple[str, str]],
) -> None:
    existing = await connection.fetch(
        "SELECT key, value FROM params WHERE run_num = $1 AND key = ANY($2)",
        run_num,
        [k for k, _ in params],
    )
    logged = {row["key"]: row["value"] for row in existing}
    for key, value in params:
        if key in logged and logged[key] != value:
            raise InvalidParameter(
                f"Changing param values is not allowed. Param with key='{key}' was "
                f"already logged with value='{logged[key]}' for run ID='{run_id}'. "
                f"Attempted logging new value '{value}'."
            )
    await connection.executemany(
        "INSERT INTO params (run_num, key, value) VALUES ($1, $2, $3) "
        "ON CONFLICT (run_num, key) DO NOTHING",
        [(run_num, k, v) for k, v in params],
    )


async def _upsert(
    connection: asyncpg.Connection,
    table: str,
    run_num: int,
    pairs: list[tuple[str, str]],
) -> None:
    await connection.executemany(
        f"INSERT INTO {table} (run_num, key, value) VALUES ($1, $2, $3) "
        "ON CONFLICT (run_num, key) DO UPDATE SET value = excluded.value",
        [(run_num, k, v) for k, v in pairs],
    )


def _run(row: asyncpg.Record) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": row["run_uuid"],
        "run_uuid": row["run_uuid"],
        "run_name": row["name"],
        "experiment_id": str(row["experiment_id"]),
        "user_id": row["user_id"],
        "status": row["status"],
        "start_time": row["start_time"],
        "artifact_uri": row["artifact_uri"],
        "lifecycle_stage": row["lifecycle_stage"],
    }
    if row["end_time"] is not None:
        info["end_time"] = row["end_time"]
    return {
        "_run_num": row["run_num"],
        "info": info,
        "data": {"metrics": [], "params": [], "tags": []},
        "inputs": {},
    }


def _metric(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "key": row["key"],
        "value": double(row["value"]),
        "timestamp": row["timestamp"],
        "step": row["step"],
    }


def _dataset_input(row: asyncpg.Record) -> dict[str, Any]:
    dataset = {
        "name": row["name"],
        "digest": row["digest"],
        "source_type": row["source_type"],
        "source": row["source"],
    }
    for optional in ("schema", "profile"):
        if row[optional] is not None:
            dataset[optional] = row[optional]
    return {"tags": orjson.loads(row["tags"]), "dataset": dataset}
