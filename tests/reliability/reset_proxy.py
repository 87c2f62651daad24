"""A loopback TCP proxy that lets requests through but resets some responses, or freezes.

It models the worst partitions for a client. Resets: the server did the work, the answer never
arrived. Each chunk the upstream sends back is, with probability `drop`, replaced by a TCP reset
of the client connection (SO_LINGER 0), so the client sees `ConnectionResetError`/
`RemoteProtocolError` after its request was fully delivered. Freeze (`freeze()`/`thaw()`): no
byte moves either way and no connection closes, as with a hung store server or a silent
network cut behind a middlebox; the client's kernel still sees its data acknowledged, so only
the client's own timeouts can end a call. Runs its own asyncio loop in a thread.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class ProxyStats:
    connections: int = 0
    responses: int = 0
    resets: int = 0


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # linger 0: close() sends RST instead of FIN, like a middlebox dropping the flow
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ResetProxy:
    def __init__(self, upstream_port: int, drop: float = 0.0, seed: int = 0) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.random = random.Random(seed)
        self.stats = ProxyStats()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flowing: asyncio.Event | None = None  # cleared while frozen

    def freeze(self) -> None:
        """Hold every byte in both directions (and new connections) until `thaw()`."""
        self._set_flowing(False)

    def thaw(self) -> None:
        self._set_flowing(True)

    def _set_flowing(self, flowing: bool) -> None:
        assert self._loop is not None and self._flowing is not None, "the proxy is not running"
        event = self._flowing
        self._loop.call_soon_threadsafe(event.set if flowing else event.clear)

    async def _gate(self) -> None:
        assert self._flowing is not None
        await self._flowing.wait()

    async def _pipe_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._gate()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        await self._gate()
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _reset(cwriter)
            return
        up = asyncio.ensure_future(self._pipe_up(creader, uwriter))
        try:
            while data := await ureader.read(65536):
                await self._gate()
                self.stats.responses += 1
                if self.random.random() < self.drop:
                    self.stats.resets += 1
                    _reset(cwriter)
                    return
                cwriter.write(data)
                await cwriter.drain()
            cwriter.close()
        except (ConnectionError, OSError):
            _reset(cwriter)
        finally:
            uwriter.close()
            up.cancel()

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port; yield the proxy's base URL."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        server: list[asyncio.Server] = []

        async def start() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = srv.sockets[0].getsockname()[1]
            server.append(srv)
            ready.set()

        self._loop = loop
        thread = threading.Thread(target=loop.run_forever, daemon=True, name="reset-proxy")
        thread.start()
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        ready.wait(10)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:

            async def shutdown() -> None:
                server[0].close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
