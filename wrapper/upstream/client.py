"""The wrapper's one connection pool to LiteLLM, and how its failures map to statuses.

LiteLLM's status is passed on for refusals of what the client asked (a 4xx,
but 401/403/407, which mean the platform's credentials, and 408, a timeout).
Trouble on the way to the model becomes 502 (LiteLLM unreachable or the
provider failed), 503 (the provider said it is unavailable) or 504 (timeout),
always in the OpenAI envelope, with the upstream message kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from wrapper.errors import GatewayError, error_in
from wrapper.observability.tracing import with_trace_context

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
    """One keep-alive connection pool to LiteLLM, opened at start-up.

    aiohttp rather than httpx: on this hop httpx added about 0.3 ms per request,
    a third of the wrapper's whole budget (see bench/results/overhead.md).
    """

    def __init__(self, base_url: str, master_key: str | None, timeout_seconds: float) -> None:
        self._base_url = base_url
        self._headers = {"content-type": "application/json"}
        if master_key:
            self._headers["authorization"] = f"Bearer {master_key}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            self._base_url, connector=connector, headers=self._headers, timeout=self._timeout, auto_decompress=False
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, path: str, body: bytes, request_id: str) -> UpstreamReply:
        started = time.perf_counter()
        try:
            async with self._session.post(path, data=body, headers=_headers(request_id)) as response:
                content = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None
        waited = time.perf_counter() - started
        if response.status >= 400:
            raise upstream_error(response.status, content, response.headers)
        return UpstreamReply(response.status, content, _lower(response.headers), waited)

    async def open_stream(self, path: str, body: bytes, request_id: str) -> UpstreamStream:
        """Send a streaming request; return the open stream once LiteLLM has answered with 200."""
        started = time.perf_counter()
        try:
            response = await self._session.post(path, data=body, headers=_headers(request_id))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None
        if response.status >= 400:
            try:
                content = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                content = b""
            finally:
                response.release()
            raise upstream_error(response.status, content, response.headers)
        return UpstreamStream(_lower(response.headers), time.perf_counter() - started, _raw_chunks(response),
                              response.close)

    async def get(self, path: str) -> tuple[int, bytes]:
        try:
            async with self._session.get(path, timeout=aiohttp.ClientTimeout(total=5)) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None


async def _raw_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The stream's bytes as they arrive. Closing early drops the connection, so LiteLLM sees the caller leave."""
    finished = False
    try:
        async for chunk in response.content.iter_any():
            yield chunk
        finished = True
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise _transport_error(exc) from None
    finally:
        if finished:
            response.release()
        else:
            response.close()


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _headers(request_id: str) -> dict[str, str]:
    return with_trace_context({"x-request-id": request_id})  # LiteLLM continues the request's trace


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


def _upstream_message(content: bytes) -> tuple[str, str | None]:
    error = error_in(content)
    if error is not None and isinstance(error.get("message"), str):
        return error["message"], error.get("type")
    return "The model provider returned an error.", None


def _transport_error(exc: Exception) -> GatewayError:
    if isinstance(exc, asyncio.TimeoutError):
        return GatewayError(504, "The model did not answer in time.", code="upstream_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return GatewayError(502, "The model router (LiteLLM) is unreachable.", code="upstream_unreachable")
    return GatewayError(502, "The connection to the model router broke.", code="upstream_error")
