"""The ``runstream`` driver: runstream's own AsyncClient, as a training job uses it.

``log`` is ``RunHandle.log_metric``: an append, no I/O; the client's flusher
batches, sends and retries on the same event loop. The client does not say
which batch carried which point, so acknowledgement is all or nothing: when
``flush`` reports nothing pending, refused or dropped, every offered step
counts as acknowledged; otherwise none does, and the verifier reports what
was stored anyway as ``unacked_stored``. Ack latency is not observable here.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

import aiohttp
from runstream.loadtest.drivers import Driver, RunInfo
from runstream.loadtest.native import artifact_path

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0


class ClientDriver(Driver):
    """Logs through ``runstream.client.AsyncClient`` with a private spool folder."""

    async def start(self) -> None:
        from runstream.client.client import AsyncClient

        self._spool = Path(tempfile.mkdtemp(prefix="runstream-loadtest-spool-"))
        self._client = AsyncClient(
            self.url,
            flush_points=self.options.batch_points,
            flush_age_ms=max(1, int(self.options.batch_age * 1000)),
            max_in_flight=self.options.max_in_flight,
            request_timeout=self.options.request_timeout,
            # The harness's backoff, so fault scenarios compare across drivers.
            retry_initial=0.05,
            retry_max=1.0,
            spool_dir=self._spool,
        )
        await self._client.start()
        self._handles = [self._client.run(run.run_id) for run in self.runs]
        self._logged = [0] * (len(self.runs) * len(self.keys))

    def log(self, series: int, step: int, timestamp: int, value: float) -> bool:
        run, key = divmod(series, len(self.keys))
        self._handles[run].log_metric(self.keys[key], value, step, timestamp)
        self._logged[series] = step + 1
        return False

    async def wait(self) -> None:
        return

    @property
    def acknowledged(self) -> int:
        return self._client.flusher.report().acknowledged

    @property
    def in_flight(self) -> int:
        return self._client.flusher.report().pending

    async def flush(self, timeout: float) -> None:
        report = await self._client.flush(timeout)
        if not report.ok:
            self.acks.error(f"flush: {report.summary()}")
            self.acks.rejected += sum(report.rejected.values())
            return
        for series, steps in enumerate(self._logged):
            if steps:
                self.acks.add(series, 0, steps)
        self.acks.retries = sum(report.errors.values())

    async def close(self) -> None:
        # Bounded: a client whose close hangs must not hang the worker with it.
        try:
            await asyncio.wait_for(self._client.close(timeout=1.0), CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("the runstream client did not close in %ss", CLOSE_TIMEOUT)
        await asyncio.to_thread(shutil.rmtree, self._spool, True)

    async def log_extras(
        self, run: RunInfo, *, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        from runstream.client.errors import TrackingError

        handle = self._handles[self.runs.index(run)]
        try:
            if params:
                await handle.log_params(params)
            if tags:
                await handle.set_tags(tags)
        except TrackingError as exc:
            self.acks.rejected += 1
            self.acks.error(f"params and tags of run {run.run_id}: {exc}")

    async def upload_model(self, run: RunInfo, data: bytes) -> None:
        # The client has no artifact upload; a training job would use mlflow's.
        url = (
            f"{self.url}/api/2.0/mlflow-artifacts/artifacts/"
            f"{artifact_path(run.artifact_uri)}/model/model.bin"
        )
        timeout = aiohttp.ClientTimeout(total=self.options.request_timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.put(url, data=data) as reply,
        ):
            if reply.status != 200:
                self.acks.rejected += 1
                self.acks.error(f"PUT {url}: HTTP {reply.status}")
