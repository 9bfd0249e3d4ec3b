"""Fixtures for client tests: settings spooling under tmp_path, restartable servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runstream.client.settings import ClientSettings

from tests.servers import ServerProcess


@pytest.fixture
def settings(tracking_uri: str, tmp_path: Path) -> ClientSettings:
    """Client settings for the session's server; the spool stays under tmp_path."""
    return ClientSettings(
        tracking_uri=tracking_uri,
        spool_dir=tmp_path / "spool",
        flush_age_ms=50,
        retry_initial=0.05,
        retry_max=0.5,
        exit_timeout=30,
    )


@pytest.fixture
def own_server(make_database, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test's own, on a fixed port so a restart reuses it."""
    server = ServerProcess(make_database(), artifacts_root=tmp_path / "artifacts")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_settings(own_server: ServerProcess, tmp_path: Path) -> ClientSettings:
    return ClientSettings(
        tracking_uri=own_server.url,
        spool_dir=tmp_path / "spool",
        flush_age_ms=50,
        retry_initial=0.05,
        retry_max=0.5,
        exit_timeout=30,
    )
