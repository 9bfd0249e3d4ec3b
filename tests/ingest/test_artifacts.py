"""The mlflow-artifacts proxy against a real server: round trips, the real
mlflow client, and paths that try to leave the artifact root."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import mlflow
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from blockbuster import BlockBuster, blockbuster_ctx
from mlflow import MlflowClient
from mlflow.entities import FileInfo
from runstream.ingest.app import create_app
from runstream.ingest.artifacts import UPLOAD_PREFIX, check_path
from runstream.ingest.errors import InvalidParameter
from runstream.ingest.settings import ServerSettings
from yarl import URL

pytestmark = pytest.mark.timeout(30)

API = "/api/2.0/mlflow-artifacts/artifacts"
AJAX = "/ajax-api/2.0/mlflow-artifacts/artifacts"
MIB = 1024 * 1024
SECRET = b"outside the root"


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fails a test when the artifact code blocks the server's event loop."""
    scanned = ["runstream.ingest.artifacts", "runstream.ingest.routes.artifacts"]
    with blockbuster_ctx(scanned) as guard:
        yield guard


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the root holding a file no request may reach."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(SECRET)
    return folder


@pytest.fixture
async def client(root: Path, database_url: str) -> AsyncIterator[TestClient]:
    app = create_app(ServerSettings(artifacts_root=root), database_url)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


async def send_raw(
    client: TestClient, method: str, target: str, *, data: bytes | None = None
) -> tuple[int, dict[str, str]]:
    """Status and JSON body of ``target`` sent exactly as written.

    The test client would merge ``..`` segments and re-quote the path.
    """
    url = URL(f"http://127.0.0.1:{client.port}{target}", encoded=True)
    async with client.session.request(method, url, data=data) as response:
        return response.status, await response.json()


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: file contents, or None for folders and links."""
    entries: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        regular = path.is_file() and not path.is_symlink()
        entries[name] = path.read_bytes() if regular else None
    return entries


async def error_of(response: ClientResponse) -> tuple[int, str, str]:
    body = await response.json()
    return response.status, body["error_code"], body["message"]


@pytest.mark.parametrize("prefix", [API, AJAX])
async def test_upload_download_list_delete_round_trip(
    client: TestClient, root: Path, prefix: str
) -> None:
    deep, top = b"deep contents\n", b"\x00\x01top"

    put_deep = await client.put(f"{prefix}/a/b/c.txt", data=deep)
    put_top = await client.put(f"{prefix}/a/top.bin", data=top)
    download = await client.get(f"{prefix}/a/b/c.txt")
    listing = await client.get(prefix, params={"path": "a"})
    listing_root = await client.get(prefix)

    assert (put_deep.status, await put_deep.json()) == (200, {})
    assert (put_top.status, await put_top.json()) == (200, {})
    assert download.status == 200
    assert await download.read() == deep
    assert download.headers["Content-Disposition"].startswith(
        'attachment; filename="c.txt"'
    )
    assert download.headers["Content-Length"] == str(len(deep))
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert await listing.json() == {
        "files": [
            {"path": "b", "is_dir": True},
            {"path": "top.bin", "is_dir": False, "file_size": len(top)},
        ]
    }
    assert await listing_root.json() == {"files": [{"path": "a", "is_dir": True}]}
    assert (root / "a" / "b" / "c.txt").read_bytes() == deep

    delete_file = await client.delete(f"{prefix}/a/b/c.txt")
    gone = await client.get(f"{prefix}/a/b/c.txt")
    delete_folder = await client.delete(f"{prefix}/a")

    assert (delete_file.status, await delete_file.json()) == (200, {})
    assert await error_of(gone) == (
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "No such artifact: 'a/b/c.txt'",
    )
    assert (delete_folder.status, await delete_folder.json()) == (200, {})
    assert tree(root) == {}


async def test_name_with_spaces_percent_and_accents_round_trips(
    client: TestClient, root: Path
) -> None:
    name = "dir with space/résumé 100%.txt"

    upload = await client.put(f"{API}/{quote(name)}", data=b"ok")
    download = await client.get(f"{API}/{quote(name)}")
    listing = await client.get(API, params={"path": "dir with space"})

    assert upload.status == 200
    assert await download.read() == b"ok"
    assert (
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20100%25.txt"
        in (download.headers["Content-Disposition"])
    )
    assert await listing.json() == {
        "files": [{"path": "résumé 100%.txt", "is_dir": False, "file_size": 2}]
    }
    assert (root / name).read_bytes() == b"ok"


async def test_upload_replaces_the_file_and_leaves_no_temporary_file(
    client: TestClient, root: Path
) -> None:
    await client.put(f"{API}/run/model.pkl", data=b"first version")

    response = await client.put(f"{API}/run/model.pkl", data=b"second")

    assert response.status == 200
    assert tree(root) == {"run": None, "run/model.pkl": b"second"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("missing/folder", {}),
        ("a/file.txt", {}),
        ("a/file.txt/below", {}),
        ("", {"files": [{"path": "a", "is_dir": True}]}),
    ],
)
async def test_listing_a_file_or_missing_folder_is_empty(
    client: TestClient, path: str, expected: dict[str, object]
) -> None:
    await client.put(f"{API}/a/file.txt", data=b"x")

    response = await client.get(API, params={"path": path})

    assert (response.status, await response.json()) == (200, expected)


async def test_download_of_a_folder_is_400(client: TestClient) -> None:
    await client.put(f"{API}/a/file.txt", data=b"x")

    response = await client.get(f"{API}/a")

    assert await error_of(response) == (
        400,
        "INVALID_PARAMETER_VALUE",
        "Invalid path: 'a' is a folder",
    )


@pytest.mark.parametrize("path", ["missing.txt", "a/file.txt/below"])
async def test_download_of_nothing_is_404(client: TestClient, path: str) -> None:
    await client.put(f"{API}/a/file.txt", data=b"x")

    response = await client.get(f"{API}/{path}")

    assert (await error_of(response))[:2] == (404, "RESOURCE_DOES_NOT_EXIST")


@pytest.mark.parametrize(
    "path", ["a", "a/file.txt/below", ".", f"a/{UPLOAD_PREFIX}0123"]
)
async def test_upload_to_a_folder_through_a_file_or_to_a_reserved_name_is_400(
    client: TestClient, root: Path, path: str
) -> None:
    await client.put(f"{API}/a/file.txt", data=b"x")

    status, body = await send_raw(client, "PUT", f"{API}/{path}", data=b"y")

    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert tree(root) == {"a": None, "a/file.txt": b"x"}


async def test_delete_of_the_root_is_400_and_of_nothing_succeeds(
    client: TestClient, root: Path
) -> None:
    await client.put(f"{API}/a/file.txt", data=b"x")

    status, body = await send_raw(client, "DELETE", f"{API}/.")
    missing_delete = await client.delete(f"{API}/a/missing.txt")

    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert (missing_delete.status, await missing_delete.json()) == (200, {})
    assert tree(root) == {"a": None, "a/file.txt": b"x"}


async def _pattern(
    size: int, *, seed: int, block: int = 256 * 1024
) -> AsyncIterator[bytes]:
    source = random.Random(seed)
    for start in range(0, size, block):
        yield source.randbytes(min(block, size - start))


async def test_large_binary_streams_intact_without_holding_the_file(
    client: TestClient, root: Path
) -> None:
    size = 24 * MIB
    expected = hashlib.sha256()
    async for block in _pattern(size, seed=7):
        expected.update(block)
    tracemalloc.start()

    try:
        upload = await client.put(f"{API}/big/blob.bin", data=_pattern(size, seed=7))
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        download = await client.get(f"{API}/big/blob.bin")
        received = hashlib.sha256()
        async for block in download.content.iter_chunked(MIB):
            received.update(block)
        download_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert upload.status == 200
    assert download.headers["Content-Length"] == str(size)
    assert received.hexdigest() == expected.hexdigest()
    assert (root / "big" / "blob.bin").stat().st_size == size
    # Client and server share this process; both must stay far below the file.
    assert upload_peak < size // 4
    assert download_peak < size // 4


async def test_interrupted_upload_leaves_no_file(
    client: TestClient, root: Path
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"PUT {API}/partial/blob.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {8 * MIB}\r\n\r\n".encode()
    )
    writer.write(b"x" * (2 * MIB))
    await writer.drain()
    while not any(root.rglob(f"{UPLOAD_PREFIX}*")):
        await asyncio.sleep(0.01)

    writer.close()
    await writer.wait_closed()
    while any(root.rglob(f"{UPLOAD_PREFIX}*")):
        await asyncio.sleep(0.01)

    assert tree(root) == {"partial": None}


def _log_with_mlflow(source: Path, experiment: str) -> mlflow.entities.RunInfo:
    experiment_id = MlflowClient().create_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_artifact(str(source), artifact_path="data")
    return run.info


def _read_with_mlflow(
    run: mlflow.entities.RunInfo, destination: Path
) -> tuple[list[FileInfo], list[FileInfo], Path]:
    tracking = MlflowClient()
    top = tracking.list_artifacts(run.run_id)
    # MlflowClient.list_artifacts(run_id, "data") would also search the run's
    # logged models (POST logged-models/search); list the folder by its URI.
    data = mlflow.artifacts.list_artifacts(artifact_uri=f"{run.artifact_uri}/data")
    local = tracking.download_artifacts(run.run_id, "", str(destination))
    return top, data, Path(local)


async def test_mlflow_client_logs_lists_and_downloads_artifacts(
    client: TestClient, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mlflow.set_tracking_uri (which other tests call) beats the variable.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"http://127.0.0.1:{client.port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    payload = random.Random(3).randbytes(3 * MIB)
    source = tmp_path / "model.bin"
    source.write_bytes(payload)
    destination = tmp_path / "downloaded"
    destination.mkdir()

    # The mlflow client blocks, so it runs in a thread while this loop serves it.
    try:
        run = await asyncio.to_thread(
            _log_with_mlflow, source, f"artifacts-{os.urandom(4).hex()}"
        )
        top, data, local = await asyncio.to_thread(_read_with_mlflow, run, destination)
    finally:
        mlflow.set_tracking_uri(previous)

    stored = root / run.experiment_id / run.run_id / "artifacts"
    assert (
        run.artifact_uri
        == f"mlflow-artifacts:/{run.experiment_id}/{run.run_id}/artifacts"
    )
    assert tree(stored) == {
        "data": None,
        "data/model.bin": payload,
        "notes": None,
        "notes/hello.txt": b"hello",
    }
    assert top == [FileInfo("data", True, None), FileInfo("notes", True, None)]
    assert data == [FileInfo("data/model.bin", False, len(payload))]
    assert tree(local) == tree(stored)


UNSAFE_PATHS = [
    "../outside/secret.txt",
    "a/../../outside/secret.txt",
    "%2e%2e%2foutside%2fsecret.txt",
    "%2E%2E/outside/secret.txt",
    "..%2f..%2fstore%2f..%2foutside/secret.txt",
    "%252e%252e%252foutside%252fsecret.txt",
    "%25252e%25252e/outside/secret.txt",
    "/{outside}/secret.txt",
    "{outside_quoted}%2fsecret.txt",
    "secret%00.txt",
    "a%00/../../outside/secret.txt",
    "..%5coutside%5csecret.txt",
    "%255c..%255coutside/secret.txt",
    "line%0abreak.txt",
]


def _unsafe(template: str, outside: Path) -> str:
    return template.format(outside=outside, outside_quoted=quote(str(outside), safe=""))


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
@pytest.mark.parametrize("template", UNSAFE_PATHS)
async def test_unsafe_path_is_400_and_touches_nothing(
    client: TestClient, tmp_path: Path, outside: Path, method: str, template: str
) -> None:
    before = tree(tmp_path)
    target = f"{API}/{_unsafe(template, outside)}"

    status, body = await send_raw(client, method, target, data=b"pwned")

    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert body["message"].startswith("Invalid path")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("template", UNSAFE_PATHS)
async def test_unsafe_listing_path_is_400(
    client: TestClient, outside: Path, template: str
) -> None:
    target = f"{API}?path={_unsafe(template, outside)}"

    status, body = await send_raw(client, "GET", target)

    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


@pytest.fixture
def escaping_links(root: Path, outside: Path) -> None:
    """A folder link and a file link inside the root that lead outside it."""
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "leak.txt").symlink_to(outside / "secret.txt")


@pytest.mark.usefixtures("escaping_links")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "link/secret.txt"),
        ("GET", "leak.txt"),
        ("PUT", "link/new.txt"),
        ("PUT", "leak.txt"),
        ("PUT", "link/deeper/new.txt"),
        ("DELETE", "link/secret.txt"),
        ("DELETE", "leak.txt"),
        ("DELETE", "link"),
    ],
)
async def test_symlink_leading_outside_is_refused(
    client: TestClient, tmp_path: Path, outside: Path, method: str, path: str
) -> None:
    before = tree(tmp_path)

    response = await client.request(method, f"{API}/{path}", data=b"pwned")

    status, code, message = await error_of(response)
    assert (status, code) == (400, "INVALID_PARAMETER_VALUE")
    assert message == f"Invalid path: {path!r} resolves outside the artifact root"
    assert tree(tmp_path) == before
    assert (outside / "secret.txt").read_bytes() == SECRET


@pytest.mark.usefixtures("escaping_links")
async def test_listing_refuses_and_hides_symlinks_leading_outside(
    client: TestClient,
) -> None:
    through_link = await client.get(API, params={"path": "link"})
    root_listing = await client.get(API)

    assert (await error_of(through_link))[:2] == (400, "INVALID_PARAMETER_VALUE")
    assert (root_listing.status, await root_listing.json()) == (200, {})


async def test_symlink_inside_the_root_is_followed(
    client: TestClient, root: Path
) -> None:
    await client.put(f"{API}/real/file.txt", data=b"inside")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)

    response = await client.get(f"{API}/alias/file.txt")

    assert await response.read() == b"inside"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/b.txt", "a/b.txt"),
        ("a//./b.txt", "a/b.txt"),
        ("", "."),
        ("100%.txt", "100%.txt"),
        ("a%2fb", "a%2fb"),
        ("...", "..."),
        ("..a/b..", "..a/b.."),
    ],
)
def test_check_path_accepts_relative_paths(path: str, expected: str) -> None:
    assert check_path(path).as_posix() == expected


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "a/..",
        "/etc/passwd",
        "%2fetc/passwd",
        "a\\b",
        "a\x00b",
        "a\x7fb",
        "%2e%2e",
        "%252e%252e",
        "%" + "25" * 12 + "2e%2e",
    ],
)
def test_check_path_refuses_unsafe_paths(path: str) -> None:
    with pytest.raises(InvalidParameter, match="^Invalid path"):
        check_path(path)
