"""Microbenchmark: the cost of log_metric next to a bare list.append.

    pytest benchmarks/client_log_metric.py --benchmark-only

Each round logs CALLS points in a loop. The baseline appends the same
4-tuple (key, value, step, timestamp) to a list in the same loop shape; the
run handle's and the fluent log_metric are reported as a ratio to it in
``extra_info`` and printed. Targets: at most 4x the baseline, and at least
1,000,000 calls a second from one thread. No server is needed: the points
stay in the buffer (flush_points is set above what a round logs).
"""

from __future__ import annotations

import pytest
from runstream.client import fluent
from runstream.client.client import AsyncClient
from runstream.client.entities import Run, RunData, RunInfo

CALLS = 100_000
RUN_ID = "b" * 32
_means: dict[str, float] = {}


@pytest.fixture(scope="module")
def handle():
    client = AsyncClient("http://127.0.0.1:9", flush_points=5_000_000, spool_dir="/tmp")
    return client.run(RUN_ID)


def _report(benchmark, name: str) -> None:
    mean = benchmark.stats.stats.mean
    _means[name] = mean
    per_call_ns = mean / CALLS * 1e9
    benchmark.extra_info["ns_per_call"] = round(per_call_ns, 1)
    benchmark.extra_info["calls_per_second"] = round(CALLS / mean)
    if name != "append" and "append" in _means:
        ratio = mean / _means["append"]
        benchmark.extra_info["ratio_to_append"] = round(ratio, 2)
        print(
            f"\n{name}: {per_call_ns:.0f} ns/call, {CALLS / mean:,.0f} calls/s, "
            f"{ratio:.2f}x list.append"
        )
    else:
        print(f"\n{name}: {per_call_ns:.0f} ns/call")


def test_baseline_list_append(benchmark) -> None:
    def body() -> None:
        points: list[tuple[str, float, int, None]] = []
        append = points.append
        for step in range(CALLS):
            append(("loss", 0.5, step, None))

    benchmark(body)
    _report(benchmark, "append")


def test_run_handle_log_metric(benchmark, handle) -> None:
    log_metric = handle.log_metric

    def body() -> None:
        for step in range(CALLS):
            log_metric("loss", 0.5, step)
        handle._points.clear()

    benchmark(body)
    _report(benchmark, "run.log_metric")


def test_fluent_log_metric(benchmark, handle) -> None:
    run = Run(RunInfo(run_id=RUN_ID, experiment_id="0"), RunData())
    fluent._push(fluent.ActiveRun(run, handle))
    log_metric = fluent.log_metric

    def body() -> None:
        for step in range(CALLS):
            log_metric("loss", 0.5, step)
        handle._points.clear()

    try:
        benchmark(body)
    finally:
        fluent._pop()
    _report(benchmark, "fluent log_metric")
