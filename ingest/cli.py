"""``runstream server``: the tracking server's command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


@click.command("server")
@click.option("--host", default=None, help="address to bind [127.0.0.1]")
@click.option("--port", type=int, default=None, help="port to bind [5000]")
@click.option(
    "--db",
    default=None,
    help="PostgreSQL URL; without it a private embedded cluster is started",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="folder of the embedded cluster",
)
@click.option(
    "--artifacts-root",
    type=click.Path(path_type=Path),
    default=None,
    help="folder behind the mlflow-artifacts proxy",
)
@click.option("--workers", type=int, default=None, help="server processes [1]")
@click.option(
    "--allowed-hosts",
    default=None,
    help="comma-separated Host names to accept besides local and private ones",
)
@click.option(
    "--cors-allowed-origins",
    default=None,
    help="comma-separated origins whose pages may write to the API",
)
def server_command(**options: object) -> None:
    """Start the tracking server (MLflow's REST API plus the native batch endpoint)."""
    from runstream.ingest.errors import ConfigurationError
    from runstream.ingest.server import _configure_logging, run
    from runstream.ingest.settings import ServerSettings

    _configure_logging()
    given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    for name in ("allowed_hosts", "cors_allowed_origins"):
        if name in given:
            given[name] = [part.strip() for part in str(given[name]).split(",") if part]
    # The constructor, not model_validate: it is what reads RUNSTREAM_* too.
    settings = ServerSettings(**given)
    try:
        code = run(settings)
    except ConfigurationError as error:
        click.echo(f"runstream server: {error}", err=True)
        sys.exit(2)
    sys.exit(code)
