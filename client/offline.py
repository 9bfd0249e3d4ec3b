"""Runs started while the server was unreachable, created once it answers.

When runs/create cannot reach the server (outside strict mode) the client
picks the run id itself and keeps a creation record: what the create call
carried, plus the params, tags and final status logged while the run
waited. The flusher keeps the record in memory and, as
``<run_id>.run.json``, in the spool folder beside the segments holding the
run's batches, so that ``runstream sync`` can create the run before
uploading them when the process ended first.

The server treats a create with a known run id in the same experiment as
a retry and returns the existing run, and log-batch accepts a param logged
again with the same value; so ``create`` may be repeated, by the flusher
after a lost answer or by sync after a crash, and still makes one run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from runstream.client.entities import Run, RunData, RunInfo
from runstream.client.errors import InvalidInput, NotFound, RequestRejected
from runstream.client.transport import Transport

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
