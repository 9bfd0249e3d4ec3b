"""The run handle: logging metrics costs about one list append.

``log_metric`` and ``log_metrics`` only append to the run's buffer; they do
no I/O, take no lock and never await, so they are safe from any thread and
from coroutines on any loop. The flusher seals and sends in the background.
Params and tags go to the server at once and are awaited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from time import time as _clock
from typing import TYPE_CHECKING, Any

from runstream.client import validation
from runstream.client.buffer import RunBuffer

if TYPE_CHECKING:
    from runstream.client.client import AsyncClient
    from runstream.client.entities import Run


def seconds(timestamp: object) -> float:
    """A caller's timestamp in milliseconds as seconds; NaN (rejected later) if bad."""
    try:
        return float(timestamp) / 1000.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class RunHandle:
    """Logs into one run through an AsyncClient; get it from client.create_run()."""

    __slots__ = ("_client", "_limit", "_points", "label", "run_id")

    def __init__(self, client: AsyncClient, buffer: RunBuffer, *, limit: int) -> None:
        self.run_id = buffer.run_id
        self.label = buffer.label
        self._client = client
        self._points = buffer.points
        # Past this many unsealed points the caller seals itself: the flusher
        # has fallen behind (or cannot run, on a loop the caller keeps busy).
        self._limit = limit

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Buffer one point; ``timestamp`` is in milliseconds (default: now).

        Returns at once. Outside strict mode a bad key or value is dropped
        and counted when its batch is sealed; flush() reports it.
        """
        points = self._points
        points.append(
            (key, value, step, _clock() if timestamp is None else seconds(timestamp))
        )
        if len(points) >= self._limit:
            self._client._overflow(self.run_id)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """Buffer one point per key, all with the same step and timestamp."""
        now = _clock()
        points = self._points
        points.extend([(key, value, step, now) for key, value in metrics.items()])
        if len(points) >= self._limit:
            self._client._overflow(self.run_id)

    async def log_param(self, key: str, value: Any) -> None:
        await self.log_params({key: value})

    async def log_params(self, params: Mapping[str, Any]) -> None:
        """Send params now; raises RequestRejected if one changes a logged value."""
        await self._client.log_batch(self.run_id, params=params)

    async def set_tag(self, key: str, value: Any) -> None:
        await self.set_tags({key: value})

    async def set_tags(self, tags: Mapping[str, Any]) -> None:
        await self._client.log_batch(self.run_id, tags=tags)

    async def end(self, status: str = "FINISHED") -> None:
        """Flush this client's points, then mark the run ended."""
        await self._client.end_run(self.run_id, status=status)

    async def get(self) -> Run:
        return await self._client.get_run(self.run_id)

    def __repr__(self) -> str:
        return f"<RunHandle run_id={self.run_id} label={self.label!r}>"


class StrictRunHandle(RunHandle):
    """A run handle that checks each point at the call and raises InvalidInput."""

    __slots__ = ()

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        validation.check_key(key, what="metric key")
        value = validation.check_value(key, value)
        step = validation.check_step(key, step)
        stamp = (
            _clock()
            if timestamp is None
            else validation.check_timestamp(key, timestamp)
        )
        points = self._points
        points.append((key, value, step, stamp))
        if len(points) >= self._limit:
            self._client._overflow(self.run_id)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        checked = [
            (
                validation.check_key(key, what="metric key"),
                validation.check_value(key, value),
            )
            for key, value in metrics.items()
        ]
        step = validation.check_step("metrics", step)
        now = _clock()
        points = self._points
        points.extend([(key, value, step, now) for key, value in checked])
        if len(points) >= self._limit:
            self._client._overflow(self.run_id)
