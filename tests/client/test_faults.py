"""Faults: a server killed, restarted or away, and a byte bound that holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from runstream.client import AsyncClient, ClientSettings
from runstream.client.cli import sync_command
from runstream.client.spool import segments

from tests.servers import ServerProcess


async def _steps(client: AsyncClient, run_id: str, key: str = "loss") -> list[int]:
    return sorted((await client.get_series(run_id, key))["steps"])


@pytest.mark.timeout(180)
async def test_server_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(
    own_server: ServerProcess, own_settings: ClientSettings
) -> None:
    total = 200_000
    async with AsyncClient(settings=own_settings, flush_points=2_000) as client:
        run = await client.create_run()

        for step in range(total):
            run.log_metric("loss", 0.5, step=step)
            if step % 2_000 == 0:
                await asyncio.sleep(0.001)
            if step == total // 2:
                await asyncio.to_thread(own_server.kill)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(own_server.start)
        report = await client.flush(timeout=120)

        steps = await _steps(client, run.run_id)

    assert report.ok, report.summary()
    assert steps == list(range(total))


@pytest.mark.timeout(180)
async def test_outage_fills_the_spool_and_everything_arrives_after(
    own_server: ServerProcess, own_settings: ClientSettings
) -> None:
    total = 150_000
    settings = own_settings.model_copy(
        update={"flush_points": 5_000, "max_buffer_bytes": 256 * 1024}
    )
    async with AsyncClient(settings=settings) as client:
        run = await client.create_run()
        await asyncio.to_thread(own_server.stop)

        for step in range(total):
            run.log_metric("loss", 1.0, step=step)
            if step % 5_000 == 0:
                await asyncio.sleep(0.01)
        while_down = await client.flush(timeout=2)
        await asyncio.to_thread(own_server.start)
        after = await client.flush(timeout=120)
        steps = await _steps(client, run.run_id)
    spool = while_down.spool_path

    assert while_down.spooled > 0 and while_down.pending == total
    assert after.ok and after.acknowledged == total
    assert steps == list(range(total))
    assert spool is not None and not spool.exists()


@pytest.mark.timeout(180)
async def test_block_policy_holds_the_logging_thread_until_the_server_answers(
    own_server: ServerProcess, own_settings: ClientSettings
) -> None:
    total = 60_000
    settings = own_settings.model_copy(
        update={
            "overflow": "block",
            "flush_points": 2_000,
            "max_buffer_bytes": 64 * 1024,
        }
    )
    async with AsyncClient(settings=settings) as client:
        run = await client.create_run()
        await asyncio.to_thread(own_server.stop)
        finished = threading.Event()

        def train() -> None:
            for step in range(total):
                run.log_metric("loss", 1.0, step=step)
            finished.set()

        thread = threading.Thread(target=train)
        thread.start()
        await asyncio.sleep(2)
        held = not finished.is_set()
        await asyncio.to_thread(own_server.start)
        await asyncio.to_thread(thread.join, 60)
        report = await client.flush(timeout=60)
        steps = await _steps(client, run.run_id)

    assert held
    assert report.ok and report.spooled == 0
    assert steps == list(range(total))


CHILD_LOGGER = textwrap.dedent(
    """
    import os, sys, time, psutil
    import runstream.client as rs

    with rs.start_run() as run:
        print(run.info.run_id, flush=True)
        sys.stdin.readline()  # the parent stops the server, then says go
        base = psutil.Process().memory_info().rss
        peak = base
        total = int(os.environ["POINTS"])
        for step in range(total):
            run.log_metric("loss", 0.5, step=step)
            if step % 100_000 == 0:
                peak = max(peak, psutil.Process().memory_info().rss)
        print((peak - base) // 2**20, flush=True)
    """
)


def _child(tmp_path: Path, server: ServerProcess, **env: str) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD_LOGGER)
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "RUNSTREAM_TRACKING_URI": server.url,
            "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
            "RUNSTREAM_RETRY_MAX": "0.5",
            **env,
        },
    )


@pytest.mark.timeout(240)
def test_byte_bound_holds_and_a_spool_left_at_exit_is_synced(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    total = 2_000_000
    child = _child(
        tmp_path,
        own_server,
        POINTS=str(total),
        RUNSTREAM_MAX_BUFFER_BYTES=str(8 * 2**20),
        RUNSTREAM_FLUSH_POINTS="50000",
        RUNSTREAM_EXIT_TIMEOUT="1",
    )
    assert child.stdout is not None and child.stdin is not None
    run_id = child.stdout.readline().strip()
    own_server.stop()
    child.stdin.write("go\n")
    child.stdin.flush()
    growth_mib = int(child.stdout.readline())
    child.communicate(timeout=60)
    left_behind = [segments(folder) for folder in (tmp_path / "spool").iterdir()]

    own_server.start()
    result = CliRunner().invoke(
        sync_command,
        [str(tmp_path / "spool"), "--tracking-uri", own_server.url],
    )

    async def read() -> list[int]:
        async with AsyncClient(own_server.url, spool_dir=tmp_path / "reader") as client:
            return await _steps(client, run_id)

    # 2,000,000 points are 48 MiB encoded and ~300 MiB as Python tuples;
    # the process may hold 8 MiB of batches plus two batches' unsealed points.
    assert growth_mib < 64, growth_mib
    assert child.returncode == 0
    assert len(left_behind) == 1 and left_behind[0]
    assert result.exit_code == 0, result.output
    assert f"uploaded {total} points" in result.output
    assert asyncio.run(read()) == list(range(total))
    assert list((tmp_path / "spool").iterdir()) == []


SIGTERM_CHILD = textwrap.dedent(
    """
    import time
    import runstream.client as rs

    with rs.start_run() as run:
        for step in range(50_000):
            rs.log_metric("loss", 0.5, step=step)
        print(run.info.run_id, flush=True)
        time.sleep(60)
    """
)


@pytest.mark.timeout(120)
def test_sigterm_flushes_pending_points(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(SIGTERM_CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "RUNSTREAM_TRACKING_URI": own_server.url,
            "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
            # Nothing is sent before the signal: everything waits in buffers.
            "RUNSTREAM_FLUSH_AGE_MS": "600000",
            "RUNSTREAM_FLUSH_POINTS": "1000000",
        },
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()

    child.terminate()
    child.communicate(timeout=60)

    async def read() -> tuple[list[int], str]:
        async with AsyncClient(own_server.url, spool_dir=tmp_path / "reader") as client:
            run = await client.get_run(run_id)
            return await _steps(client, run_id), run.info.status

    steps, status = asyncio.run(read())
    assert child.returncode == -15
    assert steps == list(range(50_000))
    assert status == "KILLED"
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())
