"""The servers a load test runs against, and the processes behind them.

- ``RunstreamServer``: ``runstream server`` in a child process on 127.0.0.1,
  on a database URL; it can be killed and restarted on the same port.
- ``MlflowServer``: MLflow's own ``mlflow server`` on PostgreSQL or a SQLite
  file, for side-by-side comparison.
- ``ExternalServer``: a URL someone else runs; no process faults.
- ``EmbeddedDatabase``: a private PostgreSQL cluster in a temporary folder,
  which the PostgreSQL fault stops and restarts.

Each is an async context manager; blocking work (subprocess waits, initdb)
runs in threads.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import aiohttp
from runstream.ingest.embedded import EmbeddedPostgres
from runstream.loadtest.errors import ConfigurationError, TargetError
from runstream.loadtest.measure import postmaster_pid

logger = logging.getLogger(__name__)

ServerKind = Literal["runstream", "mlflow"]
_METRIC_TABLES = ("metric_chunks", "latest_metrics", "applied_batches", "metric_keys")
_MLFLOW_METRIC_TABLES = ("metrics", "latest_metrics")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedDatabase:
    """A throwaway PostgreSQL cluster; ``create_database`` gives fresh URLs."""

    def __init__(self, folder: Path | None = None) -> None:
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="runstream-loadtest-"))
        self._cluster: EmbeddedPostgres | None = None

    async def start(self) -> None:
        # The cluster may run as another system user, who must reach the folder.
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        cluster = EmbeddedPostgres(self.folder / "pg", database="postgres")
        await asyncio.to_thread(cluster.start)
        self._cluster = cluster

    async def create_database(self) -> str:
        """A new, empty database on the cluster; the server migrates it."""
        import asyncpg

        name = f"loadtest_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(self._require().admin_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return f"postgresql://postgres@/{name}?host={self._require().data_dir}"

    def postgres_pid(self) -> int | None:
        return postmaster_pid(self._require().data_dir)

    async def stop_immediately(self) -> None:
        await asyncio.to_thread(self._require().stop_immediately)

    async def restart(self) -> None:
        await asyncio.to_thread(self._require().restart)

    async def close(self) -> None:
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.close)
            self._cluster = None
        if self._own_folder:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)

    async def __aenter__(self) -> EmbeddedDatabase:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _require(self) -> EmbeddedPostgres:
        if self._cluster is None:
            raise TargetError("the embedded database is not started")
        return self._cluster


class Target(abc.ABC):
    """A tracking server under test."""

    kind: ServerKind = "runstream"
    url: str = ""
    database_url: str | None = None
    database: EmbeddedDatabase | None = None
    can_kill = False

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def server_pid(self) -> int | None:
        return None

    def postgres_pid(self) -> int | None:
        if self.database is not None:
            return self.database.postgres_pid()
        return _socket_postmaster(self.database_url)

    async def kill(self) -> None:
        raise ConfigurationError(f"cannot kill the server at {self.url}")

    async def restart(self) -> None:
        raise ConfigurationError(f"cannot restart the server at {self.url}")

    async def storage_bytes(self) -> int | None:
        """Bytes the server's metric storage holds now, when it can be measured."""
        return None

    async def __aenter__(self) -> Target:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class ExternalServer(Target):
    def __init__(
        self,
        url: str,
        *,
        kind: ServerKind = "runstream",
        database_url: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.kind = kind
        self.database_url = database_url

    async def start(self) -> None:
        await wait_healthy(self.url, timeout=10.0, process=None)

    async def close(self) -> None:
        pass

    async def storage_bytes(self) -> int | None:
        if self.kind != "runstream" or self.database_url is None:
            return None
        return await _metric_tables_size(self.database_url)


class _ProcessServer(Target):
    """A server in a child process; its output goes to a log file."""

    can_kill = True

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.folder / f"{self.kind}-server-{self.port}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.start_timeout = 60.0

    @abc.abstractmethod
    def command(self) -> list[str]: ...

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=self.environment(),
            )
        finally:
            log.close()
        try:
            await wait_healthy(
                self.url, timeout=self.start_timeout, process=self.process
            )
        except TargetError as exc:
            await self.close()
            raise TargetError(f"{exc}; log: {self.log_tail()}") from None

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def server_pid(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return None
        return self.process.pid

    async def kill(self) -> None:
        """SIGKILL the server and its children: no draining, as a crash."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await self.process.wait()

    async def restart(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except asyncio.TimeoutError:
            await self.kill()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


class RunstreamServer(_ProcessServer):
    """``runstream server`` on ``database_url``; kill -9 and restart on one port."""

    kind: ServerKind = "runstream"

    def __init__(
        self,
        database_url: str,
        *,
        folder: Path,
        database: EmbeddedDatabase | None = None,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(folder, port=port)
        self.url_of_database = database_url
        self.database_url = database_url
        self.database = database
        self.extra_args = extra_args
        self.env = env or {}

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "runstream.cli.main", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--db", self.url_of_database,
            "--artifacts-root", str(self.folder / "artifacts"),
            *self.extra_args,
        ]  # fmt: skip

    async def storage_bytes(self) -> int | None:
        return await _metric_tables_size(self.url_of_database)


class MlflowServer(_ProcessServer):
    """MLflow's ``mlflow server``; SQLite in ``folder`` unless a store URI is given."""

    kind: ServerKind = "mlflow"

    def __init__(
        self,
        *,
        folder: Path,
        database_url: str | None = None,
        database: EmbeddedDatabase | None = None,
        port: int | None = None,
    ) -> None:
        """On ``database_url`` (PostgreSQL, through psycopg2) or a SQLite file."""
        super().__init__(folder, port=port)
        self.sqlite_path = self.folder / "mlflow.db"
        self.database_url = database_url
        self.database = database
        self.backend_store_uri = f"sqlite:///{self.sqlite_path}"
        if database_url is not None:
            self.backend_store_uri = database_url.replace(
                "postgresql://", "postgresql+psycopg2://", 1
            )
        self.start_timeout = 120.0

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.folder / "artifacts"),
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }

    async def storage_bytes(self) -> int | None:
        if self.database_url is not None:
            return await _metric_tables_size(
                self.database_url, tables=_MLFLOW_METRIC_TABLES
            )
        paths = [self.sqlite_path, self.sqlite_path.with_name("mlflow.db-wal")]
        return sum(path.stat().st_size for path in paths if path.exists())


async def wait_healthy(
    url: str, *, timeout: float, process: asyncio.subprocess.Process | None
) -> float:
    """Poll ``/health`` until 200; return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if process is not None and process.returncode is not None:
                raise TargetError(f"server at {url} exited with {process.returncode}")
            try:
                async with session.get(url + "/health") as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.05)
    raise TargetError(f"server at {url} did not answer /health in {timeout:.0f}s")


async def _metric_tables_size(
    database_url: str, *, tables: tuple[str, ...] = _METRIC_TABLES
) -> int | None:
    import asyncpg

    try:
        connection = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        logger.warning("cannot measure storage on %s: %s", database_url, exc)
        return None
    try:
        return int(
            await connection.fetchval(
                "SELECT sum(pg_total_relation_size(t::regclass)) "
                "FROM unnest($1::text[]) t",
                list(tables),
            )
        )
    finally:
        await connection.close()


def _socket_postmaster(database_url: str | None) -> int | None:
    """The postmaster of a database reached over a unix socket in its data folder."""
    if not database_url:
        return None
    query = parse_qs(urlsplit(database_url).query)
    hosts = query.get("host")
    if not hosts or not hosts[0].startswith("/"):
        return None
    return postmaster_pid(Path(hosts[0]))
