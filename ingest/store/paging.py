"""Page tokens: opaque to clients, an offset inside (as MLflow's server does)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from runstream.ingest.errors import InvalidParameter


def encode_token(state: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode("ascii")


def decode_state(token: object) -> dict[str, object]:
    """The state inside a token; an empty dict for the first page."""
    if not token:
        return {}
    if not isinstance(token, str):
        raise InvalidParameter(f"page_token must be a string, got {token!r}")
    try:
        state = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidParameter(f"page_token {token[:40]!r} is not valid") from None
    if not isinstance(state, dict):
        raise InvalidParameter(f"page_token {token[:40]!r} is not valid")
    return state


def decode_token(token: object) -> int:
    """The offset in an offset token; 0 for the first page."""
    return state_int(decode_state(token), "offset")


def state_int(state: dict[str, object], name: str) -> int:
    """A non-negative integer of a token's state; 0 when absent."""
    value = state.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidParameter(f"page_token is not valid: {name} is {value!r}")
    return value


def state_str(state: dict[str, object], name: str) -> str:
    """A string of a token's state; empty when absent."""
    value = state.get(name, "")
    if not isinstance(value, str):
        raise InvalidParameter(f"page_token is not valid: {name} is {value!r}")
    return value


def next_token(offset: int, page_size: int, fetched: int) -> str | None:
    """The token after a page fetched with LIMIT page_size + 1, or None at the end."""
    if fetched <= page_size:
        return None
    return encode_token({"offset": offset + page_size})


async def page_of_ids(
    pool: asyncpg.Pool,
    query: Callable[[int, int], Any],
    *,
    page_token: object,
    max_results: int,
) -> tuple[list[Any], str | None]:
    """A page of ids from ``query(limit, offset)`` (a SqlQuery), and the next token."""
    offset = decode_token(page_token)
    page = query(max_results + 1, offset)
    ids = [row[0] for row in await pool.fetch(page.sql, *page.args)]
    return ids[:max_results], next_token(offset, max_results, len(ids))
