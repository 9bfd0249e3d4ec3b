"""The writer against a real PostgreSQL: group commit without collateral damage."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import numpy as np
import pytest
from runstream.ingest.errors import StoreError
from runstream.ingest.telemetry import Telemetry
from runstream.ingest.writer import (
    EncodedSeries,
    ResolvedBatch,
    Writer,
    expire_batch_ids,
    latest_point,
)

pytestmark = pytest.mark.timeout(60)


def batch(run_num: int, key_id: int, steps: list[int]) -> ResolvedBatch:
    array = np.array(steps, dtype=np.int64)
    return ResolvedBatch(
        uuid.uuid4(),
        [
            EncodedSeries.encode(
                run_num=run_num,
                key_id=key_id,
                label="",
                steps=array,
                timestamps=array + 1_700_000_000_000,
                values=array / 10,
            )
        ],
    )


@pytest.fixture
async def pool(make_database):
    pool = await asyncpg.create_pool(make_database(), min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def writer(pool: asyncpg.Pool):
    writer = Writer(
        connections=1,
        max_queue_points=1_000_000,
        max_group_points=1_000_000,
        retry_after=1.0,
        telemetry=Telemetry(),
    )
    await writer.start(pool)
    yield writer
    await writer.close()


async def new_series(pool: asyncpg.Pool) -> tuple[int, int]:
    run_num = await pool.fetchval(
        "INSERT INTO runs (run_uuid, experiment_id, name, artifact_uri) "
        "VALUES ($1, 0, 'r', '') RETURNING run_num",
        uuid.uuid4().hex,
    )
    key_id = await pool.fetchval(
        "INSERT INTO metric_keys (key) VALUES ($1) RETURNING key_id", uuid.uuid4().hex
    )
    return run_num, key_id


async def test_a_failing_batch_does_not_fail_its_group(
    pool: asyncpg.Pool, writer: Writer
) -> None:
    run_num, key_id = await new_series(pool)
    good = batch(run_num, key_id, [0, 1, 2])
    bad = batch(run_num + 10_000, key_id, [0, 1, 2])  # no such run: FK violation

    results = await asyncio.gather(
        writer.write(good), writer.write(bad), return_exceptions=True
    )

    assert results[0] is False
    assert isinstance(results[1], StoreError)
    stored = await pool.fetchval(
        "SELECT sum(n) FROM metric_chunks WHERE run_num = $1", run_num
    )
    assert stored == 3
    applied = await pool.fetchval(
        "SELECT count(*) FROM applied_batches WHERE batch_id = $1", bad.batch_id
    )
    assert applied == 0, "a failed batch must stay retryable"


async def test_same_batch_twice_in_one_group_is_applied_once(
    pool: asyncpg.Pool, writer: Writer
) -> None:
    run_num, key_id = await new_series(pool)
    once = batch(run_num, key_id, [5, 6])

    results = await asyncio.gather(writer.write(once), writer.write(once))

    assert sorted(results) == [False, True]
    stored = await pool.fetchval(
        "SELECT sum(n) FROM metric_chunks WHERE run_num = $1", run_num
    )
    assert stored == 2


async def test_close_commits_what_is_queued(pool: asyncpg.Pool, writer: Writer) -> None:
    run_num, key_id = await new_series(pool)
    pending = [
        asyncio.ensure_future(writer.write(batch(run_num, key_id, [i])))
        for i in range(50)
    ]
    await asyncio.sleep(0)

    await writer.close()

    assert all(p.done() and p.result() is False for p in pending)
    stored = await pool.fetchval(
        "SELECT sum(n) FROM metric_chunks WHERE run_num = $1", run_num
    )
    assert stored == 50


@pytest.mark.parametrize(
    ("steps", "timestamps", "values", "expected"),
    [
        ([1, 3, 2], [0, 0, 0], [1.0, 3.0, 2.0], (3, 0, 3.0)),
        ([3, 3, 3], [5, 9, 9], [1.0, 0.5, 0.7], (3, 9, 0.7)),
        ([0, 0], [1, 1], [float("nan"), 5.0], (0, 1, float("nan"))),
    ],
    ids=["max-step", "ties-by-timestamp-then-value", "nan-is-greatest"],
)
def test_latest_point_uses_mlflow_order(steps, timestamps, values, expected) -> None:
    point = latest_point(
        np.array(steps), np.array(timestamps), np.array(values, dtype=np.float64)
    )

    assert point[:2] == expected[:2]
    assert point[2] == expected[2] or (np.isnan(point[2]) and np.isnan(expected[2]))


async def test_batch_ids_past_retention_are_forgotten(
    pool: asyncpg.Pool, writer: Writer
) -> None:
    run_num, key_id = await new_series(pool)
    old, recent = batch(run_num, key_id, [0]), batch(run_num, key_id, [1])
    await writer.write(old)
    await writer.write(recent)
    await pool.execute(
        "UPDATE applied_batches SET applied_at = now() - interval '10 days' "
        "WHERE batch_id = $1",
        old.batch_id,
    )

    expired = await expire_batch_ids(pool, older_than_hours=168)

    assert expired == 1
    kept = await pool.fetch("SELECT batch_id FROM applied_batches")
    assert [row["batch_id"] for row in kept] == [recent.batch_id]
