"""Probes and capability endpoints: /health, /version, server-info, /metrics."""

from __future__ import annotations

from importlib.metadata import version

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from runstream.ingest.context import TELEMETRY, WRITER
from runstream.ingest.routes.wire import json_response

VERSION = version("runstream")


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def server_version(request: web.Request) -> web.Response:
    return web.Response(text=VERSION)


async def server_info(request: web.Request) -> web.Response:
    # The mlflow client turns every feature off on anything but a 200; say
    # so explicitly instead.
    return json_response(
        {
            "store_type": "SqlStore",
            "workspaces_enabled": False,
            "trace_archival_enabled": False,
            "multipart_uploads_enabled": False,
            "multipart_downloads_enabled": False,
        }
    )


async def prometheus(request: web.Request) -> web.Response:
    telemetry = request.app[TELEMETRY]
    telemetry.queue_points.set(request.app[WRITER].queued_points)
    body = generate_latest(telemetry.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/version", server_version)
    app.router.add_get("/api/3.0/mlflow/server-info", server_info)
    app.router.add_get("/metrics", prometheus)
