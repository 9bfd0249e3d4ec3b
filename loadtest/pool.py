"""The worker processes of one load test, and their progress as it arrives.

Workers are ``python -m runstream.loadtest.worker`` children (see that
module for the line protocol). The pool starts them, waits until all are
ready so they begin together, and keeps each one's latest counters.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import orjson
from runstream.loadtest.errors import WorkerError
from runstream.loadtest.worker import WorkerSpec

logger = logging.getLogger(__name__)

COUNTERS = ("offered", "acked", "retries", "overloaded", "in_flight", "rss")


class WorkerPool:
    """Worker processes; ``start`` spawns, ``go`` releases, ``wait`` reaps."""

    def __init__(self, specs: list[WorkerSpec], *, folder: Path) -> None:
        self.specs = specs
        self.folder = folder
        self.progress: list[dict[str, int]] = [
            dict.fromkeys(COUNTERS, 0) for _ in specs
        ]
        self.done = [False] * len(specs)
        self._processes: list[asyncio.subprocess.Process] = []
        self._readers: list[asyncio.Task[None]] = []
        self._ready: list[asyncio.Event] = [asyncio.Event() for _ in specs]
        self._said_ready = [False] * len(specs)

    async def start(self, timeout: float = 120.0) -> None:
        """Spawn every worker and wait until each has started its driver."""
        for spec in self.specs:
            spec_path = self.folder / f"worker-{spec.worker}.json"
            await asyncio.to_thread(spec_path.write_text, spec.model_dump_json())
            stderr = await asyncio.to_thread(
                open, self.folder / f"worker-{spec.worker}.log", "ab"
            )
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "runstream.loadtest.worker", str(spec_path),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )  # fmt: skip
            finally:
                stderr.close()
            self._processes.append(process)
            self._readers.append(asyncio.create_task(self._read(spec.worker, process)))
        waits = [asyncio.create_task(event.wait()) for event in self._ready]
        await asyncio.wait(waits, timeout=timeout)
        for wait in waits:
            wait.cancel()
        failed = [w for w, ready in enumerate(self._said_ready) if not ready]
        if failed:
            await self.kill()
            log = self.folder / f"worker-{failed[0]}.log"
            tail = await asyncio.to_thread(_tail, log)
            raise WorkerError(
                f"{len(failed)} workers did not start (waited at most "
                f"{timeout:.0f}s); worker {failed[0]}: {tail}"
            )

    async def go(self) -> None:
        for process in self._processes:
            assert process.stdin is not None, "spawned with a stdin pipe"
            process.stdin.write(b"go\n")
            await process.stdin.drain()

    def totals(self) -> dict[str, int]:
        result = dict.fromkeys(COUNTERS, 0)
        for counters in self.progress:
            for name in COUNTERS:
                result[name] += counters.get(name, 0)
        result["rss"] = max((c.get("rss", 0) for c in self.progress), default=0)
        return result

    @property
    def finished(self) -> bool:
        return all(process.returncode is not None for process in self._processes)

    async def wait(self, timeout: float) -> None:
        """Wait for every worker to exit; kill the rest after ``timeout``."""
        waits = [process.wait() for process in self._processes]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except asyncio.TimeoutError:
            logger.error("workers still running after %.0fs; killing them", timeout)
            await self.kill()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def kill(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def reports(self) -> list[dict[str, object]]:
        """Each worker's report; raises WorkerError naming any that left none."""
        reports = []
        for spec, process in zip(self.specs, self._processes):
            try:
                data = await asyncio.to_thread(spec.report_path.read_bytes)
            except FileNotFoundError:
                log = self.folder / f"worker-{spec.worker}.log"
                tail = await asyncio.to_thread(_tail, log)
                raise WorkerError(
                    f"worker {spec.worker} exited with {process.returncode} and no "
                    f"report: {tail}"
                ) from None
            reports.append(orjson.loads(data))
        return reports

    async def _read(self, worker: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None, "spawned with a stdout pipe"
        while line := await process.stdout.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                logger.warning("worker %s printed %r", worker, line[:200])
                continue
            if message.get("ready"):
                self._said_ready[worker] = True
                self._ready[worker].set()
            elif message.get("done"):
                self.done[worker] = True
            else:
                self.progress[worker] = message
        # A worker that dies before it is ready must not hold up start().
        self._ready[worker].set()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""
