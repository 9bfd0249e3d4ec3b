"""What every route shares: reading requests, writing JSON, and the error table.

MLflow's clients send request fields as JSON bodies (POST, PATCH, DELETE)
or in the query string (GET); ``fields`` reads either. Doubles go out as
protobuf's JSON mapping writes them: non-finite values as the strings
"NaN", "Infinity" and "-Infinity".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from runstream.ingest import validation
from runstream.ingest.errors import (
    InvalidParameter,
    Overloaded,
    RunstreamError,
    http_status,
)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MLFLOW_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
# PostgreSQL text cannot hold NUL; refusing it here keeps it from becoming a
# database error deep inside a handler.
_NUL_MESSAGE = "request contains a NUL character (\\u0000), which no field may hold"


def add_rpc(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve an MLflow RPC under both the API and the UI (ajax-api) prefixes."""
    for prefix in MLFLOW_PREFIXES:
        app.router.add_route(method, prefix + path, handler)


def json_response(payload: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json"
    )


def page_response(name: str, items: list[Any], token: str | None) -> web.Response:
    """One page of a listing: ``{name: items}``, with ``next_page_token`` if more."""
    payload: dict[str, Any] = {name: items}
    if token:
        payload["next_page_token"] = token
    return json_response(payload)


async def fields(request: web.Request) -> dict[str, Any]:
    """The request's fields: the JSON body, or the query string for GET."""
    if request.method == "GET":
        return query_fields(request)
    body = await request.read()
    if not body:
        return {}
    if b"\\u0000" in body:
        raise InvalidParameter(_NUL_MESSAGE)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidParameter(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidParameter("request body must be a JSON object")
    return document


def query_fields(request: web.Request) -> dict[str, Any]:
    """Query parameters; a key given more than once becomes a list."""
    result: dict[str, Any] = {}
    if "\x00" in request.query_string or "%00" in request.query_string:
        raise InvalidParameter(_NUL_MESSAGE)
    for key in request.query:
        values = request.query.getall(key)
        result[key] = values if len(values) > 1 else values[0]
    return result


def as_list(value: Any) -> list[Any]:
    """A repeated field: absent, one value, or a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def required(document: dict[str, Any], name: str, parent: str = "") -> Any:
    """A field that must be present; ``parent`` prefixes its name in the error."""
    value = document.get(name)
    if value is None or value == "":
        path = f"{parent}.{name}" if parent else name
        raise InvalidParameter(
            f"Missing value for required parameter '{path}'. See the API docs "
            "for more information about request parameters."
        )
    return value


def page_size(document: dict[str, Any], *, default: int, upper: int) -> int:
    """``max_results`` of a search: a positive integer no larger than ``upper``."""
    value = validation.parse_int(
        "max_results", document.get("max_results", default), minimum=1
    )
    if value > upper:
        raise InvalidParameter(f"max_results {value} is over the limit of {upper}")
    return value


def run_id_of(document: dict[str, Any]) -> str:
    """The run id from ``run_id`` or MLflow's older ``run_uuid``, checked."""
    value = document.get("run_id")
    if value is None or value == "":
        value = document.get("run_uuid")
    if value is None or value == "":
        required(document, "run_id")  # raises with MLflow's message
    return validation.check_run_id("run_id", value)


def error_body(error: RunstreamError) -> bytes:
    return orjson.dumps({"error_code": error.error_code, "message": str(error)})


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """The HTTP boundary: our errors become MLflow's JSON errors; bugs become 500s."""
    try:
        return await handler(request)
    except RunstreamError as error:
        status = http_status(error)
        headers = {}
        if isinstance(error, Overloaded):
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        if status >= 500 and not isinstance(error, Overloaded):
            logger.error("%s %s failed", request.method, request.path, exc_info=error)
        return web.Response(
            body=error_body(error),
            status=status,
            content_type="application/json",
            headers=headers,
        )
    except web.HTTPException as exc:
        if exc.status == 404 and exc.content_type != "application/json":
            return web.Response(
                body=orjson.dumps(
                    {
                        "error_code": "ENDPOINT_NOT_FOUND",
                        "message": f"no route for {request.method} {request.path}",
                    }
                ),
                status=404,
                content_type="application/json",
            )
        raise
    except Exception:
        logger.exception(
            "%s %s failed with an unexpected error", request.method, request.path
        )
        return web.Response(
            body=orjson.dumps(
                {"error_code": "INTERNAL_ERROR", "message": "internal server error"}
            ),
            status=500,
            content_type="application/json",
        )
