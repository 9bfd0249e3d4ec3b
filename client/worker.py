"""The background thread that runs an AsyncClient for the synchronous API.

One daemon thread owns an event loop (uvloop when installed) and the client
on it. Callers hand it coroutines: ``call`` waits for the answer (creating
a run needs its id), ``submit`` does not (params and tags go in the
background; ``wait_submitted`` collects their outcome before a flush).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from runstream.client.client import AsyncClient
from runstream.client.report import Failures, FlushReport
from runstream.client.settings import ClientSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Worker:
    """A started AsyncClient on its own thread; close() stops both."""

    def __init__(self, settings: ClientSettings) -> None:
        self.client = AsyncClient(settings=settings)
        self.failures = Failures("a param or tag call failed")
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._main, name="runstream-client", daemon=True
        )
        self._submitted: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        self._thread.start()
        self.call(self.client.start())

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def call(
        self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None
    ) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def submit(self, coroutine: Coroutine[Any, Any, Any], *, what: str) -> None:
        """Run a coroutine in the background; its failure is counted and logged."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        with self._lock:
            self._submitted.add(future)

        def done(finished: concurrent.futures.Future[Any]) -> None:
            with self._lock:
                self._submitted.discard(finished)
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                self.failures.add(type(error).__name__, 1, f"{what}: {error}")

        future.add_done_callback(done)

    def wait_submitted(self, timeout: float | None) -> int:
        """Wait for the background calls; returns how many are still running."""
        with self._lock:
            waiting = list(self._submitted)
        _, not_done = concurrent.futures.wait(waiting, timeout=timeout)
        return len(not_done)

    def flush(self, timeout: float | None) -> FlushReport:
        self.wait_submitted(timeout)
        return self.call(self.client.flush(timeout))

    def close(self, timeout: float) -> FlushReport | None:
        """Flush within ``timeout`` seconds, spool the rest, stop the thread."""
        if self._closed:
            return None
        self._closed = True
        report = None
        try:
            self.wait_submitted(timeout)
            # The close itself may take a moment past the deadline to write
            # the spool; give it that.
            report = self.call(self.client.close(timeout), timeout + 30)
        except Exception:
            logger.exception("closing the tracking client failed")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        return report
