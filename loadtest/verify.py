"""Proof of exactly-once: compare what servers acknowledged with what they hold.

For every series the workers report the steps they offered (0 up to
``offered``) and the step ranges the server acknowledged. The stored points
are read back and counted:

- missing: acknowledged steps that are not stored (a broken ack);
- duplicated: stored points beyond the first at the same step;
- unexpected: stored steps that were never offered;
- corrupted: stored values that differ from the value logged;
- unacked_stored: offered steps stored without an ack (an answer lost on
  the way back; not an error).

Points are read with SQL from ``metric_chunks`` when the database URL is
known, else with the native series read, or MLflow's get-history for
MLflow's server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import aiohttp
import numpy as np
from runstream.loadtest.errors import TargetError
from runstream.loadtest.workload import point_values

logger = logging.getLogger(__name__)

SeriesId = tuple[str, str]  # (run id, key)
Points = tuple[np.ndarray, np.ndarray]  # steps, values
Reader = Callable[[list[SeriesId]], Awaitable[dict[SeriesId, Points]]]

_CONCURRENT_READS = 8
_READ_ATTEMPTS = 6
_EXAMPLES = 10


@dataclass(frozen=True)
class Expected:
    """What one series should hold."""

    run_id: str
    key: str
    seed: int
    offered: int
    acked: list[list[int]]


@dataclass
class Verification:
    series: int = 0
    stored: int = 0
    acked: int = 0
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    corrupted: int = 0
    unacked_stored: int = 0
    method: str = ""
    examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (
            self.missing or self.duplicated or self.unexpected or self.corrupted
        )

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def check(expected: list[Expected], stored: dict[SeriesId, Points]) -> Verification:
    """Count missing, duplicated, unexpected and corrupted points of every series."""
    result = Verification(series=len(expected))
    empty = (np.empty(0, np.int64), np.empty(0, np.float64))
    for series in expected:
        steps, values = stored.get((series.run_id, series.key), empty)
        counts = _check_series(series, steps, values)
        for name, count in counts.items():
            setattr(result, name, getattr(result, name) + count)
        problems = {
            k: v
            for k, v in counts.items()
            if v and k not in ("stored", "acked", "unacked_stored")
        }
        if problems and len(result.examples) < _EXAMPLES:
            result.examples.append(f"run {series.run_id} key {series.key}: {problems}")
    return result


def _check_series(
    series: Expected, steps: np.ndarray, values: np.ndarray
) -> dict[str, int]:
    acked = np.zeros(series.offered, dtype=bool)
    for start, stop in series.acked:
        acked[start:stop] = True
    distinct, first = np.unique(steps, return_index=True)
    offered = (distinct >= 0) & (distinct < series.offered)
    in_range = distinct[offered]
    stored = np.zeros(series.offered, dtype=bool)
    stored[in_range] = True
    logged = point_values(np.uint64(series.seed), in_range)
    kept = values[first[offered]]
    return {
        "stored": len(steps),
        "acked": int(acked.sum()),
        "missing": int((acked & ~stored).sum()),
        "duplicated": len(steps) - len(distinct),
        "unexpected": int((~offered).sum()),
        "corrupted": int((kept != logged).sum()),
        "unacked_stored": int((stored & ~acked).sum()),
    }


def sql_reader(database_url: str) -> Reader:
    """Read every point of the series from ``metric_chunks``, decoding columns."""

    async def read(series: list[SeriesId]) -> dict[SeriesId, Points]:
        import asyncpg
        from runstream.ingest.encoding import decode_floats, decode_ints

        run_ids = sorted({run_id for run_id, _ in series})
        connection = await asyncpg.connect(database_url, timeout=30)
        try:
            rows = await connection.fetch(
                """
                SELECT r.run_uuid, k.key, c.n, c.steps, c.vals
                FROM metric_chunks c
                JOIN runs r USING (run_num)
                JOIN metric_keys k USING (key_id)
                WHERE r.run_uuid = ANY($1::text[])
                """,
                run_ids,
            )
        finally:
            await connection.close()
        parts: dict[SeriesId, list[Points]] = {}
        for run_id, key, n, steps, vals in rows:
            parts.setdefault((run_id, key), []).append(
                (decode_ints(steps, n), decode_floats(vals, n))
            )
        return {
            sid: (
                np.concatenate([p[0] for p in chunks]),
                np.concatenate([p[1] for p in chunks]),
            )
            for sid, chunks in parts.items()
        }

    return read


def native_reader(url: str) -> Reader:
    """Read each series with ``GET /api/runstream/v1/series``."""

    async def one(session: aiohttp.ClientSession, run_id: str, key: str) -> Points:
        params = {"run_id": run_id, "key": key}
        async with session.get(
            url + "/api/runstream/v1/series", params=params
        ) as reply:
            if reply.status != 200:
                _raise_for(
                    reply,
                    f"series read of run {run_id} key {key!r}",
                    await reply.text(),
                )
            document = await reply.json()
        return (
            np.asarray(document["steps"], dtype=np.int64),
            np.asarray(document["values"], dtype=np.float64),
        )

    return _per_series(one)


def history_reader(url: str) -> Reader:
    """Read each series with MLflow's ``metrics/get-history``, following pages."""

    async def one(session: aiohttp.ClientSession, run_id: str, key: str) -> Points:
        steps: list[int] = []
        values: list[float] = []
        token = None
        for _page in range(100_000):
            params = {"run_id": run_id, "metric_key": key, "max_results": "25000"}
            if token:
                params["page_token"] = token
            async with session.get(
                url + "/api/2.0/mlflow/metrics/get-history", params=params
            ) as reply:
                if reply.status != 200:
                    _raise_for(
                        reply,
                        f"get-history of run {run_id} key {key!r}",
                        await reply.text(),
                    )
                document = await reply.json()
            for metric in document.get("metrics", []):
                steps.append(int(metric.get("step", 0)))
                values.append(float(metric["value"]))
            token = document.get("next_page_token")
            if not token:
                break
        return np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)

    return _per_series(one)


async def _retried(
    one: Callable[[aiohttp.ClientSession, str, str], Awaitable[Points]],
    session: aiohttp.ClientSession,
    run_id: str,
    key: str,
) -> Points:
    """A read, tried again on a 5xx or a broken connection: a server just
    restarted by a fault may still be warming up."""
    for attempt in range(_READ_ATTEMPTS):
        try:
            return await one(session, run_id, key)
        except (_ServerBusy, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if attempt == _READ_ATTEMPTS - 1:
                raise TargetError(f"reading run {run_id} key {key!r}: {exc}") from exc
            await asyncio.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


class _ServerBusy(Exception):
    """A read answered with a 5xx."""


def _raise_for(reply: aiohttp.ClientResponse, what: str, body: str) -> None:
    if reply.status >= 500:
        raise _ServerBusy(f"{what}: HTTP {reply.status} {body[:200]}")
    raise TargetError(f"{what}: HTTP {reply.status} {body[:200]}")


def _per_series(
    one: Callable[[aiohttp.ClientSession, str, str], Awaitable[Points]],
) -> Reader:
    async def read(series: list[SeriesId]) -> dict[SeriesId, Points]:
        limit = asyncio.Semaphore(_CONCURRENT_READS)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def bounded(run_id: str, key: str) -> Points:
                async with limit:
                    return await _retried(one, session, run_id, key)

            results = await asyncio.gather(*(bounded(r, k) for r, k in series))
        return dict(zip(series, results))

    return read
