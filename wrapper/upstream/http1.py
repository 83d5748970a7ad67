"""A lean HTTP/1.1 client for the one hop it serves: the wrapper to LiteLLM, on loopback, keep-alive.

aiohttp spent ~72 µs of CPU per request on this hop (measured against the fake provider); this client,
which only does what the hop needs, ~15-20 µs, and the wrapper's whole budget is ~350 µs. What it does:
one prepared header block per request written with the body in one call, responses parsed by httptools
(the C parser uvicorn uses: chunked and fixed-length bodies, keep-alive), a pool of idle connections
reused last-in first-out and dropped after KEEPALIVE_SECONDS idle (before LiteLLM's server closes them,
so a request is never written into a connection the other side is closing), a connect timeout, and a
read timeout that is reset by every byte received (as aiohttp's sock_read). A connection whose exchange
did not end cleanly (cancelled, timed out, broken) is closed, never reused. Streamed bodies are handed
over as they arrive, with reading paused while more than STREAM_BUFFER_BYTES wait for the reader.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

import httptools

KEEPALIVE_SECONDS = 4.0  # LiteLLM's uvicorn closes idle connections after 5 s
STREAM_BUFFER_BYTES = 1 << 20


class Unreachable(ConnectionError):
    """No connection could be made."""


class Broken(ConnectionError):
    """The connection ended, or said something that is not HTTP, before the response was complete."""


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.open = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._begin()

    def _begin(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.answering = False  # a byte of the answer has come
        self.error: Exception | None = None
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.answering = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Broken(f"LiteLLM's answer is not valid HTTP: {exc}"))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.open = False
        if self.complete:
            return
        if not self.answering:  # not a byte of the answer: LiteLLM went away (killed, restarting), not a broken answer
            self._fail(Unreachable("LiteLLM closed the connection before answering"))
        else:
            self._fail(Broken("the connection to LiteLLM closed before the answer was complete"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > STREAM_BUFFER_BYTES and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if not self.parser.should_keep_alive():
            self.open = False
            self.transport.close()
        self._wake()

    # the exchange
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        self.error = error
        self._wake()

    async def wait(self, timeout: float) -> None:
        """Until something happens (headers, body, the end, an error), at most `timeout` seconds of silence."""
        if self.error is not None:
            raise self.error
        self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, self._fail, TimeoutError())
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def dropped(self) -> bool:
        """An idle connection the peer has closed (LiteLLM killed, or closing it as idle) while the event loop has not
        yet read that: its socket is readable, where an idle HTTP/1.1 connection has nothing to say. Reused, it
        would turn a request for a LiteLLM that is down into a broken connection (a 502) instead of a 503."""
        try:
            readable, _, _ = select.select([self.transport.get_extra_info("socket").fileno()], [], [], 0)
        except (OSError, ValueError, AttributeError):
            return True
        return bool(readable)


class Reply:
    __slots__ = ("status", "headers", "connection", "sent_at")

    def __init__(self, status: int, headers: dict[str, str], connection: _Connection, sent_at: float) -> None:
        self.status, self.headers, self.connection = status, headers, connection
        self.sent_at = sent_at  # perf_counter when the request was written: the wait on LiteLLM counts from here


class Http1Pool:
    def __init__(self, host: str, port: int, headers: dict[str, str], connect_timeout: float, read_timeout: float) -> None:
        self.host, self.port = host, port
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        fixed = "".join(f"{name}: {value}\r\n" for name, value in {"host": f"{host}:{port}", **headers}.items())
        self._fixed = fixed
        self._idle: list[_Connection] = []

    async def start(self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float | None = None,
                    ready: Callable[[], Awaitable[None]] | None = None) -> Reply:
        """Send a request; return once the response's status and headers are in (its body follows: read/chunks).
        With `ready`, nothing is written before it has returned (a connection taken meanwhile goes back unused if
        it raises): what can be done before, is."""
        try:
            connection = await self._acquire()
        except Exception:  # (a cancelled request goes at once: the caller's `decided(failing=True)` records it)
            if ready is not None:  # LiteLLM unreachable: an earlier refusal (admission's 429) still comes first
                await ready()
            raise
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = f"{method} {path} HTTP/1.1\r\n{self._fixed}{extra}content-length: {len(body)}\r\n\r\n"
        if ready is not None:
            try:
                await ready()
            except BaseException:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
                raise
        sent_at = time.perf_counter()
        try:
            connection.transport.write(head.encode("latin-1") + body)
            while not connection.headers_done:
                await connection.wait(timeout or self.read_timeout)
        except BaseException:
            connection.close()  # cancelled, timed out or broken: LiteLLM sees the caller leave
            raise
        return Reply(connection.status, connection.headers, connection, sent_at)

    async def read(self, reply: Reply, timeout: float | None = None) -> bytes:
        """The whole body; the connection goes back to the pool."""
        connection = reply.connection
        try:
            while not connection.complete:
                await connection.wait(timeout or self.read_timeout)
        except BaseException:
            connection.close()
            raise
        body = connection.take()
        self._release(connection)
        return body

    async def chunks(self, reply: Reply) -> AsyncIterator[bytes]:
        """The body as it arrives; closing the iterator before the end closes the connection."""
        connection = reply.connection
        finished = False
        try:
            while True:
                if connection.chunks:
                    yield connection.take()
                    continue
                if connection.complete:
                    finished = True
                    return
                await connection.wait(self.read_timeout)
        finally:
            if finished:
                self._release(connection)
            else:
                connection.close()

    def close(self, reply: Reply) -> None:
        if not reply.connection.complete:
            reply.connection.close()

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.open and now - connection.idle_since < KEEPALIVE_SECONDS and not connection.dropped():
                connection._begin()
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop), self.host, self.port), self.connect_timeout)
        except TimeoutError:
            raise Unreachable(f"no connection to {self.host}:{self.port} within {self.connect_timeout} s") from None
        except OSError as exc:
            raise Unreachable(f"no connection to {self.host}:{self.port}: {exc}") from None
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.open and connection.complete and connection.error is None:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
