"""The TCP proxy's modes, against a tiny echo server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from runstream.loadtest.proxy import ProxyMode, TcpProxy


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with TcpProxy("127.0.0.1", port) as tcp_proxy:
        yield tcp_proxy
    server.close()
    await server.wait_closed()


async def round_trip(proxy: TcpProxy, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


@pytest.mark.timeout(10)
async def test_pass_forwards_both_ways(proxy: TcpProxy) -> None:
    reply = await round_trip(proxy, b"x" * 100_000)

    assert reply == b"x" * 100_000


@pytest.mark.timeout(10)
@pytest.mark.parametrize("mode", ["cut", "drop-replies"])
async def test_broken_modes_reset_the_connection(proxy: TcpProxy, mode: str) -> None:
    proxy.set_mode(ProxyMode(mode))  # type: ignore[arg-type]

    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await round_trip(proxy, b"hello")


@pytest.mark.timeout(10)
async def test_blackhole_swallows_until_restored(proxy: TcpProxy) -> None:
    proxy.set_mode(ProxyMode("blackhole"))

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(round_trip(proxy, b"hello"), 0.3)
    proxy.set_mode(ProxyMode("pass"))

    assert await round_trip(proxy, b"again") == b"again"


@pytest.mark.timeout(10)
async def test_slow_throttles_to_the_rate(proxy: TcpProxy) -> None:
    proxy.set_mode(ProxyMode("slow", rate=100_000))
    started = time.monotonic()

    await round_trip(proxy, b"y" * 50_000)

    # 50 kB each way at 100 kB/s: about half a second per direction.
    assert time.monotonic() - started >= 0.5
