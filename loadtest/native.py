"""The raw native driver: binary batches over aiohttp, retried by batch id.

Points go into per-series column buffers. A batch is cut when the buffers
hold ``batch_points`` points or their oldest point is ``batch_age`` old; it
gets a fresh batch id and waits in a bounded queue for one of
``max_in_flight`` senders. A sender posts it until the server answers 200
(then its step ranges count as acknowledged), a 4xx other than 429 (the
batch is rejected), or ``retry_for`` runs out. Every retry carries the same
batch id and body, so the server applies it at most once.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
import time
import uuid
from array import array
from dataclasses import dataclass

import aiohttp
import orjson
from runstream.loadtest.drivers import Driver, RunInfo
from runstream.loadtest.retry import Backoff, parse_retry_after

logger = logging.getLogger(__name__)

BATCHES_PATH = "/api/runstream/v1/batches"
BINARY_TYPE = "application/vnd.runstream.batch"
_MAGIC = b"RSB1"
_HEADER_LENGTH = struct.Struct("<I")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class _Batch:
    batch_id: str
    body: bytes
    ranges: list[tuple[int, int, int]]  # (series, first step, points)
    points: int
    cut_at: float


class NativeDriver(Driver):
    """Posts binary batches to ``/api/runstream/v1/batches``."""

    async def start(self) -> None:
        count = len(self.runs) * len(self.keys)
        self._steps = [array("q") for _ in range(count)]
        self._timestamps = [array("q") for _ in range(count)]
        self._values = [array("d") for _ in range(count)]
        self._dirty: list[int] = []
        self._buffered = 0
        self._taken = 0
        self._oldest = 0.0
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._sending = 0
        connector = aiohttp.TCPConnector(limit=self.options.max_in_flight + 2)
        timeout = aiohttp.ClientTimeout(
            total=self.options.request_timeout, sock_connect=5
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        self._tasks = [
            asyncio.create_task(self._sender())
            for _ in range(self.options.max_in_flight)
        ]
        self._tasks.append(asyncio.create_task(self._ager()))

    def log(self, series: int, step: int, timestamp: int, value: float) -> bool:
        steps = self._steps[series]
        if not steps:
            self._dirty.append(series)
            if not self._buffered:
                self._oldest = time.monotonic()
        steps.append(step)
        self._timestamps[series].append(timestamp)
        self._values[series].append(value)
        self._buffered += 1
        self._taken += 1
        if self._buffered >= self.options.batch_points:
            self._cut()
            return not self._room.is_set()
        return False

    async def wait(self) -> None:
        await self._room.wait()

    @property
    def in_flight(self) -> int:
        return self._taken - self.acks.points

    async def flush(self, timeout: float) -> None:
        if self._buffered:
            self._cut()
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            logger.warning(
                "flush: %d points unacknowledged after %.1fs", self.in_flight, timeout
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

    async def log_extras(
        self, run: RunInfo, *, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        body = orjson.dumps(
            {
                "run_id": run.run_id,
                "params": [{"key": k, "value": v} for k, v in params.items()],
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            }
        )
        await self._request(
            "POST", "/api/2.0/mlflow/runs/log-batch", body, "application/json"
        )

    async def upload_model(self, run: RunInfo, data: bytes) -> None:
        path = artifact_path(run.artifact_uri)
        await self._request(
            "PUT",
            f"/api/2.0/mlflow-artifacts/artifacts/{path}/model/model.bin",
            data,
            "application/octet-stream",
        )

    def _cut(self) -> None:
        header = []
        ranges = []
        parts: list[bytes] = []
        for series in self._dirty:
            steps = self._steps[series]
            n = len(steps)
            run, key = divmod(series, len(self.keys))
            header.append(
                {"run_id": self.runs[run].run_id, "key": self.keys[key], "n": n}
            )
            ranges.append((series, steps[0], n))
            parts.append(_little_endian(steps))
            parts.append(_little_endian(self._timestamps[series]))
            parts.append(_little_endian(self._values[series]))
            self._steps[series] = array("q")
            self._timestamps[series] = array("q")
            self._values[series] = array("d")
        batch_id = str(uuid.uuid4())
        head = orjson.dumps({"batch_id": batch_id, "series": header})
        body = b"".join([_MAGIC, _HEADER_LENGTH.pack(len(head)), head, *parts])
        batch = _Batch(batch_id, body, ranges, self._buffered, time.monotonic())
        self._dirty = []
        self._buffered = 0
        self._queue.put_nowait(batch)
        if self._queue.qsize() >= self.options.max_pending:
            self._room.clear()

    async def _ager(self) -> None:
        age = self.options.batch_age
        while True:
            await asyncio.sleep(age / 2)
            if self._buffered and time.monotonic() - self._oldest >= age:
                self._cut()

    async def _sender(self) -> None:
        while True:
            batch = await self._queue.get()
            if self._queue.qsize() < self.options.max_pending:
                self._room.set()
            self._sending += 1
            try:
                await self._deliver(batch)
            finally:
                self._sending -= 1
                self._queue.task_done()

    async def _deliver(self, batch: _Batch) -> None:
        reply = await self._request("POST", BATCHES_PATH, batch.body, BINARY_TYPE)
        if reply is None:
            return
        if reply.get("points") != batch.points:
            self.acks.error(
                f"batch {batch.batch_id} of {batch.points} points was acked "
                f"with points={reply.get('points')!r}"
            )
        if reply.get("duplicate"):
            self.acks.duplicates += 1
        for series, first, n in batch.ranges:
            self.acks.add(series, first, first + n)
        elapsed = time.monotonic() - batch.cut_at
        self.acks.latency.record(int(elapsed * 1e9))

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes,
        content_type: str,
    ) -> dict | None:
        """Send until a 200 (its JSON), a 4xx (None, counted), or the deadline."""
        backoff = Backoff(self.options.retry_for)
        headers = {"Content-Type": content_type}
        while True:
            retry_after = None
            try:
                async with self._session.request(
                    method, self.url + path, data=body, headers=headers
                ) as response:
                    payload = await response.read()
                    if response.status == 200:
                        return orjson.loads(payload) if payload else {}
                    if response.status not in _RETRY_STATUSES:
                        self.acks.rejected += 1
                        self.acks.error(
                            f"{method} {path}: HTTP {response.status} {payload[:200]!r}"
                        )
                        return None
                    if response.status in (429, 503):
                        self.acks.overloaded += 1
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    failure = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            delay = backoff.next_delay(retry_after)
            if delay is None:
                self.acks.error(
                    f"{method} {path}: gave up after {backoff.attempts} attempts, "
                    f"last {failure}"
                )
                return None
            self.acks.retries += 1
            await asyncio.sleep(delay)


def artifact_path(artifact_uri: str) -> str:
    """The path under the artifact proxy of an ``mlflow-artifacts:`` URI."""
    path = artifact_uri.split(":", 1)[1] if ":" in artifact_uri else artifact_uri
    if path.startswith("//"):
        path = path[2:].split("/", 1)[1] if "/" in path[2:] else ""
    return path.strip("/")


def _little_endian(column: array) -> bytes:
    if sys.byteorder == "little":
        return column.tobytes()
    swapped = array(column.typecode, column)
    swapped.byteswap()
    return swapped.tobytes()
