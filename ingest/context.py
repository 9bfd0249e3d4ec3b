"""Typed application keys: what the app factory hands to every route."""

from __future__ import annotations

from aiohttp import web
from runstream.ingest.artifacts import ArtifactStore
from runstream.ingest.settings import ServerSettings
from runstream.ingest.store import Store
from runstream.ingest.telemetry import Telemetry
from runstream.ingest.writer import Writer

ARTIFACTS = web.AppKey("artifacts", ArtifactStore)
SETTINGS = web.AppKey("settings", ServerSettings)
STORE = web.AppKey("store", Store)
WRITER = web.AppKey("writer", Writer)
TELEMETRY = web.AppKey("telemetry", Telemetry)
