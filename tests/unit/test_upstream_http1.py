"""The wrapper's HTTP/1.1 client to LiteLLM (wrapper/upstream/http1.py) against small servers in this process.

What LiteLLM (uvicorn) does on the wire, and what it might do on a bad day: keep-alive and closing idle
connections, chunked and fixed-length bodies, stalls, garbage, a dropped connection mid-body. The stack
tier drives the same client against the real LiteLLM.
"""

from __future__ import annotations

import asyncio

import pytest

from wrapper.errors import GatewayError
from wrapper.upstream.client import LiteLLMClient
from wrapper.upstream.http1 import Http1Pool


class Server:
    """Answers each request with `answer(request_number, connection_number)`: raw bytes (or a list of them and
    pauses in seconds), None to close the connection, ("close", bytes) to answer and then close, "stall"."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self.seen: list[bytes] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests += 1
                self.seen.append(head + body)
                answer = self.answer(self.requests, connection)
                if answer == "stall":
                    await asyncio.sleep(3600)
                if answer is None:
                    break
                if isinstance(answer, tuple):  # ("close", bytes): answer, then close the connection
                    writer.write(answer[1])
                    await writer.drain()
                    break
                for part in answer if isinstance(answer, list) else [answer]:
                    if isinstance(part, float):
                        await asyncio.sleep(part)
                    else:
                        writer.write(part)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(*chunks: bytes) -> list:
    parts: list = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"]
    for chunk in chunks:
        parts += [b"%x\r\n%s\r\n" % (len(chunk), chunk), 0.01]
    return parts + [b"0\r\n\r\n"]


def client(port: int, timeout: float = 5) -> LiteLLMClient:
    return LiteLLMClient(f"http://127.0.0.1:{port}", "sk-master", timeout)


async def test_requests_reuse_one_kept_alive_connection_and_carry_the_key_and_request_id():
    async with Server(lambda n, c: ok(b'{"n":%d}' % n, b"X-LiteLLM-Model-Group: cheap\r\n")) as server:
        litellm = client(server.port)
        replies = [await litellm.post("/v1/chat/completions", b'{"a":1}', f"req-{i}") for i in range(20)]
        assert [r.body for r in replies] == [b'{"n":%d}' % (i + 1) for i in range(20)]
        assert replies[0].headers["x-litellm-model-group"] == "cheap"  # names lower-cased
        assert server.connections == 1
        assert b"authorization: Bearer sk-master\r\n" in server.seen[0] and b"x-request-id: req-0\r\n" in server.seen[0]
        assert server.seen[0].endswith(b'\r\n\r\n{"a":1}')


async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    async with Server(lambda n, c: ("close", ok())) as server:
        litellm = client(server.port)
        for number in range(3):
            assert (await litellm.post("/v1/chat/completions", b"{}", str(number))).status == 200
            await asyncio.sleep(0.05)  # the close reaches the client while its connection is idle
        assert server.connections == 3


async def test_a_connection_closed_while_idle_before_the_client_noticed_is_not_reused():
    """LiteLLM killed: its side of every idle connection closes at once, but the wrapper's event loop may take the
    next request before it reads that. Reused, the connection would break (a 502); a new one is refused (a 503) or,
    here, answered."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):  # the first connection answers once and closes; the second answers
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(ok())
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    litellm = client(port)
    assert (await litellm.post("/v1/chat/completions", b"{}", "first")).status == 200
    time.sleep(0.2)  # the close reaches this socket; the event loop, blocked, does not see it
    assert (await litellm.post("/v1/chat/completions", b"{}", "second")).status == 200
    thread.join(5)
    listener.close()


async def test_a_stream_arrives_chunk_by_chunk_and_its_connection_is_reused_after_its_end():
    async with Server(lambda n, c: chunked(b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n") if n == 1 else ok()) as server:
        litellm = client(server.port)
        stream = await litellm.open_stream("/v1/chat/completions", b"{}", "s")
        assert stream.headers["content-type"] == "text/event-stream"
        received = [chunk async for chunk in stream.chunks]
        assert b"".join(received) == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n" and len(received) >= 2
        assert (await litellm.post("/v1/chat/completions", b"{}", "after")).status == 200
        assert server.connections == 1


async def test_a_stream_left_early_closes_its_connection_so_litellm_sees_the_caller_leave():
    async with Server(lambda n, c: chunked(*[b"data: x\n\n"] * 50) if n == 1 else ok()) as server:
        litellm = client(server.port)
        stream = await litellm.open_stream("/v1/chat/completions", b"{}", "s")
        async for _ in stream.chunks:
            break
        await stream.chunks.aclose()
        assert (await litellm.post("/v1/chat/completions", b"{}", "after")).status == 200
        assert server.connections == 2


async def test_a_large_streamed_body_read_slowly_arrives_whole():
    piece = bytes(range(256)) * 256  # 64 KiB
    async with Server(lambda n, c: chunked(*[piece] * 40)) as server:  # 2.5 MiB, more than the client buffers
        stream = await client(server.port).open_stream("/v1/chat/completions", b"{}", "s")
        total = bytearray()
        async for chunk in stream.chunks:
            total += chunk
            await asyncio.sleep(0.001)
        assert bytes(total) == piece * 40


@pytest.mark.parametrize("answer, status, code", [
    ("stall", 504, "upstream_timeout"),
    ([b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial", None], 502, "upstream_error"),
    (b"SMTP ready\r\n\r\n", 502, "upstream_error"),
    (None, 503, "upstream_unavailable"),  # closed before a byte of the answer: LiteLLM went away, retry
], ids=["stall", "cut-mid-body", "not-http", "closed"])
async def test_trouble_on_the_wire_is_a_clear_gateway_error_and_the_next_request_works(answer, status, code):
    async with Server(lambda n, c: answer if n == 1 else ok()) as server:
        litellm = client(server.port, timeout=0.5)
        with pytest.raises(GatewayError) as error:
            await litellm.post("/v1/chat/completions", b"{}", "bad")
        assert (error.value.status, error.value.code) == (status, code)
        assert (await litellm.post("/v1/chat/completions", b"{}", "next")).status == 200


async def test_nothing_listening_is_a_503_the_client_may_retry():
    async with Server(lambda n, c: ok()) as server:
        port = server.port
    with pytest.raises(GatewayError) as error:
        await client(port).post("/v1/chat/completions", b"{}", "x")
    assert (error.value.status, error.value.code) == (503, "upstream_unavailable")
    assert error.value.headers == {"retry-after": "1"}


async def test_a_cancelled_call_closes_its_connection():
    async with Server(lambda n, c: "stall" if n == 1 else ok()) as server:
        litellm = client(server.port)
        call = asyncio.ensure_future(litellm.post("/v1/chat/completions", b"{}", "gone"))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await litellm.post("/v1/chat/completions", b"{}", "next")).status == 200
        assert server.connections == 2


async def test_an_idle_connection_is_dropped_before_litellm_would_close_it(monkeypatch):
    import wrapper.upstream.http1 as http1

    monkeypatch.setattr(http1, "KEEPALIVE_SECONDS", 0.05)
    async with Server(lambda n, c: ok()) as server:
        pool = Http1Pool("127.0.0.1", server.port, {}, 1, 1)
        for _ in range(2):
            reply = await pool.start("GET", "/", b"", {})
            await pool.read(reply)
            await asyncio.sleep(0.1)
        assert server.connections == 2
