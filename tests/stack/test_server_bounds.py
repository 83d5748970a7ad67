"""The wrapper's HTTP server, as `gateway up` runs it, is bounded: a slow or idle client cannot hold a connection or a
request, and beyond its connection cap a request gets the contract's 503 at once (wrapper/server.py)."""

from __future__ import annotations

import socket
import time
from contextlib import closing

import httpx
import orjson
import pytest

from tests.support.processes import free_port
from tests.support.wrapper import start_wrapper, write_tenants
from wrapper.cli.up import wrapper_command
from wrapper.settings import Settings

HEADER_TIMEOUT, BODY_TIMEOUT, KEEP_ALIVE, MAX_CONNECTIONS = 1, 1, 3, 8


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bounded")
    config = tmp_path / "gateway.yaml"
    key = write_tenants(config, {"solo": {"models": ["*"]}})["solo"]
    env = {"GATEWAY_CONFIG": str(config), "GATEWAY_LITELLM_PORT": str(free_port()),
           "GATEWAY_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT), "GATEWAY_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
           "GATEWAY_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE), "GATEWAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    command = lambda port: wrapper_command(Settings(port=port, keep_alive_seconds=KEEP_ALIVE))  # noqa: E731
    wrapper = start_wrapper(tmp_path, env, command=command)
    wrapper.key = key
    wrapper.port = int(wrapper.url.rsplit(":", 1)[1])
    yield wrapper
    wrapper.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic()


def test_a_client_that_sends_its_headers_slowly_is_answered_408_and_dropped(bounded):
    with closing(connect(bounded.port)) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        for _ in range(4):  # a header byte every 0.4 s: it never finishes
            time.sleep(0.4)
            try:
                sock.sendall(b"x")
            except OSError:
                break
        received, closed = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(received.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert HEADER_TIMEOUT - 0.1 <= closed - started < HEADER_TIMEOUT + 1


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(bounded):
    with closing(connect(bounded.port)) as sock:
        started = time.monotonic()
        received, closed = read_until_closed(sock)
    assert received == b"" and closed - started < HEADER_TIMEOUT + 1


def test_a_body_that_trickles_is_a_408_and_the_connection_is_closed(bounded):
    with closing(connect(bounded.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + bounded.key.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"model\"")
        started = time.monotonic()
        received, closed = read_until_closed(sock)  # the rest of the body never comes
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT - 0.1 <= closed - started < BODY_TIMEOUT + 1


def test_a_kept_alive_connection_may_idle_longer_than_the_header_timeout_and_closes_after_keep_alive(bounded):
    with httpx.Client(base_url=bounded.url, timeout=5) as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(HEADER_TIMEOUT + 0.5)  # idle between requests is keep-alive's to bound, not the header timeout's
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").extensions["network_stream"] is not None
    with closing(connect(bounded.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        started = time.monotonic()
        received, closed = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200 ") and KEEP_ALIVE - 0.2 <= closed - started < KEEP_ALIVE + 1


def test_slowloris_connections_beyond_the_cap_get_503_and_free_their_slots_by_the_timeout(bounded):
    """A client holding more connections than the cap, each sending headers byte by byte: the others get the
    contract's 503 (not a hang), and once the header timeout has dropped them, service is back by itself."""
    holders = [connect(bounded.port) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in holders:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        busy = httpx.get(f"{bounded.url}/healthz", timeout=5)
        assert busy.status_code == 503 and time.monotonic() - started < 0.5
        assert busy.json()["error"]["code"] == "server_busy" and busy.headers["retry-after"] == "1"
        time.sleep(HEADER_TIMEOUT + 0.5)
        assert httpx.get(f"{bounded.url}/healthz", timeout=5).status_code == 200
    finally:
        for sock in holders:
            sock.close()
