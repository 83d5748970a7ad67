"""The wrapper's HTTP server: uvicorn's httptools protocol with the bounds it lacks.

uvicorn closes a connection that idles after a response (keep-alive), but not one
that connects and never finishes its headers: a thousand such clients would hold a
thousand sockets for ever (slowloris). Here a request's headers must have
arrived within `GATEWAY_HEADER_TIMEOUT_SECONDS` of the connection (a later
request on a kept-alive connection: of its first byte), or the connection is
closed, with a 408 if part of a request had come. Requests beyond
`GATEWAY_MAX_CONNECTIONS` open connections, or as many requests in flight, get the
contract's 503 envelope (`server_busy`, `Retry-After: 1`) instead of uvicorn's
plain text. The body's own deadline is the app's (wrapper/request.py), and the
keep-alive idle timeout and graceful shutdown are uvicorn's options, set by `gateway up`.

Selected with `uvicorn --http wrapper.server:BoundedHttpTools` (wrapper/cli/up.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wrapper.settings import get_settings

logger = logging.getLogger("wrapper.server")

_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
              b"content-length: %d\r\n\r\n%s")
_BUSY = orjson.dumps({"error": {"message": "The gateway is at its connection limit; try again shortly.",
                                "type": "service_unavailable", "param": None, "code": "server_busy"}})


class BoundedHttpTools(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout = settings.header_timeout_seconds
        self.max_connections = settings.max_connections
        self.limit_concurrency = None  # uvicorn's own check answers in plain text: ours is below
        self._header_timer: asyncio.TimerHandle | None = None
        self._began = False  # a request's first bytes came, its headers not yet all

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()  # a new connection's first request: from the moment it connects

    def connection_lost(self, exc) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began = True
        if self._header_timer is None:  # a later request on a kept-alive connection: from its first byte
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        self._began = False
        super().on_headers_complete()

    def _start_asgi_task(self, cycle, app) -> None:  # uvicorn 0.54's (pinned): where each request's app is chosen
        if len(self.connections) > self.max_connections or len(self.tasks) >= self.max_connections:
            _busy_warning()
            app = _server_busy
        super()._start_asgi_task(cycle, app)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._began:  # part of a request came: say why it is dropped (a silent connection is just closed)
            body = orjson.dumps({"error": {
                "message": f"The request's headers did not arrive within {self.header_timeout:g} s.",
                "type": "timeout_error", "param": None, "code": "request_timeout"}})
            self.transport.write(_TIMED_OUT % (len(body), body))
        self.transport.close()


async def _server_busy(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _BUSY})


_last_warning = 0.0


def _busy_warning() -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= 10:  # at most one line per 10 s: an overload must not also flood the log
        _last_warning = now
        logger.warning("at the connection limit (GATEWAY_MAX_CONNECTIONS=%d): refusing requests with 503",
                       get_settings().max_connections)
