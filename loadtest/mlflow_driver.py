"""The ``mlflow`` driver: the real MLflow client, as a training script uses it.

Each step of a run goes out as one ``MlflowClient.log_batch`` call (what
``mlflow.log_metrics`` does), synchronously: the training loop waits for it,
which is MLflow's default. The call runs in a thread so the worker's event
loop keeps reporting progress.

MLflow's own HTTP retries back off for minutes; they are turned off here
and the driver retries with the harness's backoff instead, so that fault
scenarios recover in comparable time. MLflow's log-batch carries no batch
id: a retry after a lost answer is deduplicated only if the server collapses
identical metric rows, which is what the verifier checks.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from runstream.loadtest.drivers import Driver, RunInfo
from runstream.loadtest.retry import Backoff


class MlflowDriver(Driver):
    """Logs through ``mlflow.tracking.MlflowClient``, one log_batch per run step."""

    async def start(self) -> None:
        # Set before the first request: the client reads them per call.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(
            int(self.options.request_timeout)
        )
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        from requests import RequestException

        self._metric = Metric
        self._param = Param
        self._tag = RunTag
        # Metric calls raise MlflowException; artifact uploads raise requests'.
        self._exceptions = (MlflowException, RequestException, OSError)
        self._client = MlflowClient(tracking_uri=self.url)
        self._pending: list[list[Any]] = [[] for _ in self.runs]
        self._series: list[list[tuple[int, int]]] = [[] for _ in self.runs]
        self._ready: list[int] = []

    def log(self, series: int, step: int, timestamp: int, value: float) -> bool:
        run, key = divmod(series, len(self.keys))
        self._pending[run].append(self._metric(self.keys[key], value, timestamp, step))
        self._series[run].append((series, step))
        if key == len(self.keys) - 1:
            self._ready.append(run)
            return True
        return False

    async def wait(self) -> None:
        ready, self._ready = self._ready, []
        for run in ready:
            await self._send(run)

    async def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for run in range(len(self.runs)):
            if self._pending[run] and time.monotonic() < deadline:
                await self._send(run)

    async def close(self) -> None:
        self._pending = [[] for _ in self.runs]

    async def log_extras(
        self, run: RunInfo, *, params: dict[str, str], tags: dict[str, str]
    ) -> None:
        await self._call(
            self._client.log_batch,
            run.run_id,
            params=[self._param(k, v) for k, v in params.items()],
            tags=[self._tag(k, v) for k, v in tags.items()],
        )

    async def upload_model(self, run: RunInfo, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="runstream-model-") as folder:
            path = Path(folder) / "model.bin"
            await asyncio.to_thread(path.write_bytes, data)
            await self._call(self._client.log_artifact, run.run_id, str(path), "model")

    async def _send(self, run: int) -> None:
        metrics, self._pending[run] = self._pending[run], []
        series, self._series[run] = self._series[run], []
        started = time.monotonic()
        for first in range(0, len(metrics), 1000):
            chunk = metrics[first : first + 1000]
            if not await self._call(
                self._client.log_batch, self.runs[run].run_id, metrics=chunk
            ):
                return
            for index, step in series[first : first + 1000]:
                self.acks.add(index, step, step + 1)
        self.acks.latency.record(int((time.monotonic() - started) * 1e9))

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> bool:
        """Call until it succeeds (True), is rejected or times out (False)."""
        backoff = Backoff(self.options.retry_for)
        while True:
            try:
                await asyncio.to_thread(function, *args, **kwargs)
                return True
            except self._exceptions as exc:
                status = _status(exc)
                failure = f"{type(exc).__name__}: {str(exc)[:200]}"
                if 400 <= status < 500 and status not in (408, 429):
                    self.acks.rejected += 1
                    self.acks.error(failure)
                    return False
                if status in (429, 503):
                    self.acks.overloaded += 1
            delay = backoff.next_delay()
            if delay is None:
                self.acks.error(f"gave up after {backoff.attempts} attempts: {failure}")
                return False
            self.acks.retries += 1
            await asyncio.sleep(delay)


def _status(exc: Exception) -> int:
    """The HTTP status behind a client error; 500 when there was no answer."""
    if hasattr(exc, "get_http_status_code"):
        return int(exc.get_http_status_code())
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return int(response.status_code)
    return 500
