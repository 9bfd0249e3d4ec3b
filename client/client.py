"""AsyncClient: experiments, runs, params and tags, and buffered metrics.

    async with AsyncClient("http://127.0.0.1:5000") as client:
        experiment_id = await client.set_experiment("mnist")
        run = await client.create_run(experiment_id, run_name="baseline")
        await run.log_params({"lr": 0.01})
        for step in range(1000):
            run.log_metric("loss", loss, step=step)   # no await, no I/O
        report = await client.flush()                  # acked, or reported

Metric points travel in the background through the native batch endpoint
(see ``flusher``); everything else uses MLflow's REST API and is awaited.
Closing flushes for up to ``exit_timeout`` seconds and spools the rest.

Outside strict mode a run whose creation finds the server unreachable
starts offline (see ``offline``): the client chooses its id, and its
points, params, tags and status wait until the server answers.
"""

from __future__ import annotations

import getpass
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from runstream.client import offline, validation
from runstream.client.entities import Experiment, Run
from runstream.client.errors import (
    ConfigurationError,
    FlushError,
    NotFound,
    Unavailable,
)
from runstream.client.flusher import Flusher
from runstream.client.offline import PendingRun
from runstream.client.report import FlushReport
from runstream.client.run import RunHandle, StrictRunHandle
from runstream.client.settings import ClientSettings, load_settings
from runstream.client.transport import Transport

logger = logging.getLogger(__name__)

MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100


class AsyncClient:
    """A client of one tracking server; an async context manager.

    Settings come from ``settings`` or, field by field, from the keyword
    arguments and ``RUNSTREAM_*`` (and MLflow's) environment variables.
    Raises ConfigurationError when no tracking URI is known.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        settings: ClientSettings | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = load_settings(tracking_uri=tracking_uri, **overrides)
        elif tracking_uri is not None or overrides:
            settings = settings.model_copy(
                update={
                    "tracking_uri": tracking_uri or settings.tracking_uri,
                    **overrides,
                }
            )
        uri = settings.tracking_uri
        if not uri:
            raise ConfigurationError(
                "no tracking URI: pass one, or set RUNSTREAM_TRACKING_URI "
                "(or MLFLOW_TRACKING_URI)"
            )
        if not uri.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"tracking URI {uri!r} must be http:// or https://"
            )
        self.settings = settings
        self.transport = Transport(
            uri,
            timeout=settings.request_timeout,
            connections=settings.max_in_flight + 2,
            attempts=settings.call_attempts,
            retry_initial=settings.retry_initial,
            retry_max=settings.retry_max,
        )
        self.flusher = Flusher(self.transport, settings)
        self._handles: dict[str, RunHandle] = {}
        self._reported: tuple[int, int] = (0, 0)
        self._started = False

    @property
    def tracking_uri(self) -> str:
        return self.transport.tracking_uri

    async def start(self) -> None:
        await self.transport.start()
        await self.flusher.start()
        self._started = True

    async def close(self, timeout: float | None = None) -> FlushReport:
        """Flush within ``timeout`` (default exit_timeout) and spool the rest."""
        if not self._started:
            return self.flusher.report()
        self._started = False
        deadline = self.settings.exit_timeout if timeout is None else timeout
        report = await self.flusher.close(deadline)
        await self.transport.close()
        return report

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # experiments

    async def get_experiment_by_name(self, name: str) -> Experiment | None:
        try:
            document = await self.transport.call(
                "GET", "experiments/get-by-name", params={"experiment_name": name}
            )
        except NotFound:
            return None
        return Experiment.from_json(document["experiment"])

    async def get_experiment(self, experiment_id: str) -> Experiment:
        document = await self.transport.call(
            "GET", "experiments/get", params={"experiment_id": str(experiment_id)}
        )
        return Experiment.from_json(document["experiment"])

    async def create_experiment(
        self,
        name: str,
        *,
        artifact_location: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """Create an experiment; returns its id. Raises RequestRejected if it exists."""
        body: dict[str, Any] = {"name": name}
        if artifact_location:
            body["artifact_location"] = artifact_location
        if tags:
            body["tags"] = [{"key": k, "value": str(v)} for k, v in tags.items()]
        document = await self.transport.call("POST", "experiments/create", json=body)
        return str(document["experiment_id"])

    async def set_experiment(self, name: str) -> str:
        """The id of the experiment with this name, created if missing."""
        experiment = await self.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return await self.create_experiment(name)

    # runs

    async def create_run(
        self,
        experiment_id: str = "0",
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        start_time: int | None = None,
        experiment_name: str | None = None,
    ) -> RunHandle:
        """Create a run and return its handle for logging.

        With ``experiment_name`` the run goes to the experiment of that name
        (created if missing) instead of ``experiment_id``. When the server
        cannot be reached the run starts offline, outside strict mode: the
        handle works at once and the run is created when the server answers.
        In strict mode that raises Unavailable; a refusal raises
        RequestRejected in both modes.
        """
        pending = PendingRun(
            run_id=uuid.uuid4().hex,
            experiment_id=None if experiment_name else str(experiment_id),
            experiment_name=experiment_name,
            run_name=run_name,
            tags={k: str(v) for k, v in (tags or {}).items()},
            start_time=start_time or offline.now_ms(),
            user_id=_user(),
        )
        try:
            await offline.create(self.transport, pending)
        except Unavailable as exc:
            if self.settings.strict:
                raise
            await self.flusher.offline.start(pending, exc)
        return self.run(pending.run_id)

    def run(self, run_id: str) -> RunHandle:
        """A handle on an existing run, without asking the server.

        Many processes may hold handles on one run: each keeps its own
        label (the ``label`` setting, such as the rank) with its points.
        """
        handle = self._handles.get(run_id)
        if handle is None:
            validation.check_run_id(run_id)
            kind = StrictRunHandle if self.settings.strict else RunHandle
            buffer = self.flusher.buffer(run_id)
            handle = kind(self, buffer, limit=2 * self.settings.flush_points)
            handle = self._handles.setdefault(run_id, handle)
        return handle

    async def get_run(self, run_id: str) -> Run:
        """The run as the server has it now (metrics: the latest per key).

        A run started offline and not created yet is described as the
        client knows it, without metrics.
        """
        pending = self.flusher.offline.get(run_id)
        if pending is not None:
            return pending.as_run()
        document = await self.transport.call(
            "GET", "runs/get", params={"run_id": run_id, "run_uuid": run_id}
        )
        return Run.from_json(document["run"])

    async def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> None:
        """Update a run; one started offline keeps the update until it exists."""
        deferred = await self.flusher.offline.defer(
            run_id, status=status, end_time=end_time, run_name=run_name
        )
        if deferred:
            return
        body: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id}
        if status is not None:
            body["status"] = status
        if end_time is not None:
            body["end_time"] = end_time
        if run_name is not None:
            body["run_name"] = run_name
        await self.transport.call("POST", "runs/update", json=body)

    async def end_run(self, run_id: str, *, status: str = "FINISHED") -> FlushReport:
        """Flush (within exit_timeout), then mark the run ended with ``status``."""
        report = await self.flush(self.settings.exit_timeout)
        await self.update_run(run_id, status=status, end_time=int(time.time() * 1000))
        return report

    async def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Send params and tags now, in MLflow's log-batch chunks of 100.

        Raises InvalidInput for a bad key or an over-long value before
        sending, RequestRejected when the server refuses (a param logged
        again with another value). For a run started offline they wait, in
        its creation record, until it is created.
        """
        param_items = [
            {
                "key": validation.check_key(k, what="param key"),
                "value": validation.param_value(
                    k, v, limit=validation.MAX_PARAM_VALUE_LENGTH
                ),
            }
            for k, v in (params or {}).items()
        ]
        tag_items = [
            {
                "key": validation.check_key(k, what="tag key"),
                "value": validation.param_value(
                    k, v, limit=validation.MAX_TAG_VALUE_LENGTH
                ),
            }
            for k, v in (tags or {}).items()
        ]
        deferred = await self.flusher.offline.defer(
            run_id,
            params={item["key"]: item["value"] for item in param_items},
            tags={item["key"]: item["value"] for item in tag_items},
        )
        if deferred:
            return
        for start in range(0, max(len(param_items), len(tag_items)), MAX_BATCH_PARAMS):
            body = {
                "run_id": run_id,
                "params": param_items[start : start + MAX_BATCH_PARAMS],
                "tags": tag_items[start : start + MAX_BATCH_TAGS],
            }
            await self.transport.call("POST", "runs/log-batch", json=body)

    # metrics

    async def flush(self, timeout: float | None = None) -> FlushReport:
        """Return when every point logged before the call is acknowledged.

        With a ``timeout`` (seconds) it returns by then; the report says what
        is still pending. In strict mode raises FlushError when points were
        refused or dropped since the last flush, or are still pending.
        """
        report = await self.flusher.flush(timeout)
        failed = (sum(report.rejected.values()), sum(report.invalid.values()))
        new_failures = failed != self._reported
        self._reported = failed
        if self.settings.strict and (new_failures or report.pending):
            raise FlushError(report)
        return report

    async def get_series(
        self, run_id: str, key: str, *, label: str | None = None
    ) -> dict[str, Any]:
        """The whole stored history of one series (steps, timestamps, values)."""
        return await self.transport.get_series(run_id, key, label=label)

    def _overflow(self, run_id: str) -> None:
        self.flusher.overflow(run_id)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
