"""What every benchmark stands on: one database and one server process."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runstream.ingest.embedded import EmbeddedPostgres

from tests.servers import ServerProcess


@contextlib.contextmanager
def database_and_server(db_url: str | None) -> Iterator[tuple[str, ServerProcess]]:
    """A database (embedded unless ``db_url``) and a server for it, not started.

    The server runs without the tests' blocking-call guard, which costs time
    on every request: a benchmark measures the server as it is deployed.
    Everything is stopped and removed on exit.
    """
    folder = Path(tempfile.mkdtemp(prefix="runstream-bench-"))
    folder.chmod(0o755)
    cluster = None
    url = db_url
    if url is None:
        cluster = EmbeddedPostgres(folder / "pg")
        url = cluster.start()
    server = ServerProcess(
        url,
        artifacts_root=folder / "artifacts",
        env={"RUNSTREAM_DETECT_BLOCKING": "false"},
    )
    try:
        yield url, server
    finally:
        server.stop()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(folder, ignore_errors=True)
