"""One worker process: a rank of the simulated training job.

Run as ``python -m runstream.loadtest.worker SPEC.json``. The protocol with
the harness is line-based:

- the worker starts its driver and prints ``{"ready": true}``;
- it waits for any line on stdin, then logs for the workload's duration
  or number of steps, printing cumulative counters every
  ``progress_interval`` seconds: ``{"offered", "acked", "retries", ...}``;
- it flushes for at most ``drain_timeout`` seconds, writes its report
  (``WorkerReport`` as JSON) to ``report_path`` and prints ``{"done": true}``.

A worker never raises into the loop for a failed request: failures are
counted in the report, and points the server never acknowledged are
reported as unacknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
import time
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict
from runstream.loadtest.drivers import Acks, Driver, RunInfo, driver_class
from runstream.loadtest.measure import Histogram
from runstream.loadtest.workload import (
    DriverName,
    DriverOptions,
    Workload,
    key_name,
    point_values,
    seeds,
)

logger = logging.getLogger(__name__)


class WorkerSpec(BaseModel):
    """Everything one worker needs, written by the harness as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker: int
    url: str
    driver: DriverName
    workload: Workload
    options: DriverOptions
    runs: list[tuple[str, str]]
    report_path: Path
    drain_timeout: float = 60.0
    progress_interval: float = 0.1


class _Counters:
    __slots__ = ("offered", "steps")

    def __init__(self) -> None:
        self.offered = 0
        self.steps = 0


async def run_worker(spec: WorkerSpec) -> None:
    """Run one worker to the end, writing its report; see the module docstring."""
    workload = spec.workload
    runs = [RunInfo(run_id, uri) for run_id, uri in spec.runs]
    acks = Acks(series=workload.series_per_worker)
    counters = _Counters()
    latency = Histogram()
    driver = driver_class(spec.driver)(
        spec.url,
        runs=runs,
        keys=[key_name(k) for k in range(workload.keys)],
        options=spec.options,
        acks=acks,
    )
    async with driver:
        _emit({"ready": True})
        await asyncio.to_thread(sys.stdin.readline)
        started = time.monotonic()
        progress = asyncio.create_task(_progress(spec, driver, acks, counters))
        try:
            await _log_extras(spec, driver, runs)
            await _train(spec, driver, counters, latency)
            if workload.model_bytes:
                data = bytes(workload.model_bytes)
                for run in runs:
                    await driver.upload_model(run, data)
            await driver.flush(spec.drain_timeout)
        finally:
            progress.cancel()
            elapsed = time.monotonic() - started
        _emit_progress(driver, acks, counters)
    report = {
        "worker": spec.worker,
        "steps": counters.steps,
        "offered": counters.offered,
        "acked": acks.points,
        "unacked": counters.offered - acks.points,
        "acked_ranges": acks.merged(),
        "retries": acks.retries,
        "overloaded": acks.overloaded,
        "duplicates": acks.duplicates,
        "rejected": acks.rejected,
        "errors": acks.errors,
        "log_latency": latency.to_json(),
        "ack_latency": acks.latency.to_json(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "elapsed": elapsed,
    }
    await asyncio.to_thread(spec.report_path.write_bytes, orjson.dumps(report))
    _emit({"done": True})


async def _log_extras(spec: WorkerSpec, driver: Driver, runs: list[RunInfo]) -> None:
    workload = spec.workload
    if not workload.params and not workload.tags:
        return
    params = {f"param_{i}": str(i) for i in range(workload.params)}
    tags = {f"tag_{i}": f"rank-{spec.worker}" for i in range(workload.tags)}
    for run in runs:
        await driver.log_extras(run, params=params, tags=tags)


async def _train(
    spec: WorkerSpec, driver: Driver, counters: _Counters, latency: Histogram
) -> None:
    """The training loop: every step logs each key of each run once."""
    workload = spec.workload
    keys = workload.keys
    run_seeds = [seeds(spec.worker, run, keys) for run in range(workload.runs)]
    interval = workload.step_interval
    deadline = time.monotonic() + (workload.duration or float("inf"))
    max_steps = workload.steps or 2**62
    log, record, clock = driver.log, latency.record, time.perf_counter_ns
    next_step_at = time.monotonic()
    for step in range(max_steps):
        if time.monotonic() >= deadline:
            break
        timestamp = time.time_ns() // 1_000_000
        for run, run_seed in enumerate(run_seeds):
            values = point_values(run_seed, step).tolist()
            base = run * keys
            for key in range(keys):
                started = clock()
                if log(base + key, step, timestamp, values[key]):
                    await driver.wait()
                record(clock() - started)
        counters.offered += workload.series_per_worker
        counters.steps = step + 1
        delay = 0.0
        if interval:
            next_step_at += interval
            delay = next_step_at - time.monotonic()
        # Yield every step even when unpaced: the senders share this loop.
        await asyncio.sleep(max(delay, 0.0))


async def _progress(
    spec: WorkerSpec, driver: Driver, acks: Acks, counters: _Counters
) -> None:
    while True:
        _emit_progress(driver, acks, counters)
        await asyncio.sleep(spec.progress_interval)


def _emit_progress(driver: Driver, acks: Acks, counters: _Counters) -> None:
    _emit(
        {
            "offered": counters.offered,
            "acked": driver.acknowledged,
            "retries": acks.retries,
            "overloaded": acks.overloaded,
            "in_flight": driver.in_flight,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
    )


def _emit(message: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = WorkerSpec.model_validate_json(Path(sys.argv[1]).read_bytes())
    try:
        import uvloop
    except ImportError:
        asyncio.run(run_worker(spec))
    else:
        uvloop.run(run_worker(spec))


if __name__ == "__main__":
    main()
