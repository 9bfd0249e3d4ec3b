"""Runs started while the server was unreachable, created once it answers.

When runs/create cannot reach the server (outside strict mode) the client
picks the run id itself and keeps a creation record: what the create call
carried, plus the params, tags and final status logged while the run
waited. The flusher keeps the record in memory and, as
``<run_id>.run.json``, in the spool folder beside the segments holding the
run's batches, so that ``runstream sync`` can create the run before
uploading them when the process ended first.

``OfflineRuns`` is the flusher's part: it keeps the waiting runs, saves
their records, and creates each in the background with backoff, telling
the flusher when a run exists so its held batches may go.

The server treats a create with a known run id in the same experiment as
a retry and returns the existing run, and log-batch accepts a param logged
again with the same value; so ``create`` may be repeated, by the flusher
after a lost answer or by sync after a crash, and still makes one run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from runstream.client.entities import Run, RunData, RunInfo
from runstream.client.errors import (
    InvalidInput,
    NotFound,
    RequestRejected,
    SpoolError,
    Unavailable,
)
from runstream.client.report import Failures
from runstream.client.settings import ClientSettings
from runstream.client.spool import Spool, off_loop
from runstream.client.transport import Transport

logger = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 100


@dataclass
class PendingRun:
    """A run chosen by the client and not yet created on the server.

    The experiment is ``experiment_id``, or else the one named
    ``experiment_name`` (created if missing). ``params`` and ``logged_tags``
    were logged while the run waited; ``status`` and ``end_time`` come
    from an end_run that came first.
    """

    run_id: str
    experiment_id: str | None
    experiment_name: str | None
    run_name: str | None
    tags: dict[str, str]
    start_time: int
    user_id: str
    params: dict[str, str] = field(default_factory=dict)
    logged_tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    end_time: int | None = None
    # Bumped by every change, so a create that raced one is repeated.
    version: int = 0

    def defer(
        self,
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> None:
        """Keep what was logged for the create to send; raises InvalidInput.

        A param logged again with another value is refused here, as the
        server would refuse it.
        """
        for key, value in (params or {}).items():
            if self.params.get(key, value) != value:
                raise InvalidInput(
                    f"param {key!r} of run {self.run_id} was logged as "
                    f"{self.params[key]!r}, not {value!r}"
                )
        self.params.update(params or {})
        self.logged_tags.update(tags or {})
        if status is not None:
            self.status = status
        if end_time is not None:
            self.end_time = end_time
        if run_name is not None:
            self.run_name = run_name
        self.version += 1

    def as_run(self) -> Run:
        """The run as the client knows it, for get_run before it exists."""
        tags = {**self.tags, **self.logged_tags}
        info = RunInfo(
            run_id=self.run_id,
            experiment_id=self.experiment_id or "",
            run_name=self.run_name or tags.get("mlflow.runName", ""),
            user_id=self.user_id,
            status=self.status or "RUNNING",
            start_time=self.start_time,
            end_time=self.end_time,
        )
        return Run(info, RunData(params=dict(self.params), tags=tags))

    def to_json(self) -> bytes:
        document = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "version"
        }
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, data: bytes) -> PendingRun:
        """A record read back; raises ValueError if it is not one."""
        try:
            document = orjson.loads(data)
            return cls(
                run_id=str(document["run_id"]),
                experiment_id=document.get("experiment_id"),
                experiment_name=document.get("experiment_name"),
                run_name=document.get("run_name"),
                tags=dict(document.get("tags") or {}),
                start_time=int(document["start_time"]),
                user_id=str(document.get("user_id") or ""),
                params=dict(document.get("params") or {}),
                logged_tags=dict(document.get("logged_tags") or {}),
                status=document.get("status"),
                end_time=document.get("end_time"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a creation record: {exc}") from exc


class OfflineRuns:
    """The runs of one client waiting to be created, and their creation tasks.

    ``spool`` gives the client's spool (made on first use), ``errors``
    counts failed spool writes, and ``created`` is called with a run id
    once the run exists, or once the server refused it for good.
    """

    def __init__(
        self,
        transport: Transport,
        settings: ClientSettings,
        *,
        spool: Callable[[], Spool],
        errors: Failures,
        created: Callable[[str], None],
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.waiting: dict[str, PendingRun] = {}
        self._spool = spool
        self._errors = errors
        self._created = created
        self._tasks: set[asyncio.Task[None]] = set()
        self._saving = asyncio.Lock()

    def get(self, run_id: str) -> PendingRun | None:
        return self.waiting.get(run_id)

    async def start(self, pending: PendingRun, error: Exception) -> None:
        """Keep the run waiting and create it in the background.

        Writes the creation record to the spool first, so that a process
        that ends before the server answers leaves it for ``runstream sync``.
        """
        self.waiting[pending.run_id] = pending
        await self._save(pending)
        logger.warning(
            "run %s started offline (%s); it is created when the server answers "
            "and its points wait until then; its creation record is in %s",
            pending.run_id,
            error,
            self._spool().path,
        )
        task = asyncio.create_task(
            self._create(pending), name=f"runstream-create-{pending.run_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def defer(
        self,
        run_id: str,
        *,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> bool:
        """Keep params, tags or a status for a run not yet created.

        Returns False when the run is not waiting (send them now instead);
        raises InvalidInput for a param changed while the run waits.
        """
        pending = self.waiting.get(run_id)
        if pending is None:
            return False
        pending.defer(
            params=params,
            tags=tags,
            status=status,
            end_time=end_time,
            run_name=run_name,
        )
        await self._save(pending)
        return True

    async def cancel(self) -> None:
        """Stop creating: the records stay in the spool for ``runstream sync``."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _save(self, pending: PendingRun) -> None:
        spool = self._spool()
        # One write at a time, each of the latest state: a slower older
        # write must not replace a newer record.
        async with self._saving:
            try:
                await off_loop(spool.write_run, pending.run_id, pending.to_json())
            except SpoolError as exc:
                self._errors.add("spool failed", 1, str(exc))

    async def _create(self, pending: PendingRun) -> None:
        attempt = 0
        while True:
            version = pending.version
            try:
                await create(self.transport, pending)
            except Unavailable as exc:
                delay = self.settings.retry_delay(attempt)
                attempt += 1
                logger.debug("run %s not created yet: %s", pending.run_id, exc)
                await asyncio.sleep(delay)
                continue
            except RequestRejected as exc:
                logger.error(
                    "run %s, started offline, cannot be created: %s; the server "
                    "will refuse its points",
                    pending.run_id,
                    exc,
                )
            except Exception:
                logger.exception("creating run %s failed", pending.run_id)
            else:
                if pending.version != version:
                    continue  # something was logged meanwhile: send it too
                logger.info(
                    "run %s, started offline, now exists on the server",
                    pending.run_id,
                )
            break
        self._created(pending.run_id)
        spool = self._spool()
        # After any save still queued, which would bring the record back.
        async with self._saving:
            await off_loop(spool.remove_run, pending.run_id)


async def create(transport: Transport, pending: PendingRun) -> None:
    """Create the run with its chosen id, then send what was logged meanwhile.

    Raises Unavailable when the server cannot be reached (after the
    transport's retries) and RequestRejected when it refuses, such as the
    id taken by a run of another experiment.
    """
    if pending.experiment_id is None:
        pending.experiment_id = await experiment_named(
            transport, pending.experiment_name or "Default"
        )
    body: dict[str, Any] = {
        "run_id": pending.run_id,
        "experiment_id": pending.experiment_id,
        "user_id": pending.user_id,
        "start_time": pending.start_time,
        "tags": _items(pending.tags),
    }
    if pending.run_name:
        body["run_name"] = pending.run_name
    await transport.call("POST", "runs/create", json=body)

    params, tags = _items(pending.params), _items(pending.logged_tags)
    for start in range(0, max(len(params), len(tags)), MAX_BATCH_ITEMS):
        batch = {
            "run_id": pending.run_id,
            "params": params[start : start + MAX_BATCH_ITEMS],
            "tags": tags[start : start + MAX_BATCH_ITEMS],
        }
        await transport.call("POST", "runs/log-batch", json=batch)
    if pending.status is not None or pending.end_time is not None:
        update: dict[str, Any] = {"run_id": pending.run_id, "run_uuid": pending.run_id}
        if pending.status is not None:
            update["status"] = pending.status
        if pending.end_time is not None:
            update["end_time"] = pending.end_time
        await transport.call("POST", "runs/update", json=update)


async def experiment_named(transport: Transport, name: str) -> str:
    """The id of the experiment with this name, created if missing."""
    for _ in range(2):
        try:
            document = await transport.call(
                "GET", "experiments/get-by-name", params={"experiment_name": name}
            )
            return str(document["experiment"]["experiment_id"])
        except NotFound:
            pass
        try:
            document = await transport.call(
                "POST", "experiments/create", json={"name": name}
            )
            return str(document["experiment_id"])
        except RequestRejected as exc:
            # Another process created it between the two calls: read it again.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    raise RequestRejected(400, "INVALID_STATE", f"experiment {name!r} keeps vanishing")


def now_ms() -> int:
    return int(time.time() * 1000)


def _items(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in pairs.items()]
