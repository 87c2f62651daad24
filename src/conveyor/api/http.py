"""uvicorn's HTTP/1.1 protocol with the two limits it lacks: request-header size and time.

uvicorn (with httptools) reads headers of any size, and a connection that sends nothing, or a
header byte a minute (slowloris), holds its socket forever: the keep-alive timer only starts
after a first response. `GuardedHttpTools` answers `431` once a request's line and headers
pass `CONVEYOR_MAX_HEADER_BYTES` (64 KiB: browsers and proxies stop near 8-16 KiB), and `408`
(then closes) when they are not complete `CONVEYOR_HEADER_TIMEOUT_S` (10 s) after the
connection opened or the request's first byte came.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class HeadersTooLarge(Exception):
    """Raised from the parser callback; llhttp turns it into a parser error."""


class GuardedHttpTools(HttpToolsProtocol):
    """`HttpToolsProtocol` with a header size limit and a header-read timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes, self.header_timeout_s = _limits()
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._too_large:
            return  # answered 431 and closing: ignore the rest
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._answer(431, f"request headers are larger than {self.max_header_bytes} bytes")
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._start_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise HeadersTooLarge

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._answer(408, "the request headers did not arrive in time")

    def _answer(self, status: int, message: str) -> None:
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()


@functools.cache
def _limits() -> tuple[int, float]:
    """Read once per server process (each of `--processes N` reads its environment)."""
    from conveyor.settings import Settings

    settings = Settings()
    return settings.max_header_bytes, settings.header_timeout_s


def server_options() -> dict[str, Any]:
    """uvicorn options every conveyor HTTP server uses."""
    return {"http": GuardedHttpTools, "timeout_keep_alive": KEEP_ALIVE_S}


#: Idle keep-alive connections are kept this long (uvicorn's 5 s makes clients that pause
#: between requests race the server closing their pooled connection).
KEEP_ALIVE_S = 30
