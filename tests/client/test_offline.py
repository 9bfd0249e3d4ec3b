"""Runs started while the server is down: created later, their points intact."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from runstream.client import AsyncClient, ClientSettings, Unavailable
from runstream.client.cli import sync_command
from runstream.client.spool import run_records, segments

from tests.servers import ServerProcess

POINTS = 10_000

OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import runstream.client as rs

    if os.environ.get("EXPERIMENT"):
        rs.set_experiment(os.environ["EXPERIMENT"])
    run = rs.start_run(run_name="offline-run")
    for step in range(int(os.environ["POINTS"])):
        rs.log_metric("loss", 0.5, step=step)
    rs.log_param("lr", 0.01)
    rs.set_tag("phase", "train")
    print(run.info.run_id, flush=True)
    if os.environ.get("WAIT"):
        sys.stdin.readline()  # the parent starts the server, then says go
        report = rs.flush(timeout=60)
        rs.end_run()
        print(json.dumps({"ok": report.ok, "acknowledged": report.acknowledged}))
    """
)

STRICT_SCRIPT = textwrap.dedent(
    """
    import runstream.client as rs

    try:
        rs.start_run()
    except rs.Unavailable:
        print("raised")
    """
)


def _child(
    script: str, tmp_path: Path, server: ServerProcess, **env: str
) -> subprocess.Popen[str]:
    path = tmp_path / "child.py"
    path.write_text(script)
    return subprocess.Popen(
        [sys.executable, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "RUNSTREAM_TRACKING_URI": server.url,
            "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
            "RUNSTREAM_FLUSH_AGE_MS": "50",
            "RUNSTREAM_RETRY_INITIAL": "0.05",
            "RUNSTREAM_RETRY_MAX": "0.3",
            "RUNSTREAM_CALL_ATTEMPTS": "3",
            "POINTS": str(POINTS),
            **env,
        },
    )


async def _read(
    server: ServerProcess, run_id: str, reader: Path
) -> tuple[dict[str, object], list[int]]:
    async with AsyncClient(server.url, spool_dir=reader) as client:
        run = await client.get_run(run_id)
        experiment = await client.get_experiment(run.info.experiment_id)
        series = await client.get_series(run_id, "loss")
    described = {
        "name": run.info.run_name,
        "status": run.info.status,
        "experiment": experiment.name,
        "params": run.data.params,
        "phase": run.data.tags.get("phase"),
    }
    return described, sorted(series["steps"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("experiment", ["", "offline"])
def test_fluent_run_started_while_server_is_down_arrives_when_it_is_up(
    own_server: ServerProcess, tmp_path: Path, experiment: str
) -> None:
    own_server.stop()
    child = _child(
        OFFLINE_SCRIPT, tmp_path, own_server, WAIT="1", EXPERIMENT=experiment
    )
    assert child.stdout is not None and child.stdin is not None
    run_id = child.stdout.readline().strip()

    own_server.start()
    out, err = child.communicate("go\n", timeout=45)
    described, steps = asyncio.run(_read(own_server, run_id, tmp_path / "reader"))

    assert child.returncode == 0, err[-3000:]
    assert err.count("started offline") == 1, err[-3000:]
    assert json.loads(out) == {"ok": True, "acknowledged": POINTS}
    assert described == {
        "name": "offline-run",
        "status": "FINISHED",
        "experiment": experiment or "Default",
        "params": {"lr": "0.01"},
        "phase": "train",
    }
    assert steps == list(range(POINTS))
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())


@pytest.mark.timeout(60)
def test_strict_start_run_raises_while_server_is_down(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    own_server.stop()

    child = _child(STRICT_SCRIPT, tmp_path, own_server, RUNSTREAM_STRICT="true")
    out, err = child.communicate(timeout=45)

    assert child.returncode == 0, err[-3000:]
    assert out.strip() == "raised"


@pytest.mark.timeout(60)
async def test_async_run_created_offline_holds_its_points_until_created(
    own_server: ServerProcess, own_settings: ClientSettings
) -> None:
    settings = own_settings.model_copy(update={"call_attempts": 3})
    await asyncio.to_thread(own_server.stop)
    async with AsyncClient(settings=settings) as client:
        run = await client.create_run(run_name="offline-async")
        for step in range(POINTS):
            run.log_metric("loss", 1.0, step=step)
        await run.log_params({"lr": 0.1})
        while_down = await client.flush(timeout=0.5)
        offline_view = await run.get()

        await asyncio.to_thread(own_server.start)
        after = await client.flush(timeout=30)
        await run.end()
        fetched = await run.get()
        steps = sorted((await client.get_series(run.run_id, "loss"))["steps"])

    assert while_down.pending == POINTS and while_down.acknowledged == 0
    assert offline_view.info.run_name == "offline-async"
    assert after.ok and after.acknowledged == POINTS
    assert fetched.info.run_id == run.run_id
    assert fetched.info.run_name == "offline-async"
    assert fetched.info.status == "FINISHED"
    assert fetched.data.params == {"lr": "0.1"}
    assert steps == list(range(POINTS))


@pytest.mark.timeout(60)
async def test_strict_create_run_raises_while_server_is_down(
    own_server: ServerProcess, own_settings: ClientSettings
) -> None:
    settings = own_settings.model_copy(update={"call_attempts": 2, "strict": True})
    await asyncio.to_thread(own_server.stop)

    async with AsyncClient(settings=settings) as client:
        with pytest.raises(Unavailable):
            await client.create_run()


@pytest.mark.timeout(60)
def test_run_started_offline_by_an_ended_process_is_created_by_sync(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    own_server.stop()
    child = _child(OFFLINE_SCRIPT, tmp_path, own_server, RUNSTREAM_EXIT_TIMEOUT="1")
    out, err = child.communicate(timeout=45)
    run_id = out.strip()
    folders = list((tmp_path / "spool").iterdir())
    left = [(segments(folder), run_records(folder)) for folder in folders]

    own_server.start()
    result = CliRunner().invoke(
        sync_command, [str(tmp_path / "spool"), "--tracking-uri", own_server.url]
    )
    described, steps = asyncio.run(_read(own_server, run_id, tmp_path / "reader"))

    assert child.returncode == 0, err[-3000:]
    assert "runstream sync" in err, err[-3000:]
    assert len(left) == 1 and left[0][0] and len(left[0][1]) == 1
    assert result.exit_code == 0, result.output
    assert "created 1 runs" in result.output
    assert f"uploaded {POINTS} points" in result.output
    assert described == {
        "name": "offline-run",
        "status": "FINISHED",
        "experiment": "Default",
        "params": {"lr": "0.01"},
        "phase": "train",
    }
    assert steps == list(range(POINTS))
    assert list((tmp_path / "spool").iterdir()) == []
