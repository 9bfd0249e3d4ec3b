"""The artifact store: files of runs and models in one folder behind the server.

Clients name an artifact by a path relative to the store's root, carried in
the URL of MLflow's ``mlflow-artifacts`` proxy routes and percent-decoded
once by aiohttp. ``check_path`` refuses a path (InvalidParameter, "Invalid
path") that is absolute or has a ``..`` segment, a backslash or a control
character. It checks the path as given and again after each further
percent-decoding, because a proxy or a client may decode it once more; the
path as given is what names the file. The store then refuses any path that,
symlinks followed, resolves outside its root.

File I/O runs in worker threads, so the event loop never waits on the disk.
An upload streams into a temporary file beside its target and replaces the
target only when complete: a reader gets the old file or the new one, never
a part of either.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mimetypes
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import unquote

from runstream.ingest.errors import InvalidParameter, NotFound

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024

# Uploads in progress live beside their target under this prefix; listings
# hide them, so a crashed upload leaves no visible artifact.
UPLOAD_PREFIX = ".runstream-upload-"

_MAX_DECODINGS = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_path(path: str) -> PurePosixPath:
    """A client's artifact path, checked, as a path relative to the root.

    Empty segments and ``.`` are dropped, so ``""`` and ``"."`` name the
    root itself. Raises InvalidParameter for an unsafe path.
    """
    candidate = path
    for _ in range(_MAX_DECODINGS):
        _refuse_unsafe(path, candidate)
        decoded = unquote(candidate)
        if decoded == candidate:
            break
        candidate = decoded
    else:
        raise InvalidParameter(f"Invalid path: {path!r} is encoded too many times")

    parts = [part for part in path.split("/") if part not in ("", ".")]
    return PurePosixPath(*parts)


def _refuse_unsafe(path: str, candidate: str) -> None:
    if candidate.startswith("/"):
        reason = "is absolute"
    elif "\\" in candidate:
        reason = "has a backslash"
    elif _CONTROL.search(candidate):
        reason = "has a control character"
    elif ".." in candidate.split("/"):
        reason = "has a '..' segment"
    else:
        return
    raise InvalidParameter(f"Invalid path: {path!r} {reason}")


@contextmanager
def _refusals(path: str) -> Iterator[None]:
    """Turn the operating system's refusals of a client's path into 400s."""
    try:
        yield
    except (NotADirectoryError, FileExistsError) as exc:
        raise InvalidParameter(f"Invalid path: {path!r} goes through a file") from exc
    except IsADirectoryError as exc:
        raise InvalidParameter(f"Invalid path: {path!r} is a folder") from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidParameter(f"Invalid path: {path!r} is too long") from exc
        if exc.errno == errno.ELOOP:
            raise InvalidParameter(f"Invalid path: {path!r} loops") from exc
        raise


class ArtifactStore:
    """Artifact files under one root folder, served by the mlflow-artifacts routes.

    Every method takes a client's path and raises InvalidParameter when it
    is unsafe (see ``check_path``) or resolves outside the root. The root
    need not exist: the first upload creates it, and until then listings are
    empty.
    """

    def __init__(self, root: Path, *, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
        self.root = Path(root)
        self.chunk_bytes = chunk_bytes

    async def put(self, path: str, body: AsyncIterable[bytes]) -> None:
        """Store ``body`` at ``path``, replacing any file there.

        At most about ``chunk_bytes`` of the body is held in memory. The file
        is synced to disk before it replaces the target. On any error or
        cancellation the temporary file is removed and the target is left as
        it was. Raises InvalidParameter when ``path`` is the root, a folder,
        or goes through a file.
        """
        relative = check_path(path)
        if relative.name.startswith(UPLOAD_PREFIX):
            raise InvalidParameter(
                f"Invalid path: {path!r} starts with the reserved {UPLOAD_PREFIX!r}"
            )
        upload = await asyncio.to_thread(self._begin_upload, path, relative)

        try:
            pending: list[bytes] = []
            size = 0
            async for data in body:
                pending.append(data)
                size += len(data)
                if size >= self.chunk_bytes:
                    await asyncio.to_thread(upload.write, pending)
                    pending, size = [], 0
            await asyncio.to_thread(upload.commit, pending, path)
        except BaseException:
            # The thread runs to the end even if this await is cancelled.
            await asyncio.to_thread(upload.abort)
            raise

    def open(self, path: str) -> ArtifactReader:
        """The file at ``path``, to read inside ``async with``.

        Entering raises NotFound ("No such artifact") when nothing is there
        and InvalidParameter when ``path`` names a folder or is unsafe.
        """
        return ArtifactReader(self, path, check_path(path))

    async def list_folder(self, path: str) -> list[dict[str, Any]]:
        """The entries of the folder at ``path`` ("" is the root), by name.

        Each entry is MLflow's FileInfo with the basename as ``path``;
        folders carry no ``file_size``. A file or a missing folder lists as
        empty. Symlinks that lead outside the root are left out.
        """
        relative = check_path(path)
        return await asyncio.to_thread(self._list_folder, path, relative)

    async def delete(self, path: str) -> None:
        """Remove the file or folder (with its contents) at ``path``.

        Deleting what is not there succeeds, so a retried request does too.
        Raises InvalidParameter for the root itself.
        """
        relative = check_path(path)
        await asyncio.to_thread(self._delete, path, relative)

    def resolve(self, path: str, relative: PurePosixPath) -> tuple[Path, Path]:
        """The real root and the real target of ``relative``, symlinks followed.

        Blocking: call it from a worker thread. Raises InvalidParameter when
        the target lies outside the root.
        """
        # A symlink swapped in between this check and the file operation
        # that follows is not caught; only someone who writes the root
        # directly could do that, since the routes never create symlinks.
        with _refusals(path):
            root = Path(os.path.realpath(self.root))
            target = Path(os.path.realpath(root / relative))
        if not target.is_relative_to(root):
            raise InvalidParameter(
                f"Invalid path: {path!r} resolves outside the artifact root"
            )
        return root, target

    def _begin_upload(self, path: str, relative: PurePosixPath) -> _Upload:
        root, target = self.resolve(path, relative)
        if target == root:
            raise InvalidParameter(f"Invalid path: {path!r} is the artifact root")

        with _refusals(path):
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a folder", str(target))
            temporary = target.parent / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            descriptor = os.open(temporary, flags, 0o666)
        return _Upload(os.fdopen(descriptor, "wb"), temporary=temporary, target=target)

    def _list_folder(self, path: str, relative: PurePosixPath) -> list[dict[str, Any]]:
        root, folder = self.resolve(path, relative)
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []

        files: list[dict[str, Any]] = []
        for entry in entries:
            if entry.name.startswith(UPLOAD_PREFIX):
                continue
            if entry.is_symlink() and not _inside(entry.path, root):
                continue
            try:
                if entry.is_dir():
                    files.append({"path": entry.name, "is_dir": True})
                    continue
                size = entry.stat().st_size
            except FileNotFoundError:
                continue  # removed since the scan, or a dangling symlink
            files.append({"path": entry.name, "is_dir": False, "file_size": size})
        return files

    def _delete(self, path: str, relative: PurePosixPath) -> None:
        root, target = self.resolve(path, relative)
        if target == root:
            raise InvalidParameter(f"Invalid path: {path!r} is the artifact root")

        try:
            # ``target`` is resolved, so it is never a symlink here.
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return


class ArtifactReader:
    """One artifact file opened for download; use it with ``async with``.

    Inside the block, ``name``, ``size``, ``modified_ns`` and
    ``content_type`` describe the file as opened; ``chunks()`` reads it.
    A file replaced meanwhile is still read whole as it was when opened.
    """

    def __init__(
        self, store: ArtifactStore, path: str, relative: PurePosixPath
    ) -> None:
        self.store = store
        self.path = path
        self.relative = relative
        self.name = relative.name
        self.size = 0
        self.modified_ns = 0
        self.content_type = "application/octet-stream"
        self._file: BinaryIO | None = None

    async def __aenter__(self) -> ArtifactReader:
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread finishes the open regardless; close what it opens.
            opening.add_done_callback(lambda _: self._close())
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        # Closing a file opened for reading does not wait on the disk, so it
        # runs in the event loop: a thread hop here could be cancelled and
        # leak the descriptor.
        if self._file is not None:
            self._file.close()
            self._file = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, ``chunk_bytes`` at a time."""
        if self._file is None:
            raise RuntimeError("ArtifactReader.chunks() called outside async with")
        while data := await asyncio.to_thread(self._file.read, self.store.chunk_bytes):
            yield data

    def _open(self) -> None:
        _, target = self.store.resolve(self.path, self.relative)
        # O_NONBLOCK keeps a FIFO in the store from hanging the open; it
        # changes nothing for regular files.
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        with _refusals(self.path):
            try:
                descriptor = os.open(target, flags)
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise NotFound(f"No such artifact: {self.path!r}") from exc

        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            os.close(descriptor)
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise InvalidParameter(f"Invalid path: {self.path!r} is {kind}")
        self._file = os.fdopen(descriptor, "rb")
        self.size = info.st_size
        self.modified_ns = info.st_mtime_ns
        guessed, _ = mimetypes.guess_type(self.name)
        self.content_type = guessed or "application/octet-stream"


class _Upload:
    """A temporary file beside ``target``; ``commit`` moves it over the target.

    Each method runs in a worker thread; the lock orders a cancelled write
    before the abort that follows it.
    """

    def __init__(self, file: BinaryIO, *, temporary: Path, target: Path) -> None:
        self.file = file
        self.temporary = temporary
        self.target = target
        self._lock = threading.Lock()

    def write(self, chunks: list[bytes]) -> None:
        with self._lock:
            self.file.writelines(chunks)

    def commit(self, chunks: list[bytes], path: str) -> None:
        with self._lock:
            self.file.writelines(chunks)
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            with _refusals(path):
                os.replace(self.temporary, self.target)
        _sync_folder(self.target.parent)

    def abort(self) -> None:
        with self._lock:
            self.file.close()
            try:
                self.temporary.unlink(missing_ok=True)
            except OSError:
                logger.warning(
                    "could not remove the unfinished upload %s; delete it by hand",
                    self.temporary,
                    exc_info=True,
                )


def _inside(path: str, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _sync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    descriptor = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
