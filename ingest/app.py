"""The application factory: middleware chain, routes and lifecycle in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from runstream.ingest.artifacts import ArtifactStore
from runstream.ingest.context import ARTIFACTS, SETTINGS, STORE, TELEMETRY, WRITER
from runstream.ingest.embedded import default_data_dir
from runstream.ingest.routes import (
    artifacts,
    experiments,
    metrics,
    native,
    probes,
    runs,
)
from runstream.ingest.routes.wire import error_middleware
from runstream.ingest.security import add_security_headers, security_middleware
from runstream.ingest.settings import ServerSettings
from runstream.ingest.store import Store
from runstream.ingest.telemetry import Telemetry
from runstream.ingest.writer import Writer, expire_batch_ids

logger = logging.getLogger(__name__)

_EXPIRY_INTERVAL_SECONDS = 600.0


def create_app(settings: ServerSettings, database_url: str) -> web.Application:
    """A tracking server app on ``database_url``; the store and writer start with it."""
    # The middleware chain, outermost first: refuse what the browser
    # protections refuse before anything else runs, then map errors.
    middlewares = [
        security_middleware(
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.cors_allowed_origins,
        ),
        error_middleware,
    ]
    app = web.Application(
        middlewares=middlewares, client_max_size=settings.max_body_bytes
    )
    app.on_response_prepare.append(add_security_headers)
    app[SETTINGS] = settings
    app[TELEMETRY] = Telemetry()
    app[STORE] = Store(
        database_url,
        pool_size=settings.pool_size,
        default_artifact_root=settings.default_artifact_root,
    )
    app[WRITER] = Writer(
        connections=settings.writer_connections,
        max_queue_points=settings.max_queue_points,
        max_group_points=settings.max_group_points,
        retry_after=settings.retry_after_seconds,
        telemetry=app[TELEMETRY],
    )
    root = settings.artifacts_root or default_data_dir().parent / "artifacts"
    app[ARTIFACTS] = ArtifactStore(root)
    logger.info("artifacts: %s", root)
    app.cleanup_ctx.append(_store_and_writer)
    for module in (probes, experiments, runs, metrics, native, artifacts):
        module.setup_routes(app)
    return app


async def _store_and_writer(app: web.Application) -> AsyncIterator[None]:
    store, writer, settings = app[STORE], app[WRITER], app[SETTINGS]
    await store.start()
    await writer.start(store.pool)
    expiry = asyncio.create_task(
        _expire_batch_ids(store, settings.batch_id_retention_hours), name="expiry"
    )
    try:
        yield
    finally:
        expiry.cancel()
        await asyncio.gather(expiry, return_exceptions=True)
        await writer.close()
        await store.close()


async def _expire_batch_ids(store: Store, retention_hours: float) -> None:
    """Every few minutes, forget batch ids past the retention."""
    while True:
        try:
            expired = await expire_batch_ids(
                store.pool, older_than_hours=retention_hours
            )
            if expired:
                logger.info("forgot %s applied batch ids past retention", expired)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("expiring applied batch ids failed: %s", error)
        await asyncio.sleep(_EXPIRY_INTERVAL_SECONDS)
