"""The writer: group commit of metric batches with binary COPY.

Requests hand resolved batches to ``Writer.write`` and await it. A few
writer tasks, each with its own connection, take everything queued when
they become free and commit it in one transaction:

1. record the batch ids in ``applied_batches``; ids already there are
   retries of committed batches and write nothing;
2. binary COPY of one ``metric_chunks`` row per series of each new batch;
3. upsert of ``latest_metrics``, keeping the greatest (step, timestamp,
   value), rows in (run, key) order so concurrent writers never deadlock;
4. COMMIT, and only then resolve every request's future.

A failed group is retried batch by batch, so one bad batch never fails the
others. The queue is bounded in points: past the bound ``write`` raises
Overloaded at once (HTTP 503 with Retry-After) instead of growing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import asyncpg
import numpy as np
from runstream.ingest import encoding
from runstream.ingest.errors import Overloaded, StoreError
from runstream.ingest.telemetry import Telemetry

logger = logging.getLogger(__name__)

_CHUNK_COLUMNS = (
    "run_num",
    "key_id",
    "batch_num",
    "label",
    "n",
    "min_step",
    "max_step",
    "steps",
    "timestamps",
    "vals",
)
_RECORD_BATCHES = """
    INSERT INTO applied_batches (batch_id) SELECT unnest($1::uuid[])
    ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id, batch_num
"""
_UPSERT_LATEST = """
    INSERT INTO latest_metrics AS l (run_num, key_id, step, timestamp, value)
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[],
                         $5::float8[])
    ON CONFLICT (run_num, key_id) DO UPDATE
    SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value
    WHERE (excluded.step, excluded.timestamp, excluded.value)
        > (l.step, l.timestamp, l.value)
"""
# Errors after which the same transaction may succeed when tried again.
_TRANSIENT = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    ConnectionError,
    OSError,
)
_ATTEMPTS = 3


@dataclass
class EncodedSeries:
    """One series of a batch, resolved to ids and encoded for its history row."""

    run_num: int
    key_id: int
    label: str
    n: int
    min_step: int
    max_step: int
    steps: bytes
    timestamps: bytes
    values: bytes
    latest: tuple[int, int, float]

    @classmethod
    def encode(
        cls,
        *,
        run_num: int,
        key_id: int,
        label: str,
        steps: np.ndarray,
        timestamps: np.ndarray,
        values: np.ndarray,
    ) -> EncodedSeries:
        return cls(
            run_num=run_num,
            key_id=key_id,
            label=label,
            n=len(values),
            min_step=int(steps.min()),
            max_step=int(steps.max()),
            steps=encoding.encode_ints(steps),
            timestamps=encoding.encode_ints(timestamps),
            values=encoding.encode_floats(values),
            latest=latest_point(steps, timestamps, values),
        )


@dataclass
class ResolvedBatch:
    batch_id: uuid.UUID
    series: list[EncodedSeries]
    points: int = field(init=False)

    def __post_init__(self) -> None:
        self.points = sum(s.n for s in self.series)


def latest_point(
    steps: np.ndarray, timestamps: np.ndarray, values: np.ndarray
) -> tuple[int, int, float]:
    """MLflow's latest point: the greatest (step, timestamp, value); NaN is greatest."""
    candidates = np.flatnonzero(steps == steps.max())
    if len(candidates) > 1:
        order = np.lexsort((values[candidates], timestamps[candidates]))
        candidates = candidates[order[-1:]]
    i = int(candidates[0])
    return int(steps[i]), int(timestamps[i]), float(values[i])


def _later(a: tuple[int, int, float], b: tuple[int, int, float]) -> bool:
    """Whether point a comes after point b in MLflow's order, as PostgreSQL compares."""
    if a[:2] != b[:2]:
        return a[:2] > b[:2]
    if np.isnan(a[2]):
        return not np.isnan(b[2])
    return not np.isnan(b[2]) and a[2] > b[2]


@dataclass
class _Pending:
    batch: ResolvedBatch
    future: asyncio.Future[bool]


class Writer:
    """Group commit of metric batches; ``start()`` before use, ``close()`` drains."""

    def __init__(
        self,
        *,
        connections: int,
        max_queue_points: int,
        max_group_points: int,
        retry_after: float,
        telemetry: Telemetry,
    ) -> None:
        self._pool: asyncpg.Pool | None = None
        self._connections = connections
        self._max_queue_points = max_queue_points
        self._max_group_points = max_group_points
        self._retry_after = retry_after
        self._telemetry = telemetry
        self._queue: deque[_Pending] = deque()
        self._queued_points = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self, pool: asyncpg.Pool) -> None:
        """Start the writer tasks; each takes a connection from ``pool`` per group."""
        self._pool = pool
        self._tasks = [
            asyncio.create_task(self._run(), name=f"writer-{i}")
            for i in range(self._connections)
        ]

    async def close(self) -> None:
        """Stop taking batches, commit everything queued, stop the tasks."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def write(self, batch: ResolvedBatch) -> bool:
        """Commit a batch; returns True when its id was applied before (a retry).

        Raises Overloaded when the queue is full or the server is stopping,
        StoreError when the database failed it. If the caller is cancelled
        the batch is still committed; a retry with its id writes nothing.
        """
        if self._closing:
            raise Overloaded(
                "the server is shutting down", retry_after=self._retry_after
            )
        if self._queued_points and (
            self._queued_points + batch.points > self._max_queue_points
        ):
            self._telemetry.rejected.labels(reason="queue_full").inc()
            raise Overloaded(
                f"the write queue holds {self._queued_points} points; retry later",
                retry_after=self._retry_after,
            )
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(batch, future))
        self._queued_points += batch.points
        self._telemetry.queue_points.set(self._queued_points)
        self._wakeup.set()
        return await asyncio.shield(future)

    @property
    def queued_points(self) -> int:
        return self._queued_points

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = self._take_group()
            await self._commit(group)

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        points = 0
        while self._queue and (not group or points < self._max_group_points):
            pending = self._queue.popleft()
            group.append(pending)
            points += pending.batch.points
        self._queued_points -= points
        self._telemetry.queue_points.set(self._queued_points)
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            duplicates = await self._with_retries(group)
        except Exception as error:
            if len(group) > 1 and not isinstance(error, _TRANSIENT):
                logger.warning(
                    "a group of %s batches failed (%s); committing them one by one",
                    len(group),
                    error,
                )
                for pending in group:
                    await self._commit([pending])
                return
            failure = _as_store_error(error, self._retry_after)
            logger.error("could not commit %s batches: %s", len(group), error)
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(failure)
            return
        # Within one group, a repeated id is a duplicate of its first copy.
        seen: set[uuid.UUID] = set()
        for pending in group:
            batch_id = pending.batch.batch_id
            if not pending.future.done():
                pending.future.set_result(batch_id in duplicates or batch_id in seen)
            seen.add(batch_id)

    async def _with_retries(self, group: list[_Pending]) -> set[uuid.UUID]:
        for attempt in range(_ATTEMPTS):
            try:
                return await self._transaction(group)
            except _TRANSIENT as error:
                if attempt == _ATTEMPTS - 1:
                    raise
                logger.warning("retrying a group commit after %s", type(error).__name__)
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def _transaction(self, group: list[_Pending]) -> set[uuid.UUID]:
        """Commit a group; returns the ids that had been applied before."""
        batches: dict[uuid.UUID, ResolvedBatch] = {}
        for pending in group:
            batches.setdefault(pending.batch.batch_id, pending.batch)
        started = time.perf_counter()
        assert self._pool is not None, "start() sets the pool"
        async with self._pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(_RECORD_BATCHES, list(batches))
            fresh = {row["batch_id"]: row["batch_num"] for row in rows}
            records, latest = _rows(batches, fresh)
            if records:
                await connection.copy_records_to_table(
                    "metric_chunks", records=records, columns=_CHUNK_COLUMNS
                )
            if latest:
                await connection.execute(_UPSERT_LATEST, *_latest_columns(latest))
        elapsed = time.perf_counter() - started
        points = sum(batches[i].points for i in fresh)
        self._telemetry.observe_commit(
            batches=len(fresh), points=points, group=len(group), seconds=elapsed
        )
        return {i for i in batches if i not in fresh}


async def expire_batch_ids(pool: asyncpg.Pool, *, older_than_hours: float) -> int:
    """Forget applied batch ids older than the retention; returns how many.

    A retry later than that would be applied again: the retention must
    exceed how long any client keeps retrying (the client's spool can hold a
    batch for as long as the server is unreachable, so keep it long).
    """
    result = await pool.execute(
        "DELETE FROM applied_batches "
        "WHERE applied_at < now() - make_interval(secs => $1)",
        older_than_hours * 3600.0,
    )
    return int(result.split()[-1])


def _rows(
    batches: dict[uuid.UUID, ResolvedBatch], fresh: dict[uuid.UUID, int]
) -> tuple[list[tuple[object, ...]], dict[tuple[int, int], tuple[int, int, float]]]:
    records: list[tuple[object, ...]] = []
    latest: dict[tuple[int, int], tuple[int, int, float]] = {}
    for batch_id, batch_num in fresh.items():
        for s in batches[batch_id].series:
            records.append(
                (
                    s.run_num,
                    s.key_id,
                    batch_num,
                    s.label,
                    s.n,
                    s.min_step,
                    s.max_step,
                    s.steps,
                    s.timestamps,
                    s.values,
                )
            )
            series = (s.run_num, s.key_id)
            if series not in latest or _later(s.latest, latest[series]):
                latest[series] = s.latest
    return records, latest


def _latest_columns(
    latest: dict[tuple[int, int], tuple[int, int, float]],
) -> tuple[list[int], list[int], list[int], list[int], list[float]]:
    ordered = sorted(latest.items())
    return (
        [series[0] for series, _ in ordered],
        [series[1] for series, _ in ordered],
        [point[0] for _, point in ordered],
        [point[1] for _, point in ordered],
        [point[2] for _, point in ordered],
    )


def _as_store_error(error: BaseException, retry_after: float) -> Exception:
    if isinstance(error, _TRANSIENT):
        return Overloaded(
            f"the database is unavailable ({type(error).__name__}); retry later",
            retry_after=retry_after,
        )
    return StoreError(f"committing the batch failed: {error}")
