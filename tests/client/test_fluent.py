"""The fluent API, each test in a fresh interpreter as a training script runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runstream.client import AsyncClient

from tests.servers import ServerProcess

FLUENT_SCRIPT = textwrap.dedent(
    """
    import json, threading
    import runstream.client as rs

    rs.set_experiment("fluent")
    with rs.start_run(run_name="outer", tags={"team": "vision"}) as outer:
        rs.log_param("lr", 0.01)
        rs.log_params({"layers": 3})
        rs.set_tag("phase", "train")
        for step in range(1000):
            rs.log_metric("loss", 1.0 / (step + 1), step=step)
        rs.log_metrics({"acc": 0.5, "f1": 0.25}, step=999)

        def worker(offset):
            for step in range(500):
                outer.log_metric("per_thread", 1.0, step=offset + step)
        threads = [threading.Thread(target=worker, args=(n * 500,)) for n in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]

        with rs.start_run(run_name="inner", nested=True) as inner:
            rs.log_metric("inner_loss", 0.1)
        assert rs.active_run().info.run_id == outer.info.run_id
        report = rs.flush()
        fetched = rs.get_run(outer.info.run_id)
    print(json.dumps({
        "outer": outer.info.run_id,
        "inner": inner.info.run_id,
        "status": rs.get_run(outer.info.run_id).info.status,
        "inner_parent": rs.get_run(inner.info.run_id).data.tags.get(
            "mlflow.parentRunId"
        ),
        "metrics": fetched.data.metrics,
        "params": fetched.data.params,
        "tags": {
            k: v for k, v in fetched.data.tags.items() if not k.startswith("mlflow.")
        },
        "pending": report.pending,
        "active_after": rs.active_run() is None,
    }))
    """
)

RANK_SCRIPT = textwrap.dedent(
    """
    import os
    import runstream.client as rs

    rank = int(os.environ["RANK"])
    with rs.start_run():
        for step in range(rank, 60_000, 3):
            rs.log_metric("loss", float(rank), step=step)
    """
)


def _python(script: str, tmp_path: Path, server: ServerProcess, **env: str) -> str:
    path = tmp_path / f"script-{abs(hash(script))}.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "RUNSTREAM_TRACKING_URI": server.url,
            "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
            **env,
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(120)
def test_fluent_run_reads_back_as_mlflow_shapes_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = json.loads(_python(FLUENT_SCRIPT, tmp_path, server))

    async def per_thread_steps() -> list[int]:
        async with AsyncClient(server.url, spool_dir=tmp_path / "reader") as client:
            series = await client.get_series(out["outer"], "per_thread")
            return sorted(series["steps"])

    assert out["status"] == "FINISHED"
    assert out["inner_parent"] == out["outer"]
    assert out["metrics"] == {"loss": 0.001, "acc": 0.5, "f1": 0.25, "per_thread": 1.0}
    assert out["params"] == {"lr": "0.01", "layers": "3"}
    assert out["tags"] == {"team": "vision", "phase": "train"}
    assert out["pending"] == 0 and out["active_after"]
    assert asyncio.run(per_thread_steps()) == list(range(1500))


@pytest.mark.timeout(180)
def test_processes_log_into_one_run_handed_down_in_the_environment(
    server: ServerProcess, tmp_path: Path
) -> None:
    async def create() -> str:
        async with AsyncClient(server.url, spool_dir=tmp_path / "reader") as client:
            return (await client.create_run(run_name="distributed")).run_id

    run_id = asyncio.run(create())
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT],
            env={
                **os.environ,
                "RANK": str(rank),
                "RUNSTREAM_LABEL": f"rank-{rank}",
                "MLFLOW_TRACKING_URI": server.url,
                "MLFLOW_RUN_ID": run_id,
                "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
            },
        )
        for rank in range(3)
    ]
    codes = [process.wait(120) for process in ranks]

    async def read() -> tuple[list[int], list[int]]:
        async with AsyncClient(server.url, spool_dir=tmp_path / "reader") as client:
            merged = await client.get_series(run_id, "loss")
            rank_2 = await client.get_series(run_id, "loss", label="rank-2")
            return sorted(merged["steps"]), sorted(rank_2["steps"])

    merged, rank_2 = asyncio.run(read())
    assert codes == [0, 0, 0]
    assert merged == list(range(60_000))
    assert rank_2 == list(range(2, 60_000, 3))
