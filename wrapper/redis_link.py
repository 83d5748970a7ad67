"""One pipelined connection to Redis for the hot path's Lua scripts (admission now, the cache later).

Why not redis-py's asyncio client here: on this machine it costs ~90 µs of CPU per command (pool checkout, retry
and observability layers), two thirds of admission's whole budget. Scripts need none of that: every request's
EVALSHA goes down one connection, replies come back in order (RESP is ordered), so a FIFO of futures matches
them and many requests share the connection at once without a pool or a lock. hiredis parses the replies.
~25 µs per call. redis-py stays for everything off the hot path (the CLI, tests).

A call may carry a deadline (the limits step's 0.25 s): past it, its caller gets TimeoutError from one timer the
connection keeps while calls wait (a timer per call cost the hot path more than the rest of admission's Python); a
reply that comes after its caller gave up is read and dropped. A lost connection fails everything waiting on it and the next call reconnects; a connection
whose oldest reply is overdue by `stall_seconds` (a server stopped, a network cut that never closes the socket) is
dropped the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


@dataclass(frozen=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def command(*args: object) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future, float, float | None]] = deque()  # future, sent at, due by
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()[0]
            if not future.done():  # its caller may have given up
                future.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self._watch is not None:
            self._watch.cancel()
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(RedisConnectionError("the connection to Redis was lost"))

    def send(self, data: bytes, deadline: float | None = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future, now = loop.create_future(), loop.time()
        self.waiting.append((future, now, None if deadline is None else now + deadline))
        if deadline is not None and self._watch is None:
            self._watch = loop.call_at(now + deadline, self._expire)
        self.transport.write(data)
        return future

    def _expire(self) -> None:
        """Fail the calls past their deadline; come back for the next one due."""
        self._watch = None
        now, next_due = asyncio.get_running_loop().time(), None
        for future, _, due in self.waiting:
            if due is None or future.done():
                continue
            if due <= now:
                future.set_exception(TimeoutError("Redis did not answer in time"))
            elif next_due is None or due < next_due:
                next_due = due
        if next_due is not None:
            self._watch = asyncio.get_running_loop().call_at(next_due, self._expire)


class RedisLink:
    def __init__(self, url: str, connect_timeout: float = 1.0, stall_seconds: float = 5.0) -> None:
        self.options = parse_url(url)
        self.connect_timeout, self.stall_seconds = connect_timeout, stall_seconds
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task | None = None

    async def run(self, script: Script, keys: list[str], args: list) -> object:
        """The script's reply (EVALSHA; the source once if Redis does not know it yet). Raises ResponseError for an
        error the script returns, redis' ConnectionError (an OSError) when Redis cannot be reached."""
        return await self.start(script, keys, args)

    def start(self, script: Script, keys: list[str], args: list, deadline: float | None = None) -> Awaitable[object]:
        """`run`, with the command written at once when connected, so the caller can work while it travels; the
        result must be awaited. With a deadline (seconds), TimeoutError once it has passed, connecting included."""
        data = command("EVALSHA", script.sha, len(keys), *keys, *args)
        protocol = self._ready()
        if protocol is not None:
            sent = protocol.send(data, deadline)
        else:
            sent = self._call(data) if deadline is None else asyncio.wait_for(self._call(data), deadline)
        return self._script_reply(script, keys, args, sent, deadline)

    async def _script_reply(self, script: Script, keys: list[str], args: list, sent: Awaitable[object],
                            deadline: float | None) -> object:
        reply = await sent
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            again = self._call(command("EVAL", script.source, len(keys), *keys, *args))  # once per script and server
            reply = await (again if deadline is None else asyncio.wait_for(again, deadline))
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def call(self, *args: object) -> object:
        """Any command's reply (SCAN, for reports off the hot path); errors as `run`."""
        reply = await self._call(command(*args))
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    async def _call(self, data: bytes) -> object:
        protocol = await self._connected()
        return await protocol.send(data)

    def _ready(self) -> _Protocol | None:
        """The connection, when it is up and not stalled (a stalled one is closed: connection_lost fails its callers)."""
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            if not protocol.waiting or asyncio.get_running_loop().time() - protocol.waiting[0][1] < self.stall_seconds:
                return protocol
            protocol.transport.close()
        return None

    async def _connected(self) -> _Protocol:
        protocol = self._ready()
        if protocol is not None:
            return protocol
        if self._connecting is None:  # one connection attempt, shared by everyone waiting for it
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_ended)
        return await asyncio.shield(self._connecting)

    def _connect_ended(self, task: asyncio.Task) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: its waiters may all have given up already

    async def _connect(self) -> _Protocol:
        loop, options = asyncio.get_running_loop(), self.options
        try:
            async with asyncio.timeout(self.connect_timeout):
                if "path" in options:
                    _, protocol = await loop.create_unix_connection(_Protocol, options["path"])
                else:
                    tls = ssl.create_default_context() if options.get("connection_class") is SSLConnection else None
                    if tls is not None and options.get("ssl_cert_reqs") in ("none", "optional"):
                        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
                    _, protocol = await loop.create_connection(
                        _Protocol, options.get("host", "localhost"), options.get("port", 6379), ssl=tls)
                setup = []
                if options.get("password"):
                    setup.append(protocol.send(command("AUTH", *filter(None, (options.get("username"),
                                                                                   options["password"])))))
                if options.get("db"):
                    setup.append(protocol.send(command("SELECT", options["db"])))
                for reply in await asyncio.gather(*setup):
                    if isinstance(reply, hiredis.ReplyError):
                        protocol.transport.close()
                        raise RedisConnectionError(f"Redis refused the connection's setup: {reply}")
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis ({type(exc).__name__})") from exc
        self._protocol = protocol
        return protocol
