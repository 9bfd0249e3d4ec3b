"""Metric series: resolving ids for the writer, and reading history back.

The history of a series is the rows of ``metric_chunks`` for its run and key
(one row per batch and label), decoded with ``ingest.encoding``. Reads come
in three shapes: the whole series as columns (native), MLflow's paged
get-history, and MLflow's downsampled bulk-interval read for charts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from runstream.ingest import encoding
from runstream.ingest.errors import InvalidParameter, InvalidState, NotFound
from runstream.ingest.protojson import double
from runstream.ingest.store import paging

# A run seen active is trusted this long before it is checked again. Another
# server process may delete it meanwhile; within this window its points are
# still accepted, as they would have been a moment earlier.
RUN_CACHE_SECONDS = 5.0
# The largest page one get-history request returns, with or without
# max_results: MLflow's server returns a whole history unpaged and runs out
# of memory on long series (mlflow#23702).
MAX_HISTORY_PAGE = 1_000_000
_CHUNK_ROWS_PER_FETCH = 256


@dataclass
class Columns:
    """The points of one series as numpy columns, in step order."""

    steps: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray


class MetricStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._key_ids: dict[str, int] = {}
        self._active_runs: dict[str, tuple[int, float]] = {}

    async def key_ids(self, keys: list[str]) -> dict[str, int]:
        """Ids of metric keys, interning new ones; cached (keys never change)."""
        missing = sorted({k for k in keys if k not in self._key_ids})
        if missing:
            # Two statements: an INSERT that meets a concurrent insert of the
            # same key waits for it to commit, so the SELECT after it sees
            # every key, whoever inserted it.
            async with self._pool.acquire() as connection:
                await connection.execute(
                    "INSERT INTO metric_keys (key) SELECT unnest($1::text[]) "
                    "ON CONFLICT (key) DO NOTHING",
                    missing,
                )
                rows = await connection.fetch(
                    "SELECT key, key_id FROM metric_keys WHERE key = ANY($1)", missing
                )
            for row in rows:
                self._key_ids[row["key"]] = row["key_id"]
        return {k: self._key_ids[k] for k in keys}

    async def active_runs(self, fields: dict[str, str]) -> dict[str, int]:
        """Internal numbers of active runs, given as {run id: the field naming it}.

        Raises NotFound or InvalidState for the first unusable run, naming
        its field.
        """
        now = time.monotonic()
        result: dict[str, int] = {}
        missing = []
        for run_id in fields:
            cached = self._active_runs.get(run_id)
            if cached and now - cached[1] < RUN_CACHE_SECONDS:
                result[run_id] = cached[0]
            else:
                missing.append(run_id)
        if missing:
            rows = await self._pool.fetch(
                "SELECT run_uuid, run_num, lifecycle_stage FROM runs "
                "WHERE run_uuid = ANY($1)",
                missing,
            )
            found = {row["run_uuid"]: row for row in rows}
            for run_id in missing:
                row = found.get(run_id)
                if row is None:
                    raise NotFound(f"{fields[run_id]}: Run with id={run_id} not found")
                if row["lifecycle_stage"] != "active":
                    raise InvalidState(
                        f"{fields[run_id]}: the run {run_id} must be in the 'active' "
                        f"state. Current state is {row['lifecycle_stage']}."
                    )
                self._active_runs[run_id] = (row["run_num"], now)
                result[run_id] = row["run_num"]
        return result

    def forget_run(self, run_id: str) -> None:
        """Drop a run from the cache after its lifecycle changed."""
        self._active_runs.pop(run_id, None)

    async def series(self, run_id: str, key: str, *, label: str | None) -> Columns:
        """The whole history of a series (all labels unless one is given), by step."""
        run_num, key_id = await self._series_ids(run_id, key)
        condition = "" if label is None else "AND label = $3"
        args: list[object] = [run_num, key_id] + ([] if label is None else [label])
        rows = await self._pool.fetch(
            f"""
            SELECT n, steps, timestamps, vals FROM metric_chunks
            WHERE run_num = $1 AND key_id = $2 {condition}
            ORDER BY batch_num, label
            """,
            *args,
        )
        columns = _decode(rows)
        order = np.argsort(columns.steps, kind="stable")
        return Columns(
            columns.steps[order], columns.timestamps[order], columns.values[order]
        )

    async def history_page(
        self,
        run_id: str,
        key: str,
        *,
        max_results: int | None,
        page_token: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of MLflow's get-history, in commit order.

        The token holds the position after the page: the (batch_num, label)
        of a history row and an offset inside it, so each page reads only
        the rows it returns.
        """
        limit = min(max_results or MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
        state = paging.decode_state(page_token)
        position = (paging.state_int(state, "b"), paging.state_str(state, "l"))
        skip = paging.state_int(state, "o")
        run_num, key_id = await self._series_ids(run_id, key, missing_ok=True)
        if run_num is None:
            return [], None

        points: list[dict[str, Any]] = []
        while True:
            # The row at `position` is read again only when the page ended
            # inside it (skip > 0); batch numbers start at 1.
            comparison = ">=" if skip else ">"
            rows = await self._pool.fetch(
                f"""
                SELECT batch_num, label, n, steps, timestamps, vals FROM metric_chunks
                WHERE run_num = $1 AND key_id = $2
                  AND (batch_num, label) {comparison} ($3, $4)
                ORDER BY batch_num, label LIMIT $5
                """,
                run_num,
                key_id,
                position[0],
                position[1],
                _CHUNK_ROWS_PER_FETCH,
            )
            if not rows:
                return points, None
            for row in rows:
                start = skip if (row["batch_num"], row["label"]) == position else 0
                chunk = _decode([row])
                take = min(limit - len(points), len(chunk.values) - start)
                points.extend(_mlflow_points(key, chunk, start, start + take))
                position, skip = (row["batch_num"], row["label"]), start + take
                if skip == len(chunk.values):
                    skip = 0
                if len(points) == limit:
                    token = {"b": position[0], "l": position[1], "o": skip}
                    return points, paging.encode_token(token)

    async def bulk_interval(
        self,
        run_ids: list[str],
        key: str,
        *,
        start_step: int | None,
        end_step: int | None,
        max_results: int,
    ) -> list[dict[str, Any]]:
        """MLflow's chart read: per run at most ``max_results`` points, evenly
        sampled over the steps, first and last always kept."""
        result: list[dict[str, Any]] = []
        for run_id in run_ids:
            try:
                columns = await self.series(run_id, key, label=None)
            except NotFound:
                continue
            mask = np.ones(len(columns.steps), dtype=bool)
            if start_step is not None and end_step is not None:
                mask = (columns.steps >= start_step) & (columns.steps <= end_step)
            index = np.flatnonzero(mask)
            if len(index) > max_results:
                if max_results == 1:
                    index = index[-1:]
                else:
                    picks = np.linspace(0, len(index) - 1, max_results).round()
                    index = index[np.unique(picks.astype(np.int64))]
            for point in _mlflow_points(key, _take(columns, index), 0, len(index)):
                point["run_id"] = run_id
                result.append(point)
        return result

    async def _series_ids(
        self, run_id: str, key: str, *, missing_ok: bool = False
    ) -> tuple[Any, Any]:
        row = await self._pool.fetchrow(
            """
            SELECT r.run_num, k.key_id FROM runs r
            LEFT JOIN metric_keys k ON k.key = $2 WHERE r.run_uuid = $1
            """,
            run_id,
            key,
        )
        if row is None:
            raise NotFound(f"Run with id={run_id} not found")
        if row["key_id"] is None:
            if missing_ok:
                return None, None
            raise NotFound(f"run {run_id} has no metric {key!r}")
        return row["run_num"], row["key_id"]


def _decode(rows: list[asyncpg.Record]) -> Columns:
    if not rows:
        empty_int = np.empty(0, dtype=np.int64)
        return Columns(empty_int, empty_int, np.empty(0, dtype=np.float64))
    steps, timestamps, values = [], [], []
    for row in rows:
        n = row["n"]
        steps.append(encoding.decode_ints(row["steps"], n))
        timestamps.append(encoding.decode_ints(row["timestamps"], n))
        values.append(encoding.decode_floats(row["vals"], n))
    return Columns(
        np.concatenate(steps), np.concatenate(timestamps), np.concatenate(values)
    )


def _take(columns: Columns, index: np.ndarray) -> Columns:
    return Columns(
        columns.steps[index], columns.timestamps[index], columns.values[index]
    )


def _mlflow_points(
    key: str, columns: Columns, start: int, end: int
) -> list[dict[str, Any]]:
    steps = columns.steps[start:end].tolist()
    timestamps = columns.timestamps[start:end].tolist()
    values = columns.values[start:end].tolist()
    if not np.all(np.isfinite(columns.values[start:end])):
        values = [double(v) for v in values]
    return [
        {"key": key, "value": v, "timestamp": t, "step": s}
        for s, t, v in zip(steps, timestamps, values)
    ]


def check_max_results(value: int, *, upper: int, field: str = "max_results") -> int:
    if value <= 0 or value > upper:
        raise InvalidParameter(f"{field} must be between 1 and {upper}, got {value}")
    return value
