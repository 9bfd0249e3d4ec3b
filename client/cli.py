"""``runstream sync PATH``: upload spools left behind by ended processes.

PATH is one process's spool folder or the spool root holding many. Each
record is sent as it was written, batch id included, so a batch the server
already applied is acknowledged as a duplicate and nothing is stored
twice. A segment is deleted once all its records are acknowledged or
refused for good; folders still locked by a running process are skipped.

Runs that started offline and were never created leave a creation record
in the folder; sync creates those runs first (creating is idempotent, so
a run created meanwhile is simply found) and uploads the folder's batches
only once all its runs exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from runstream.client import offline
from runstream.client.batch import points_in
from runstream.client.errors import ConfigurationError, RequestRejected, Unavailable
from runstream.client.offline import PendingRun
from runstream.client.settings import ClientSettings, load_settings
from runstream.client.spool import (
    LOCK_NAME,
    FolderLock,
    process_folders,
    read_segment,
    run_records,
    segments,
)
from runstream.client.transport import Transport, Unreachable

logger = logging.getLogger(__name__)


@dataclass
class SyncResult:
    runs: int = 0
    batches: int = 0
    points: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: list[Path] = field(default_factory=list)
    left: list[Path] = field(default_factory=list)


async def upload(path: Path, settings: ClientSettings, *, timeout: float) -> SyncResult:
    """Send every spooled batch under ``path``; give up on a batch after ``timeout``."""
    result = SyncResult()
    assert settings.tracking_uri is not None
    transport = Transport(
        settings.tracking_uri,
        timeout=settings.request_timeout,
        connections=settings.max_in_flight,
        attempts=settings.call_attempts,
        retry_initial=settings.retry_initial,
        retry_max=settings.retry_max,
    )
    async with transport:
        for folder in process_folders(path):
            with FolderLock(folder) as lock:
                if not lock.held:
                    result.skipped.append(folder)
                    continue
                if not await _create_runs(folder, transport, settings, timeout, result):
                    result.left.extend(run_records(folder) + segments(folder))
                    continue
                for segment in segments(folder):
                    if await _upload_segment(
                        segment, transport, settings, timeout, result
                    ):
                        segment.unlink()
                    else:
                        result.left.append(segment)
            if not segments(folder) and not run_records(folder):
                (folder / LOCK_NAME).unlink(missing_ok=True)
                try:
                    folder.rmdir()
                except OSError:
                    pass
    return result


async def _create_runs(
    folder: Path,
    transport: Transport,
    settings: ClientSettings,
    timeout: float,
    result: SyncResult,
) -> bool:
    """Create the runs recorded in a folder; False if the server stayed away."""
    for path in run_records(folder):
        try:
            pending = PendingRun.from_json(path.read_bytes())
        except ValueError as exc:
            logger.warning("skipping the creation record %s: %s", path, exc)
            continue
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                await offline.create(transport, pending)
            except Unavailable as exc:
                delay = settings.retry_delay(attempt)
                if time.monotonic() + delay > deadline:
                    logger.warning("could not create run %s: %s", pending.run_id, exc)
                    return False
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except RequestRejected as exc:
                logger.warning(
                    "the server refused to create run %s: %s; its points will be "
                    "refused too",
                    pending.run_id,
                    exc,
                )
            else:
                result.runs += 1
            break
        path.unlink()
    return True


async def _upload_segment(
    segment: Path,
    transport: Transport,
    settings: ClientSettings,
    timeout: float,
    result: SyncResult,
) -> bool:
    slots = asyncio.Semaphore(settings.max_in_flight)

    async def send(body: bytes) -> bool:
        async with slots:
            return await _send(body, transport, settings, timeout, result)

    bodies = [body for _, body in read_segment(segment)]
    outcomes = await asyncio.gather(*(send(body) for body in bodies))
    return all(outcomes)


async def _send(
    body: bytes,
    transport: Transport,
    settings: ClientSettings,
    timeout: float,
    result: SyncResult,
) -> bool:
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            ack = await transport.send_batch(body)
        except Unreachable as exc:
            delay = exc.retry_after or settings.retry_delay(attempt)
            if time.monotonic() + delay > deadline:
                logger.warning("giving up on a spooled batch for now: %s", exc)
                return False
            attempt += 1
            await asyncio.sleep(delay)
            continue
        except RequestRejected as exc:
            logger.warning("the server refused a spooled batch for good: %s", exc)
            result.rejected += points_in(body)
            return True
        result.batches += 1
        result.points += points_in(body)
        result.duplicates += bool(ack.get("duplicate"))
        return True


@click.command("sync")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--tracking-uri",
    default=None,
    help="server to upload to [RUNSTREAM_TRACKING_URI or MLFLOW_TRACKING_URI]",
)
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    help="seconds to keep retrying one batch while the server does not answer",
)
def sync_command(path: Path, tracking_uri: str | None, timeout: float) -> None:
    """Upload the spool left at PATH by processes that could not reach the server."""
    try:
        settings = load_settings(tracking_uri=tracking_uri)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    if not settings.tracking_uri:
        raise click.UsageError(
            "no tracking URI: pass --tracking-uri or set RUNSTREAM_TRACKING_URI"
        )
    result = asyncio.run(upload(path, settings, timeout=timeout))

    if result.runs:
        click.echo(f"created {result.runs} runs that had started offline")
    click.echo(
        f"uploaded {result.points} points in {result.batches} batches "
        f"({result.duplicates} already applied) to {settings.tracking_uri}"
    )
    if result.rejected:
        click.echo(f"{result.rejected} points were refused by the server", err=True)
    for folder in result.skipped:
        click.echo(f"skipped {folder}: a running process still owns it", err=True)
    if result.left:
        click.echo(
            f"{len(result.left)} segments or creation records could not be sent; "
            "run sync again later",
            err=True,
        )
        raise SystemExit(1)
