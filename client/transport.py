"""HTTP to the tracking server: one keep-alive session, errors sorted for retry.

``send_batch`` makes one attempt and says whether a failure is worth
retrying (``Unavailable``, with the server's Retry-After when it gave one)
or permanent (``RequestRejected``); the flusher owns the retry loop for
batches, because it must also decide when to spill. ``call`` is the MLflow
REST path for experiments, runs, params and tags, with its own bounded
retries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp
import aiohttp.payload
import orjson
from runstream.client.batch import BINARY_TYPE
from runstream.client.errors import NotFound, RequestRejected, Unavailable

logger = logging.getLogger(__name__)

BATCHES_PATH = "/api/runstream/v1/batches"
MLFLOW_PREFIX = "/api/2.0/mlflow/"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _BatchBody(aiohttp.BytesPayload):
    """A batch body; aiohttp's BytesPayload warns past 1 MiB, which batches pass.

    One buffered write of a few MiB to a socket transport does not stall the
    loop the way the warning fears, and the bytes are already in memory.
    """

    def __init__(self, value: bytes) -> None:
        aiohttp.payload.Payload.__init__(self, value, content_type=BINARY_TYPE)
        self._size = len(value)


class Unreachable(Unavailable):
    """One attempt failed in a way worth retrying; ``retry_after`` is in seconds."""

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


def backoff(attempt: int, *, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based), with jitter.

    The ceiling doubles per attempt up to ``maximum``; the wait is drawn
    from its upper half so that clients failing together spread out but
    none retries much sooner than the schedule says.
    """
    ceiling = min(maximum, initial * (2 ** min(attempt, 30)))
    return random.uniform(ceiling / 2, ceiling)


class Transport:
    """An aiohttp session bound to one tracking URI; start() before use."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        timeout: float,
        connections: int,
        attempts: int = 7,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.connections = connections
        self.attempts = attempts
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            headers={"User-Agent": "runstream-client"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("transport is not started; call start() first")
        return self._session

    async def send_batch(self, body: bytes) -> dict[str, Any]:
        """POST one binary batch, once; returns the server's ack document."""
        return await self._attempt("POST", BATCHES_PATH, data=_BatchBody(body))

    async def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An MLflow REST call (``endpoint`` like ``runs/create``), retried.

        Raises RequestRejected (NotFound for 404) at once on a 4xx, and
        Unavailable once ``attempts`` tries have failed.
        """
        path = MLFLOW_PREFIX + endpoint
        for attempt in range(self.attempts):
            try:
                return await self._attempt(method, path, params=params, json=json)
            except Unreachable as exc:
                if attempt + 1 == self.attempts:
                    raise Unavailable(
                        f"{method} {path} failed {self.attempts} times, last with {exc}"
                    ) from exc
                delay = exc.retry_after or backoff(
                    attempt, initial=self.retry_initial, maximum=self.retry_max
                )
                logger.debug("%s %s: %s; retrying in %.2fs", method, path, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def get_series(
        self, run_id: str, key: str, *, label: str | None = None
    ) -> dict[str, Any]:
        """The whole history of one series, from the native read endpoint."""
        params = {"run_id": run_id, "key": key}
        if label is not None:
            params["label"] = label
        return await self._attempt("GET", "/api/runstream/v1/series", params=params)

    async def _attempt(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.tracking_uri + path
        try:
            async with self.session.request(method, url, **kwargs) as reply:
                body = await reply.read()
                status = reply.status
                retry_after = reply.headers.get("Retry-After")
        except asyncio.TimeoutError as exc:
            raise Unreachable("timeout", f"no answer in {self.timeout}s") from exc
        except aiohttp.ClientError as exc:
            raise Unreachable("connection", f"{type(exc).__name__}: {exc}") from exc

        if status < 300:
            return orjson.loads(body) if body.strip() else {}
        document = _error_document(body)
        if status in RETRY_STATUSES or status >= 500:
            raise Unreachable(
                f"http {status}",
                f"{status} {document.get('error_code', '')}: "
                f"{document.get('message', '')}".strip(),
                retry_after=_seconds(retry_after),
            )
        code = str(document.get("error_code") or _fallback_code(status))
        message = str(document.get("message") or body[:200].decode(errors="replace"))
        if status == 404 and code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise NotFound(status, code, message)
        raise RequestRejected(status, code, message)


def _error_document(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def _fallback_code(status: int) -> str:
    # MLflow's client maps non-JSON error bodies by status the same way.
    return {400: "BAD_REQUEST", 404: "ENDPOINT_NOT_FOUND"}.get(status, f"HTTP_{status}")


def _seconds(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        # An HTTP date instead of seconds: treat it as "a short while".
        return 1.0
