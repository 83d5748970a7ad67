"""The wrapper's one connection pool to LiteLLM, and how its failures map to statuses.

LiteLLM's status is passed on for client mistakes (400, 404, 413, 422, 429).
Trouble on the way to the model becomes 502 (LiteLLM unreachable or the
provider failed), 503 (the provider said it is unavailable) or 504 (timeout),
always in the OpenAI envelope, with the upstream message kept.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson

from wrapper.errors import GatewayError

# Headers of LiteLLM's answer worth passing to the client; the rest (provider URLs,
# key spend, internal ids) stays inside.
_PASSED_HEADERS = (
    "x-litellm-response-cost",
    "x-litellm-attempted-retries",
    "x-litellm-attempted-fallbacks",
    "x-litellm-model-group",
)
_CLIENT_STATUSES = {400, 404, 413, 422, 429}


@dataclass
class UpstreamReply:
    status: int
    body: bytes
    headers: dict[str, str]
    waited_seconds: float  # time spent waiting on LiteLLM, which is not wrapper overhead


class LiteLLMClient:
    def __init__(self, base_url: str, master_key: str | None, timeout_seconds: float) -> None:
        headers = {"content-type": "application/json"}
        if master_key:
            headers["authorization"] = f"Bearer {master_key}"
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=60),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, path: str, body: bytes, request_id: str) -> UpstreamReply:
        started = time.perf_counter()
        try:
            response = await self._client.post(path, content=body, headers={"x-request-id": request_id})
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        waited = time.perf_counter() - started
        if response.status_code >= 400:
            raise upstream_error(response.status_code, response.content, response.headers)
        return UpstreamReply(response.status_code, response.content, passed_headers(response.headers), waited)

    async def open_stream(self, path: str, body: bytes, request_id: str) -> tuple[httpx.Response, float]:
        """Send a streaming request; return the open response once LiteLLM has answered with 200."""
        started = time.perf_counter()
        request = self._client.build_request("POST", path, content=body, headers={"x-request-id": request_id})
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise upstream_error(response.status_code, content, response.headers)
        return response, time.perf_counter() - started

    async def get(self, path: str) -> httpx.Response:
        try:
            return await self._client.get(path, timeout=5.0)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None


async def raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise _transport_error(exc) from None


def passed_headers(headers: httpx.Headers) -> dict[str, str]:
    passed = {name: headers[name] for name in _PASSED_HEADERS if name in headers}
    retry_after = headers.get("retry-after") or headers.get("llm_provider-retry-after")
    if retry_after:
        passed["retry-after"] = retry_after
    return passed


def upstream_error(status: int, content: bytes, headers: httpx.Headers) -> GatewayError:
    message, kind = _upstream_message(content)
    extra = passed_headers(headers)
    if status in _CLIENT_STATUSES:
        return GatewayError(status, message, type=kind, code=str(status), headers=extra)
    if status in (401, 403):
        # LiteLLM refusing the wrapper, or a provider refusing the platform's key: not the client's fault.
        return GatewayError(502, "The gateway could not authenticate upstream.", code="upstream_auth_failed")
    if status in (408, 504):
        return GatewayError(504, message, code="upstream_timeout", headers=extra)
    if status == 503:
        return GatewayError(503, message, code="upstream_unavailable", headers=extra)
    return GatewayError(502, message, code="upstream_error", headers=extra)


def _upstream_message(content: bytes) -> tuple[str, str | None]:
    try:
        error = orjson.loads(content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"], error.get("type")
    return "The model provider returned an error.", None


def _transport_error(exc: httpx.HTTPError) -> GatewayError:
    if isinstance(exc, httpx.TimeoutException):
        return GatewayError(504, "The model did not answer in time.", code="upstream_timeout")
    if isinstance(exc, httpx.ConnectError):
        return GatewayError(502, "The model router (LiteLLM) is unreachable.", code="upstream_unreachable")
    return GatewayError(502, "The connection to the model router broke.", code="upstream_error")
