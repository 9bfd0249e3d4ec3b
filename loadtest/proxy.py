"""A small TCP proxy between the workers and the server, to inject network faults.

Modes, switched at any time with ``set_mode``:

- ``pass``: bytes flow both ways unchanged;
- ``cut``: every open connection is reset (bytes in flight are lost) and new
  connections are accepted and reset at once, as a broken link would;
- ``blackhole``: connections stay open but nothing is forwarded: bytes are
  read and dropped, so requests hang until the client's timeout;
- ``drop-replies``: requests reach the server, but a connection is reset as
  soon as its reply comes back: the server commits, the client never hears;
- ``slow``: bytes are forwarded at ``rate`` bytes/s per direction of each
  connection, each chunk after ``latency`` seconds.

It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

ModeName = Literal["pass", "cut", "blackhole", "drop-replies", "slow"]
_CHUNK = 64 * 1024
# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class ProxyMode:
    name: ModeName = "pass"
    rate: float = 0.0  # bytes/s per direction of a connection; 0 = unlimited
    latency: float = 0.0  # seconds added to every chunk


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_host``:``upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = ProxyMode()
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "proxy on 127.0.0.1:%s to %s:%s",
            self.port,
            self.upstream_host,
            self.upstream_port,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._reset_all()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def set_mode(self, mode: ProxyMode) -> None:
        logger.info("proxy mode %s", mode)
        self.mode = mode
        if mode.name == "cut":
            self._reset_all()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        if self.mode.name == "cut":
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, reply=False)),
            asyncio.create_task(self._pump(up_reader, writer, reply=True)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        reply: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            mode = self.mode
            size = _CHUNK
            if mode.name == "slow" and mode.rate:
                # Small chunks keep the throttle smooth at low rates.
                size = max(1, min(_CHUNK, int(mode.rate / 20)))
            data = await reader.read(size)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            mode = self.mode
            if mode.name == "cut" or (mode.name == "drop-replies" and reply):
                _reset(writer)
                return
            if mode.name == "blackhole":
                continue
            if mode.name == "slow":
                started = loop.time()
                pause = mode.latency + (len(data) / mode.rate if mode.rate else 0.0)
                await asyncio.sleep(max(0.0, started + pause - loop.time()))
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset rather than a clean FIN, as a broken link does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    writer.transport.abort()
