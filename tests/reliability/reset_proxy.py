"""A loopback TCP fault proxy: lost responses, latency, resets, frozen and stalled links.

One asyncio loop in a thread forwards every accepted connection to one upstream port (an API,
PostgreSQL, Redis). Faults, all changeable while it runs:

- `drop`: each chunk the upstream sends back is, with this probability, replaced by a TCP reset
  of the client connection (SO_LINGER 0) — the worst partition for a client: the server did the
  work, the answer never arrived (S11);
- `latency_s` ± `jitter_s`: each chunk is forwarded that long after it arrived, in both
  directions, order kept (chunks in flight overlap, as packets do) (S12);
- `reset_rate`: each chunk, in either direction, resets both sides of its connection with this
  probability — a connection dying mid-stream (S12);
- `freeze()` / `thaw()`: no byte moves either way and new connections wait, but nothing is
  lost or closed; after the thaw everything flows on — a hung store server or a long pause;
- `stall()` / `heal()`: bytes in both directions are swallowed and new connections never reach
  the upstream. Each connection that lost bytes is *half-open* for good: its client gets no
  answer and no reset, unless it sends again after `heal()` (the forgotten peer then answers
  RST) — a stuck middlebox whose upstream vanished (S12, S20).

While frozen or stalled the client's kernel still sees its data acknowledged and keepalives
answered (the proxy is alive), so only the client's own timeouts can end a call. Packet loss
below TCP (keepalive probes vanishing) needs a network namespace blackhole (`netns.py`, S10).
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
from urllib.parse import urlsplit, urlunsplit


@dataclass
class ProxyStats:
    connections: int = 0
    responses: int = 0  # chunks from the upstream
    resets: int = 0  # connections reset by `drop` or `reset_rate`
    swallowed: int = 0  # chunks dropped while stalled
    half_open: int = 0  # connections that lost bytes to a stall


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # linger 0: close() sends RST instead of FIN, like a middlebox dropping the flow
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: its client side and (unless it began stalled) its upstream."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dead = False  # lost bytes to a stall: half-open from now on

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class ResetProxy:
    """Forward `127.0.0.1:<port>` to `127.0.0.1:<upstream_port>` with the faults above."""

    def __init__(
        self,
        upstream_port: int,
        drop: float = 0.0,
        seed: int = 0,
        *,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        reset_rate: float = 0.0,
    ) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.reset_rate = reset_rate
        self.random = random.Random(seed)
        self.stats = ProxyStats()
        self.port = 0
        self.stalled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flowing: asyncio.Event | None = None  # cleared while frozen

    def via(self, url: str) -> str:
        """`url` (a store's or an API's) with its port replaced by this proxy's."""
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{self.port}"))

    # -- faults switched by the test ------------------------------------------------------------

    def freeze(self) -> None:
        """Hold every byte in both directions (and new connections) until `thaw()`."""
        self._set_flowing(False)

    def thaw(self) -> None:
        self._set_flowing(True)

    def stall(self) -> None:
        """Swallow every byte until `heal()`; connections that lose bytes stay half-open."""
        self.stalled = True

    def heal(self) -> None:
        self.stalled = False

    def _set_flowing(self, flowing: bool) -> None:
        assert self._loop is not None and self._flowing is not None, "the proxy is not running"
        event = self._flowing
        self._loop.call_soon_threadsafe(event.set if flowing else event.clear)

    # -- forwarding -------------------------------------------------------------------------------

    def _swallow(self, link: _Link) -> None:
        self.stats.swallowed += 1
        if not link.dead:
            link.dead = True
            self.stats.half_open += 1
            if link.upstream is not None:  # the server side forgets the flow
                link.upstream.transport.abort()

    def _chaos(self, link: _Link, to_client: bool) -> bool:
        """Apply `drop` / `reset_rate` to one chunk; True if the connection was reset."""
        if to_client and self.drop and self.random.random() < self.drop:
            self.stats.resets += 1
            _reset(link.client)
            return True
        if self.reset_rate and self.random.random() < self.reset_rate:
            self.stats.resets += 1
            link.reset()
            return True
        return False

    async def _pump(self, reader: asyncio.StreamReader, link: _Link, to_client: bool) -> None:
        """Read one side; forward each chunk to the other side after the latency."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, link, to_client))
        due = 0.0
        try:
            while data := await reader.read(65536):
                if to_client:
                    self.stats.responses += 1
                if link.dead and not self.stalled and not to_client:
                    link.reset()  # healed: the forgotten peer answers RST
                    break
                if link.dead or self.stalled:
                    self._swallow(link)
                    continue
                delay = self.latency_s + self.random.uniform(-self.jitter_s, self.jitter_s)
                due = max(due, loop.time() + max(0.0, delay))
                queue.put_nowait((due, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait(None)
        await sender

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], link: _Link, to_client: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                assert self._flowing is not None
                await self._flowing.wait()
                if link.dead or self.stalled:
                    self._swallow(link)
                    continue
                if self._chaos(link, to_client):
                    return
                writer = link.client if to_client else link.upstream
                assert writer is not None
                writer.write(data)
                await writer.drain()
            # End of stream: pass it on, unless the peer is only half-open (no FIN, no RST).
            if not link.dead:
                target = link.client if to_client else link.upstream
                if target is not None:
                    target.close()
        except (ConnectionError, OSError):
            if not link.dead:
                link.reset()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        link = _Link(cwriter)
        try:
            assert self._flowing is not None
            await self._flowing.wait()
            if self.stalled:
                link.dead = True  # accepted by the kernel, never reaches the upstream
                self.stats.half_open += 1
                await self._pump(creader, link, to_client=False)
                return
            try:
                ureader, link.upstream = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port
                )
            except OSError:
                _reset(cwriter)
                return
            await asyncio.gather(
                self._pump(creader, link, to_client=False),
                self._pump(ureader, link, to_client=True),
            )
        except asyncio.CancelledError:
            link.reset()  # the proxy shuts down

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a free loopback port (`self.port`); yield the proxy's base URL."""
        loop = asyncio.new_event_loop()
        server: list[asyncio.Server] = []

        async def start() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = srv.sockets[0].getsockname()[1]
            server.append(srv)

        self._loop = loop
        thread = threading.Thread(target=loop.run_forever, daemon=True, name="reset-proxy")
        thread.start()
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
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
