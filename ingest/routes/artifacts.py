"""MLflow's artifact proxy: upload, download, list and delete artifact files.

The routes live under ``/api/2.0/mlflow-artifacts/artifacts`` and the UI's
``/ajax-api/2.0/mlflow-artifacts/artifacts``; paths are relative to the
artifact store's root (the client turns ``mlflow-artifacts:/1/<run>/artifacts``
into ``1/<run>/artifacts``). Multipart uploads and presigned downloads are
not served: server-info says both are off, so the client never asks.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web
from runstream.ingest.context import ARTIFACTS
from runstream.ingest.errors import InvalidParameter
from runstream.ingest.routes.wire import json_response

logger = logging.getLogger(__name__)

ARTIFACT_PREFIXES = (
    "/api/2.0/mlflow-artifacts/artifacts",
    "/ajax-api/2.0/mlflow-artifacts/artifacts",
)


async def upload(request: web.Request) -> web.Response:
    """PUT <path>: the raw body becomes the file; answers ``{}``."""
    # No limit on the size of a file: client_max_size bounds only bodies
    # read whole, and no setting for artifact sizes exists yet.
    store, path = request.app[ARTIFACTS], request.match_info["path"]
    try:
        await store.put(path, request.content.iter_any())
    except ConnectionResetError as exc:
        # The client left mid-body; put has removed the partial file. A 400,
        # not a logged 500: nothing failed on our side.
        raise InvalidParameter(f"upload of {path!r} ended early: {exc}") from exc
    return json_response({})


async def download(request: web.Request) -> web.StreamResponse:
    """GET <path>: the file's bytes, streamed, as an attachment."""
    store = request.app[ARTIFACTS]
    async with store.open(request.match_info["path"]) as artifact:
        response = web.StreamResponse(
            headers={
                "Content-Disposition": attachment(artifact.name),
                # With the attachment disposition, keeps a browser from
                # rendering an uploaded HTML or SVG file on our origin.
                "X-Content-Type-Options": "nosniff",
            }
        )
        response.content_type = artifact.content_type
        response.content_length = artifact.size
        response.last_modified = artifact.modified_ns / 1e9
        response.etag = f"{artifact.modified_ns:x}-{artifact.size:x}"
        await response.prepare(request)
        try:
            async for data in artifact.chunks():
                await response.write(data)
        except ConnectionResetError:
            # The client left mid-download; there is nobody to answer.
            logger.debug("client left during download of %s", artifact.path)
            return response
        await response.write_eof()
    return response


async def list_folder(request: web.Request) -> web.Response:
    """GET ?path=<folder>: ``{"files": [...]}``, or ``{}`` when there is none."""
    store = request.app[ARTIFACTS]
    files = await store.list_folder(request.query.get("path", ""))
    return json_response({"files": files} if files else {})


async def delete(request: web.Request) -> web.Response:
    """DELETE <path>: removes the file or folder; answers ``{}``."""
    await request.app[ARTIFACTS].delete(request.match_info["path"])
    return json_response({})


def attachment(name: str) -> str:
    """A Content-Disposition value for downloading a file called ``name``."""
    # check_path has refused control characters, so only quotes and
    # backslashes need care in the plain form; RFC 6266's filename* carries
    # the exact name.
    plain = name.encode("ascii", "replace").decode("ascii")
    plain = plain.replace("\\", "_").replace('"', "_")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


# Any character, newlines included, so that a path with a control character
# reaches check_path and is refused as invalid rather than unrouted.
_PATH = r"/{path:[\s\S]+}"


def setup_routes(app: web.Application) -> None:
    """Mount the proxy routes; the app must hold an ArtifactStore at ARTIFACTS."""
    for prefix in ARTIFACT_PREFIXES:
        app.router.add_get(prefix, list_folder, allow_head=False)
        app.router.add_put(prefix + _PATH, upload)
        app.router.add_get(prefix + _PATH, download, allow_head=False)
        app.router.add_delete(prefix + _PATH, delete)
