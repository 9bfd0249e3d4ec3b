"""Browser-facing protections of a server that often listens on localhost.

- Host check: a request whose Host header is not an allowed name is refused
  with 403, which defeats DNS rebinding (a hostile page whose name resolves
  to 127.0.0.1 reaching the local server). /health and /version are exempt.
- Cross-origin writes: a POST, PUT, PATCH or DELETE under /api/ or
  /ajax-api/ that carries an Origin which is neither local nor allowed is
  refused with 403, so a page in the user's browser cannot log to, or delete
  from, a local server. Clients that are not browsers send no Origin.
- Every response says ``X-Content-Type-Options: nosniff`` and
  ``X-Frame-Options: SAMEORIGIN`` (``add_security_headers``).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from aiohttp import web
from runstream.ingest.routes.wire import Handler, json_response

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_EXEMPT_PATHS = {"/health", "/version"}
_WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_API_PREFIXES = ("/api/", "/ajax-api/")


def _host_name(value: str) -> str:
    """The name part of a Host header or an origin's netloc, without the port."""
    if value.startswith("["):
        return value[1:].split("]", 1)[0].lower()
    return value.rsplit(":", 1)[0].lower() if value.count(":") == 1 else value.lower()


def _is_private(name: str) -> bool:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def security_middleware(
    *, allowed_hosts: list[str], allowed_origins: list[str]
) -> web.middleware:  # type: ignore[valid-type]
    """The middleware, for the hosts and origins allowed besides local ones.

    ``allowed_hosts`` may contain ``*`` to allow every Host (behind a proxy
    that checks it); ``allowed_origins`` may contain ``*`` to allow any origin.
    """
    hosts = {h.lower() for h in allowed_hosts}
    origins = {o.rstrip("/").lower() for o in allowed_origins}

    def host_allowed(header: str) -> bool:
        name = _host_name(header)
        return (
            "*" in hosts or name in _LOCAL_NAMES or name in hosts or _is_private(name)
        )

    def origin_allowed(origin: str) -> bool:
        if "*" in origins or origin.rstrip("/").lower() in origins:
            return True
        name = (urlsplit(origin).hostname or "").lower()
        return name in _LOCAL_NAMES

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in _EXEMPT_PATHS and not host_allowed(request.host):
            return _forbidden(
                "Invalid Host header - possible DNS rebinding attack detected"
            )
        origin = request.headers.get("Origin")
        if (
            origin
            and request.method in _WRITE_METHODS
            and request.path.startswith(_API_PREFIXES)
            and not origin_allowed(origin)
        ):
            return _forbidden(f"Cross-origin request blocked from origin {origin!r}")
        return await handler(request)

    return middleware


async def add_security_headers(
    request: web.Request, response: web.StreamResponse
) -> None:
    """An on_response_prepare hook: runs before any response's headers are sent."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")


def _forbidden(message: str) -> web.Response:
    return json_response(
        {"error_code": "PERMISSION_DENIED", "message": message}, status=403
    )
