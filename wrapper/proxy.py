"""Forward a checked request to LiteLLM and hand its answer back.

The metadata the wrapper vouches for is sealed here (see custom_callbacks.seal),
and the wrapper's own time is measured as the total minus the wait on LiteLLM.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from starlette.responses import Response

from custom_callbacks.seal import SEAL_KEY, SEALED_KEYS, seal
from wrapper.auth import Principal
from wrapper.gateway_config import Tenant
from wrapper.errors import GatewayError
from wrapper.streaming import EventStreamResponse, StreamSummary, split_events
from wrapper.upstream import LiteLLMClient, passed_headers, raw_chunks


@dataclass
class RequestContext:
    request_id: str
    started_at: float = field(default_factory=time.perf_counter)  # when the request reached the wrapper
    principal: Principal | None = None  # set by authentication, read by every later step
    tenant: Tenant | None = None  # the principal's tenant, from the same config snapshot

    def overhead_ms(self, waited_seconds: float) -> str:
        return f"{(time.perf_counter() - self.started_at - waited_seconds) * 1000:.3f}"


_GATEWAY_OWNED = {*SEALED_KEYS, SEAL_KEY, "tags"}


def sealed_body(body: dict, ctx: RequestContext, secret: bytes) -> bytes:
    """The body LiteLLM receives: the client's, with the tenant context sealed into its metadata.

    The client may send metadata of its own, but never the gateway's fields or tags:
    those are set here from the authenticated principal only.
    """
    principal = ctx.principal
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _GATEWAY_OWNED}
    metadata.update(
        gateway_request_id=ctx.request_id,
        gateway_tenant_id=principal.tenant,
        gateway_user_id=principal.user,
        gateway_endpoint=principal.endpoint,
        gateway_credential_id=principal.credential_id,
        tags=[f"tenant:{principal.tenant}"] + ([f"endpoint:{principal.endpoint}"] if principal.endpoint else []),
    )
    metadata[SEAL_KEY] = seal(secret, metadata)
    upstream = {**body, "metadata": metadata}
    user = principal.user or body.get("user")
    if user:
        upstream["user"] = user
    return orjson.dumps(upstream)


async def forward(litellm: LiteLLMClient, path: str, body: dict, ctx: RequestContext, secret: bytes) -> Response:
    upstream_body = sealed_body(body, ctx, secret)
    if body.get("stream"):
        return await _forward_stream(litellm, path, upstream_body, ctx)
    reply = await litellm.post(path, upstream_body, ctx.request_id)
    headers = {**reply.headers, "x-gateway-overhead-ms": ctx.overhead_ms(reply.waited_seconds)}
    return Response(reply.body, status_code=reply.status, headers=headers, media_type="application/json")


async def _forward_stream(litellm: LiteLLMClient, path: str, upstream_body: bytes, ctx: RequestContext) -> Response:
    response, waited = await litellm.open_stream(path, upstream_body, ctx.request_id)
    summary = StreamSummary()

    async def events():
        try:
            async for event in split_events(raw_chunks(response)):
                summary.observe(event)
                yield event
        except GatewayError as exc:
            # The status line is gone already; the client learns of the break in-band.
            yield exc.sse_event()
        finally:
            response.close()  # no-op after a complete stream, which raw_chunks already released

    headers = {**passed_headers(response.headers), "x-gateway-overhead-ms": ctx.overhead_ms(waited)}
    return EventStreamResponse(events(), headers)
