"""The flusher: seals run buffers into batches and sees each one acknowledged.

It runs as one task on the client's event loop. Every tick it seals the
buffers that are full (``flush_points``) or old (``flush_age_ms``) into
batches of at most ``flush_points`` points across runs, and starts sends,
at most ``max_in_flight`` at a time. A send that fails with a connection
error, a 5xx, 429 or 503 is retried with backoff and jitter (or after the
server's Retry-After) under the same batch id, until it is acknowledged or
the client closes; a 4xx is permanent: the series it names is dropped and
counted, and the rest of the batch is sent again under a new id.

Memory: sealed batches not yet acknowledged may hold ``max_buffer_bytes``;
past that, the ``spill`` policy writes new batches to the spool (replayed
in order once the server answers again) and the ``block`` policy makes the
logging thread wait for room. Unsealed points are bounded too: a caller
that finds ``2 * flush_points`` points waiting seals them itself.

Runs started offline (see ``offline.OfflineRuns``) are created in the
background with the same backoff; until then the batches carrying their
points are held, in memory or in the spool, and sent in order once the run
exists. A batch may carry points of other runs too, and these wait with it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from runstream.client.batch import SealedBatch, Series, decode, seal
from runstream.client.buffer import RunBuffer, split
from runstream.client.errors import RequestRejected, SpoolError
from runstream.client.offline import OfflineRuns
from runstream.client.report import Failures, FlushReport
from runstream.client.settings import ClientSettings
from runstream.client.spool import Spool, off_loop
from runstream.client.transport import Transport, Unreachable

logger = logging.getLogger(__name__)

_SERIES_INDEX = re.compile(r"series\[(\d+)\]")


class Flusher:
    """Batching, sending, retrying and spilling for one client."""

    def __init__(self, transport: Transport, settings: ClientSettings) -> None:
        self.transport = transport
        self.settings = settings
        self.label = settings.label
        self.buffers: dict[str, RunBuffer] = {}
        self.invalid = Failures("points dropped at the client")
        self.rejected = Failures("points refused by the server")
        self.errors = Failures("sending a batch failed; retrying")

        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._queue: deque[SealedBatch] = deque()
        self._spooled: deque[SealedBatch] = deque()
        self._pending: dict[uuid.UUID, SealedBatch] = {}
        self._memory = 0
        self._seq = 0
        self._acked = 0
        self._spool: Spool | None = None
        self._announced = False
        # Runs not yet created on the server, and the batches waiting for them.
        self.offline = OfflineRuns(
            transport,
            settings,
            spool=lambda: self._spool_or_create(announce=False),
            errors=self.errors,
            created=self._release,
        )
        self._held: list[SealedBatch] = []
        self._healthy = True
        self._closing = False
        self._closed = False

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._finished: asyncio.Event | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._tick = min(max(settings.flush_age_ms / 4000, 0.005), 0.05)

    # lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="runstream-flusher")

    async def close(self, timeout: float) -> FlushReport:
        """Flush for up to ``timeout`` seconds, then spool what is left."""
        self._closing = True
        with self._room:
            self._room.notify_all()
        report = await self.flush(timeout)

        self._closed = True
        if self._task is not None:
            self._notify()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in self._sending:
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self.offline.cancel()

        left = [b for b in self._pending.values() if b.body is not None]
        for batch in left:
            await off_loop(self._spill, batch)
        report = self.report()
        self._close_spool(report)
        return report

    def buffer(self, run_id: str) -> RunBuffer:
        """The buffer of a run, created on first use."""
        buffer = self.buffers.get(run_id)
        if buffer is None:
            buffer = self.buffers.setdefault(
                run_id, RunBuffer(run_id, self.label, deque())
            )
        return buffer

    def _release(self, run_id: str) -> None:
        """Let the held batches of a run flow, before newer ones, in order."""
        with self._lock:
            waiting = self.offline.waiting
            waiting.pop(run_id, None)
            ready = [b for b in self._held if b.runs.isdisjoint(waiting)]
            self._held = [b for b in self._held if not b.runs.isdisjoint(waiting)]
            self._spooled.extendleft(reversed([b for b in ready if b.body is None]))
            self._queue.extendleft(reversed([b for b in ready if b.body is not None]))
        self._notify()

    # flushing

    async def flush(self, timeout: float | None = None) -> FlushReport:
        """Seal everything buffered and wait until it is acked or refused."""
        for batch in self._seal(force=True):
            await self._admit_async(batch)
        target = self._seq
        self._notify()

        deadline = None if timeout is None else time.monotonic() + timeout
        assert self._finished is not None and self._loop is not None
        while True:
            self._finished.clear()
            if all(b.seq > target for b in self._pending.values()):
                break
            if deadline is None:
                await self._finished.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timer = self._loop.call_later(remaining, self._finished.set)
            try:
                await self._finished.wait()
            finally:
                timer.cancel()
        return self.report()

    def report(self) -> FlushReport:
        with self._lock:
            pending = sum(b.points for b in self._pending.values())
            spooled = sum(b.points for b in self._pending.values() if b.spool_ref)
            acked = self._acked
        unsealed = sum(len(b.points) for b in self.buffers.values())
        return FlushReport(
            acknowledged=acked,
            pending=pending + unsealed,
            spooled=spooled,
            rejected=self.rejected.counts(),
            invalid=self.invalid.counts(),
            errors=self.errors.counts(),
            spool_path=self._spool.path if self._spool else None,
        )

    def overflow(self, run_id: str) -> None:
        """Called by a logging thread that found its run's buffer at the limit."""
        buffer = self.buffers[run_id]
        if self._closed:
            count = len(buffer.take())
            self.invalid.add("logged after close", count, "the client is closed")
            return
        on_loop = threading.get_ident() == self._loop_thread
        if self.settings.overflow == "block" and not on_loop:
            # Wait for room, then seal one batch: the caller holds at most one
            # batch over the bound, and only spills if it waited in vain.
            roomy = self._wait_for_room()
            for batch in self._seal(force=True, only=buffer, single=True):
                if not self._admit(batch, bounded=not roomy):
                    self._spill(batch)
            self._notify()
            return
        for batch in self._seal(force=True, only=buffer):
            if not self._admit(batch, bounded=True):
                self._spill(batch)
        self._notify()

    def _wait_for_room(self) -> bool:
        """Block until sealed batches fit the bound; False after block_timeout."""
        limit = self.settings.max_buffer_bytes
        with self._room:
            roomy = self._room.wait_for(
                lambda: self._memory < limit or self._closing,
                timeout=self.settings.block_timeout,
            )
        if not roomy:
            self.errors.add(
                "blocked too long",
                1,
                f"logging waited {self.settings.block_timeout}s for the server; "
                "spilling to the spool instead",
            )
        return roomy

    # the flusher task

    async def _run(self) -> None:
        assert self._wake is not None and self._loop is not None
        age = self.settings.flush_age_ms / 1000
        while not self._closed:
            # A timer rather than asyncio.wait_for, which in Python 3.11 can
            # swallow the cancellation that close() sends.
            timer = self._loop.call_later(self._tick, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            try:
                for batch in self._seal(force=False, age=age):
                    await self._admit_async(batch)
                self._dispatch()
            except Exception:
                # Our bug; keep flushing the other batches rather than
                # stopping all tracking.
                logger.exception("the flusher failed a step; going on")

    def _seal(
        self,
        *,
        force: bool,
        age: float = 0.0,
        only: RunBuffer | None = None,
        single: bool = False,
    ) -> list[SealedBatch]:
        limit = self.settings.flush_points
        # Under the block policy the flusher seals only while there is room;
        # past the bound the points stay where they are, and the logging
        # threads find their buffers full and wait.
        bounded = not force and self.settings.overflow == "block"
        room = self.settings.max_buffer_bytes - self._memory
        if bounded and room <= 0:
            return []
        now = time.monotonic()
        batches: list[SealedBatch] = []
        series: list[Series] = []
        count = 0
        for buffer in [only] if only else list(self.buffers.values()):
            waiting = len(buffer.points)
            if waiting == 0:
                buffer.since = None
                continue
            if not force:
                if buffer.since is None:
                    buffer.since = now
                if waiting < limit and now - buffer.since < age:
                    continue
            buffer.since = None
            # Take each buffer at most once per batch: a batch may not carry
            # one series twice.
            while waiting > 0:
                items = buffer.take(min(waiting, limit - count))
                if not items:
                    break
                waiting -= len(items)
                count += len(items)
                series.extend(split(buffer, items, self.invalid))
                if count < limit:
                    # Another thread took some points first; the rest wait
                    # for the next batch.
                    break
                if series:
                    batches.append(seal(series))
                    room -= batches[-1].size
                series, count = [], 0
                if (bounded and room <= 0) or (single and batches):
                    return batches
        if series:
            batches.append(seal(series))
        return batches

    def _admit(
        self, batch: SealedBatch, *, seq: int | None = None, bounded: bool = False
    ) -> bool:
        """Register a batch; True if it is queued in memory, False if it must spill.

        Under the block policy the flusher's own batches may pass the bound
        (their points were in memory already, as bulkier tuples); a caller
        that waited in vain, or runs on the loop and cannot wait, is
        ``bounded`` and spills.
        """
        with self._lock:
            if seq is None:
                self._seq += 1
                seq = self._seq
            batch.seq = seq
            self._pending[batch.batch_id] = batch
            fits = self._memory + batch.size <= self.settings.max_buffer_bytes
            lenient = self.settings.overflow == "block" and not bounded
            if fits or self._memory == 0 or lenient:
                self._queue.append(batch)
                self._memory += batch.size
                return True
        return False

    async def _admit_async(self, batch: SealedBatch, *, seq: int | None = None) -> None:
        if not self._admit(batch, seq=seq):
            await off_loop(self._spill, batch)

    def _spill(self, batch: SealedBatch) -> None:
        """Move a registered batch's body to the spool (blocking disk I/O)."""
        body = batch.body
        assert body is not None
        try:
            record = self._spool_or_create().append(body)
        except SpoolError as exc:
            # The disk is full or gone: keep the batch in memory, over the
            # bound, rather than lose it.
            self.errors.add("spool failed", 1, str(exc))
            with self._lock:
                if batch not in self._queue:
                    self._queue.append(batch)
                    self._memory += batch.size
            return
        with self._lock:
            for waiting in (self._queue, self._held):
                if batch in waiting:
                    waiting.remove(batch)
                    self._memory -= batch.size
            batch.spool_ref = record
            batch.body = None
            if batch.batch_id in self._pending and not self._closed:
                self._spooled.append(batch)

    def _spool_or_create(self, *, announce: bool = True) -> Spool:
        with self._lock:
            if self._spool is None:
                self._spool = Spool(
                    self.settings.spool_dir,
                    label=self.label,
                    segment_bytes=self.settings.spool_segment_bytes,
                )
            if announce and not self._announced:
                self._announced = True
                logger.warning(
                    "the server is not keeping up or not reachable; spilling "
                    "batches to %s (replayed when it answers again)",
                    self._spool.path,
                )
            return self._spool

    def _notify(self) -> None:
        if self._loop is None or self._wake is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass  # the loop is closed: close() already spooled what was left

    # sending

    def _dispatch(self) -> None:
        assert self._loop is not None
        while len(self._sending) < self.settings.max_in_flight:
            batch = self._next()
            if batch is None:
                return
            task = self._loop.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not self._closed:
            self._notify()

    def _next(self) -> SealedBatch | None:
        with self._lock:
            while True:
                batch = self._pick()
                if batch is None or batch.runs.isdisjoint(self.offline.waiting):
                    return batch
                self._held.append(batch)

    def _pick(self) -> SealedBatch | None:
        # Called with the lock held.
        # Spooled batches are older: replay them first while the server
        # answers and memory is not pressing; while it does not, probe with
        # one at a time.
        replay = self._spooled and (
            (self._healthy and self._memory < self.settings.max_buffer_bytes // 2)
            or (not self._queue and not self._sending)
        )
        if replay:
            return self._spooled.popleft()
        if self._queue:
            return self._queue.popleft()
        return None

    async def _send(self, batch: SealedBatch) -> None:
        loaded = 0
        try:
            body = batch.body
            if body is None:
                assert self._spool is not None
                body = await off_loop(self._spool.read, batch.spool_ref)
                loaded = batch.size
                with self._lock:
                    self._memory += loaded
            await self._deliver(batch, body)
        except asyncio.CancelledError:
            if batch.spool_ref is None and not self._closing:
                with self._lock:
                    self._queue.appendleft(batch)
            raise
        except SpoolError as exc:
            self.invalid.add("spool damaged", batch.points, str(exc))
            self._finish(batch, acked=False)
        finally:
            if loaded:
                with self._lock:
                    self._memory -= loaded

    async def _deliver(self, batch: SealedBatch, body: bytes) -> None:
        attempt = 0
        while True:
            try:
                await self.transport.send_batch(body)
            except Unreachable as exc:
                self._healthy = False
                self.errors.add(exc.kind, 1, f"batch {batch.batch_id}: {exc}")
                delay = exc.retry_after
                if delay is None:
                    delay = self.settings.retry_delay(attempt)
                attempt += 1
                batch.attempts = attempt
                await asyncio.sleep(delay)
                continue
            except RequestRejected as exc:
                await self._refused(batch, body, exc)
                return
            self._healthy = True
            self._finish(batch, acked=True)
            return

    async def _refused(
        self, batch: SealedBatch, body: bytes, error: RequestRejected
    ) -> None:
        _, series = decode(body)
        match = _SERIES_INDEX.search(error.message)
        index = int(match.group(1)) if match else None
        if len(series) == 1 or (index is not None and index >= len(series)):
            self.rejected.add(error.error_code, batch.points, str(error))
            self._finish(batch, acked=False)
            return

        # Only the named series is at fault: resend the others under a new
        # id. If none is named, send each series alone to find the bad ones.
        if index is not None:
            bad = series.pop(index)
            self.rejected.add(error.error_code, len(bad), str(error))
            parts = [series]
        else:
            parts = [[s] for s in series]
        for part in parts:
            await self._admit_async(seal(part), seq=batch.seq)
        self._finish(batch, acked=False)

    def _finish(self, batch: SealedBatch, *, acked: bool) -> None:
        record = batch.spool_ref
        with self._room:
            if self._pending.pop(batch.batch_id, None) is None:
                return
            if batch.body is not None:
                self._memory -= batch.size
                batch.body = None
            if acked:
                self._acked += batch.points
            self._room.notify_all()
        if record is not None and self._spool is not None:
            self._spool.ack(record)
        if self._finished is not None:
            self._finished.set()

    def _close_spool(self, report: FlushReport) -> None:
        if self._spool is None:
            return
        path: Path = self._spool.path
        for run_id in self.offline.waiting:
            logger.warning(
                "run %s started offline and was never created on the server; its "
                "creation record and points are in the spool %s; create it and "
                "upload them with `runstream sync %s`",
                run_id,
                path,
                path,
            )
        if self._spool.close():
            logger.warning(
                "%s points were not acknowledged before the deadline; they are "
                "in the spool %s; upload them with `runstream sync %s`",
                report.spooled,
                path,
                path,
            )
