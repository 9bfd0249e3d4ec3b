"""Running the tracking server: database, worker processes, signals.

One process serves with uvloop; ``workers > 1`` starts that many processes
on one port (SO_REUSEPORT). SIGINT or SIGTERM stops taking connections,
lets requests in flight finish (the writer commits what it holds) and
exits 0. Without a database URL an embedded cluster is started first and
stopped last.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import sys

from aiohttp import web
from runstream.ingest.app import create_app
from runstream.ingest.embedded import EmbeddedPostgres, default_data_dir
from runstream.ingest.schema import migrate
from runstream.ingest.settings import ServerSettings

logger = logging.getLogger(__name__)


def run(settings: ServerSettings) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code."""
    cluster = None
    url = settings.db
    if url is None:
        data_dir = settings.data_dir or default_data_dir()
        cluster = EmbeddedPostgres(data_dir)
        url = cluster.start()
        logger.info("database: embedded PostgreSQL in %s", data_dir)
    else:
        logger.info("database: %s", _without_password(url))
    try:
        asyncio.run(_migrate(url))
        if settings.workers == 1:
            _serve(settings, url)
            return 0
        return _serve_workers(settings, url)
    finally:
        if cluster is not None:
            cluster.close()


async def _migrate(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        version = await migrate(connection)
        logger.info("schema at version %s", version)
    finally:
        await connection.close()


def _serve(settings: ServerSettings, url: str) -> None:
    try:
        import uvloop

        uvloop.run(_serve_until_signal(settings, url))
    except ImportError:
        asyncio.run(_serve_until_signal(settings, url))


async def _serve_until_signal(settings: ServerSettings, url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    app = create_app(settings, url)
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_timeout,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        reuse_port=settings.workers > 1 or None,
    )
    await site.start()
    logger.info("listening on http://%s:%s", settings.host, settings.port)
    if settings.detect_blocking:
        _detect_blocking()
    await stop.wait()
    logger.info("stopping: finishing requests in flight")
    await runner.cleanup()
    logger.info("stopped")


def _detect_blocking() -> None:
    """From here on, a blocking call in the event loop raises (failing its request)."""
    from blockbuster import BlockBuster

    guard = BlockBuster(scanned_modules=["runstream.ingest"])
    # asyncpg looks for ~/.pgpass each time the pool opens a connection
    # without a password: a stat and a read of a small local file, accepted.
    for function in guard.functions.values():
        function.can_block_in("asyncpg/connect_utils.py", "_read_password_file")
    guard.activate()
    logger.info("blocking calls in the event loop will fail")


def _worker(settings: ServerSettings, url: str) -> None:
    _configure_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards SIGTERM
    _serve(settings, url)


def _serve_workers(settings: ServerSettings, url: str) -> int:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings, url), name=f"worker-{i}")
        for i in range(settings.workers)
    ]
    for process in workers:
        process.start()
    logger.info("started %s worker processes", len(workers))

    def forward(signum: int, frame: object) -> None:
        for process in workers:
            if process.is_alive() and process.pid is not None:
                process.terminate()

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for process in workers:
        process.join()
    failed = [p.name for p in workers if p.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        logger.error("workers exited with an error: %s", ", ".join(failed))
        return 1
    return 0


def _without_password(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    return f"{scheme}//{credentials.split(':', 1)[0]}:***@{tail}"


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
