"""The server process: signals, workers, and the embedded database by default."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return dict(orjson.loads(reply.read()))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_0(make_database, tmp_path, signum) -> None:
    server = ServerProcess(make_database(), artifacts_root=tmp_path)
    server.start()
    assert server.process is not None

    server.process.send_signal(signum)

    assert server.process.wait(30) == 0
    assert "stopped" in server.log()


def test_data_dir_behind_a_closed_folder_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs the cluster as another user")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runstream.cli.main",
            "server",
            "--port",
            str(free_port()),
            "--data-dir",
            str(closed / "pg"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "not traversable by others" in result.stderr


def test_workers_share_one_port(make_database, tmp_path) -> None:
    server = ServerProcess(
        make_database(), artifacts_root=tmp_path, extra_args=("--workers", "2")
    )
    server.start()
    try:
        created = [
            post(server.url + "/api/2.0/mlflow/experiments/create", {"name": f"w{i}"})
            for i in range(10)
        ]
        assert len({c["experiment_id"] for c in created}) == 10
    finally:
        assert server.stop() == 0


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder the cluster's system user can reach (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="runstream-server-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_without_db_url_the_embedded_postgres_is_used(open_folder: Path) -> None:
    tmp_path = open_folder
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "runstream.cli.main",
        "server",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "pg"),
        "--artifacts-root",
        str(tmp_path / "a"),
    ]
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                reply = post(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/create",
                    {"name": "embedded"},
                )
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(log.read_text())
        assert reply["experiment_id"] == "1"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    text = log.read_text()
    assert f"embedded PostgreSQL in {tmp_path / 'pg'}" in text
    assert "stopped PostgreSQL" in text
    assert not os.path.exists(tmp_path / "pg" / "postmaster.pid")
