"""The wrapper's one connection pool to LiteLLM, and how its failures map to statuses.

LiteLLM's status is passed on for refusals of what the client asked (a 4xx,
but 401/403/407, which mean the platform's credentials, and 408, a timeout).
Trouble on the way to the model becomes 502 (LiteLLM unreachable or the
provider failed), 503 (the provider said it is unavailable) or 504 (timeout),
always in the OpenAI envelope, with the upstream message kept.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from urllib.parse import urlsplit

from wrapper.errors import GatewayError, error_in
from wrapper.observability.tracing import with_trace_context
from wrapper.upstream.http1 import Http1Pool, Unreachable

CONNECT_TIMEOUT_SECONDS = 5

# Headers of LiteLLM's answer worth passing to the client; the rest (provider URLs,
# key spend, internal ids) stays inside.
_PASSED_HEADERS = (
    "x-litellm-response-cost",
    "x-litellm-attempted-retries",
    "x-litellm-attempted-fallbacks",
    "x-litellm-model-group",
)


@dataclass
class UpstreamReply:
    status: int
    body: bytes
    headers: dict[str, str]  # all of LiteLLM's answer headers, lower-case (passed_headers: those the client gets)
    waited_seconds: float  # time spent waiting on LiteLLM, which is not wrapper overhead


@dataclass
class UpstreamStream:
    """A streamed answer LiteLLM has begun with 200: its headers, then its bytes as they arrive."""

    headers: dict[str, str]  # all of them, lower-case
    waited_seconds: float
    chunks: AsyncIterator[bytes]  # closing it early drops the connection, so LiteLLM sees the caller leave
    close: Callable[[], None]  # drop the connection now (no-op once the stream is complete)


class LiteLLMClient:
    """One keep-alive connection pool to LiteLLM, opened at start-up (wrapper.upstream.http1).

    Not aiohttp or httpx: on this hop aiohttp cost ~72 µs of CPU per request and httpx more, a fifth of the
    wrapper's whole budget; the hop needs far less than a general client (bench/results/hot_path.md).
    """

    def __init__(self, base_url: str, master_key: str | None, timeout_seconds: float) -> None:
        address = urlsplit(base_url)
        headers = {}
        if master_key:
            headers["authorization"] = f"Bearer {master_key}"
        self._pool = Http1Pool(address.hostname, address.port or 80, headers, CONNECT_TIMEOUT_SECONDS, timeout_seconds)

    async def start(self) -> None:
        pass  # connections are made on first use

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def post(self, path: str, body: bytes, request_id: str, headers: Mapping[str, str] = {},
                   ready: Callable[[], Awaitable[None]] | None = None) -> UpstreamReply:
        return await self.call("POST", path, body, request_id, headers, ready)

    async def call(self, method: str, path: str, body: bytes, request_id: str, headers: Mapping[str, str] = {},
                   ready: Callable[[], Awaitable[None]] | None = None) -> UpstreamReply:
        """One request and its whole answer; an error status is raised as the GatewayError it maps to. `ready`:
        what must be done before anything is sent (admission's decision), while the request is prepared."""
        try:
            reply = await self._pool.start(method, path, body, _headers(request_id, headers), ready=ready)
            content = await self._pool.read(reply)
        except (ConnectionError, TimeoutError) as exc:
            raise _transport_error(exc) from None
        waited = time.perf_counter() - reply.sent_at
        if reply.status >= 400:
            raise upstream_error(reply.status, content, reply.headers)
        return UpstreamReply(reply.status, content, reply.headers, waited)

    async def open_stream(self, path: str, body: bytes, request_id: str, headers: Mapping[str, str] = {},
                          ready: Callable[[], Awaitable[None]] | None = None) -> UpstreamStream:
        """Send a streaming request; return the open stream once LiteLLM has answered with 200 (`ready`: as `call`)."""
        try:
            reply = await self._pool.start("POST", path, body, _headers(request_id, headers), ready=ready)
        except (ConnectionError, TimeoutError) as exc:
            raise _transport_error(exc) from None
        if reply.status >= 400:
            try:
                content = await self._pool.read(reply)
            except (ConnectionError, TimeoutError):
                content = b""
            raise upstream_error(reply.status, content, reply.headers)
        return UpstreamStream(reply.headers, time.perf_counter() - reply.sent_at, _raw_chunks(self._pool, reply),
                              lambda: self._pool.close(reply))

    async def get(self, path: str) -> tuple[int, bytes]:
        try:
            reply = await self._pool.start("GET", path, b"", {}, timeout=5)
            return reply.status, await self._pool.read(reply, timeout=5)
        except (ConnectionError, TimeoutError) as exc:
            raise _transport_error(exc) from None


async def _raw_chunks(pool: Http1Pool, reply) -> AsyncIterator[bytes]:
    """The stream's bytes as they arrive. Closing early drops the connection, so LiteLLM sees the caller leave."""
    chunks = pool.chunks(reply)
    try:
        async for chunk in chunks:
            yield chunk
    except (ConnectionError, TimeoutError) as exc:
        raise _transport_error(exc) from None
    finally:
        await chunks.aclose()


def _headers(request_id: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
    # JSON, unless the route says otherwise (a multipart upload); LiteLLM continues the request's trace
    return with_trace_context({"content-type": "application/json", "x-request-id": request_id, **extra})


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    passed = {name: headers[name] for name in _PASSED_HEADERS if name in headers}
    retry_after = headers.get("retry-after") or headers.get("llm_provider-retry-after")
    if retry_after:
        passed["retry-after"] = retry_after
    return passed


def upstream_error(status: int, content: bytes, headers: Mapping[str, str]) -> GatewayError:
    message, kind = _upstream_message(content)
    extra = passed_headers(headers)
    if status in (401, 403, 407):
        # LiteLLM refusing the wrapper, or a provider refusing the platform's key: not the client's fault.
        return GatewayError(502, "The gateway could not authenticate upstream.", code="upstream_auth_failed")
    if 400 <= status < 500 and status != 408:
        # The request was refused for what it asked (a provider's 400, a context too long, 429): the client's to fix.
        return GatewayError(status, message, type=kind, code=str(status), headers=extra)
    if status in (408, 504):
        return GatewayError(504, message, code="upstream_timeout", headers=extra)
    if status == 503:
        return GatewayError(503, message, code="upstream_unavailable", headers=extra)
    return GatewayError(502, message, code="upstream_error", headers=extra)


MAX_MESSAGE_CHARS = 2000


def _upstream_message(content: bytes) -> tuple[str, str | None]:
    """LiteLLM's message, less any traceback it quotes (seen in 1.108.5 when a provider's answer did not parse)."""
    error = error_in(content)
    if error is not None and isinstance(error.get("message"), str):
        message = error["message"].split("Traceback (most recent call last)", 1)[0].rstrip()
        return (message[:MAX_MESSAGE_CHARS] or "The model provider returned an error."), error.get("type")
    return "The model provider returned an error.", None


def _transport_error(exc: Exception) -> GatewayError:
    if isinstance(exc, TimeoutError):
        return GatewayError(504, "The model did not answer in time.", code="upstream_timeout")
    if isinstance(exc, Unreachable):
        # LiteLLM down or restarting (`gateway up` starts it again): a transient 503 the client may retry
        return GatewayError(503, "The model router (LiteLLM) is not reachable right now; try again shortly.",
                            code="upstream_unavailable", headers={"retry-after": "1"})
    return GatewayError(502, "The connection to the model router broke.", code="upstream_error")
