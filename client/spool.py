"""The spool: batches that could not be sent yet, on local disk.

One folder per process (``<label>.<pid>.<token>`` under the spool root),
holding numbered append-only segment files. Each record is one batch body
framed as::

    uint32 payload length | uint32 CRC32 of the payload | payload

all little-endian, and fsync'd before ``append`` returns. The body carries
its batch id, so replaying a record the server already applied is
acknowledged as a duplicate and writes nothing. A segment is deleted once
every record in it has been acknowledged (or refused for good); a record
cut short by a crash, or whose CRC does not match, is the torn tail of its
segment: it and anything after it are dropped with a warning.

Beside the segments, ``<run_id>.run.json`` files are the creation records
of runs that started while the server was unreachable (see ``offline``);
each is written whole to a temporary name and renamed into place, and
removed once the run exists.

While a process owns its folder it holds an exclusive lock on its
``lock`` file, so ``runstream sync`` leaves the spool of a live process
alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from runstream.client.errors import SpoolError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; sync trusts the user.
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

T = TypeVar("T")

FRAME = struct.Struct("<II")
SEGMENT_SUFFIX = ".seg"
RUN_SUFFIX = ".run.json"
LOCK_NAME = "lock"


@dataclass(frozen=True)
class Record:
    """Where one batch body sits in the spool."""

    segment: Path
    offset: int
    length: int


class Spool:
    """The spool folder of this process; thread-safe, created on first append."""

    def __init__(self, root: Path, *, label: str = "", segment_bytes: int) -> None:
        prefix = label.replace("/", "_") or "process"
        name = f"{prefix}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.path = Path(root) / name
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._live: dict[Path, int] = {}
        self._active: Path | None = None
        self._file: object = None
        self._active_size = 0
        self._next_index = 1
        self._lock_file: int | None = None
        self._runs: set[str] = set()

    def append(self, body: bytes) -> Record:
        """Write one batch body durably; raises SpoolError if the disk fails."""
        frame = FRAME.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            try:
                segment = self._segment_for(len(frame))
                offset = self._active_size
                os.write(self._file, frame)  # type: ignore[arg-type]
                os.fsync(self._file)  # type: ignore[arg-type]
            except OSError as exc:
                raise SpoolError(f"cannot write to spool {self.path}: {exc}") from exc
            self._active_size += len(frame)
            self._live[segment] = self._live.get(segment, 0) + 1
        return Record(segment, offset + FRAME.size, len(body))

    def read(self, record: Record) -> bytes:
        """The body of a record this spool wrote; raises SpoolError if damaged."""
        try:
            with open(record.segment, "rb") as segment:
                segment.seek(record.offset - FRAME.size)
                data = segment.read(FRAME.size + record.length)
        except OSError as exc:
            raise SpoolError(f"cannot read spool {record.segment}: {exc}") from exc
        length, crc = FRAME.unpack_from(data)
        body = data[FRAME.size :]
        if length != record.length or len(body) != length or zlib.crc32(body) != crc:
            raise SpoolError(
                f"record at {record.offset} of {record.segment} is damaged"
            )
        return body

    def ack(self, record: Record) -> None:
        """Forget a record; its segment goes when its last record is acked."""
        with self._lock:
            left = self._live.get(record.segment, 0) - 1
            if left > 0:
                self._live[record.segment] = left
                return
            self._live.pop(record.segment, None)
            if record.segment == self._active:
                self._close_active()
            try:
                record.segment.unlink()
            except FileNotFoundError:
                pass

    def write_run(self, run_id: str, document: bytes) -> None:
        """Write a run's creation record atomically; raises SpoolError."""
        path = self.path / f"{run_id}{RUN_SUFFIX}"
        temporary = path.with_suffix(".tmp")
        with self._lock:
            try:
                self._open_folder()
                descriptor = os.open(
                    temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
                )
                try:
                    os.write(descriptor, document)
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
                os.replace(temporary, path)
            except OSError as exc:
                raise SpoolError(f"cannot write {path}: {exc}") from exc
            self._runs.add(run_id)

    def remove_run(self, run_id: str) -> None:
        """Forget a run's creation record: the run exists now."""
        with self._lock:
            self._runs.discard(run_id)
            (self.path / f"{run_id}{RUN_SUFFIX}").unlink(missing_ok=True)

    @property
    def records(self) -> int:
        with self._lock:
            return sum(self._live.values())

    def close(self) -> bool:
        """Release the folder; removes it when empty. Returns True if data remains."""
        with self._lock:
            self._close_active()
            remains = bool(self._live) or bool(self._runs)
            if self._lock_file is not None:
                if not remains:
                    (self.path / LOCK_NAME).unlink(missing_ok=True)
                os.close(self._lock_file)
                self._lock_file = None
            if not remains and self.path.exists():
                try:
                    self.path.rmdir()
                except OSError:
                    remains = True
            return remains

    def _segment_for(self, size: int) -> Path:
        if self._active is not None and self._active_size + size <= self.segment_bytes:
            return self._active
        if self._active is not None:
            self._close_active()
        self._open_folder()
        self._active = self.path / f"{self._next_index:08d}{SEGMENT_SUFFIX}"
        self._next_index += 1
        self._file = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._active_size = 0
        return self._active

    def _open_folder(self) -> None:
        if self._lock_file is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_file = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
            if fcntl is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _close_active(self) -> None:
        if self._file is not None:
            os.close(self._file)  # type: ignore[arg-type]
        self._file = None
        self._active = None
        self._active_size = 0


def read_segment(segment: Path) -> Iterator[tuple[int, bytes]]:
    """The (offset, body) records of a segment, in order, up to any torn tail."""
    data = segment.read_bytes()
    offset = 0
    while offset < len(data):
        if offset + FRAME.size > len(data):
            _torn(segment, offset, len(data), "a cut frame header")
            return
        length, crc = FRAME.unpack_from(data, offset)
        start = offset + FRAME.size
        body = data[start : start + length]
        if len(body) != length:
            _torn(segment, offset, len(data), "a cut record")
            return
        if zlib.crc32(body) != crc:
            _torn(segment, offset, len(data), "a CRC mismatch")
            return
        yield offset, body
        offset = start + length


def _torn(segment: Path, offset: int, size: int, why: str) -> None:
    logger.warning(
        "spool segment %s ends in a torn record at byte %s (%s); dropping its "
        "last %s bytes, which were never acknowledged as written",
        segment,
        offset,
        why,
        size - offset,
    )


def process_folders(path: Path) -> list[Path]:
    """The per-process spool folders at ``path``: itself, or those under it."""
    path = Path(path)
    if segments(path) or run_records(path) or (path / LOCK_NAME).exists():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + SEGMENT_SUFFIX))


def run_records(folder: Path) -> list[Path]:
    """The creation records of runs in a spool folder (see ``offline``)."""
    return sorted(folder.glob("*" + RUN_SUFFIX))


class FolderLock:
    """An exclusive, non-blocking hold on a spool folder; ``held`` says if it worked."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        path = self.folder / LOCK_NAME
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT)
        if fcntl is None:
            self.held = True
            return self
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except BlockingIOError:
            self.held = False
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def off_loop(function: Callable[..., T], *args: object) -> T:
    """Run blocking spool I/O in a thread, or in place once threads are gone.

    At interpreter exit the executors refuse work, and the spool must
    still be written.
    """
    try:
        return await asyncio.to_thread(function, *args)
    except RuntimeError:
        return function(*args)
