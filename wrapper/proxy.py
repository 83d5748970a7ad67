"""Forward a checked request to LiteLLM and hand its answer back.

The metadata the wrapper vouches for is sealed here (see custom_callbacks.seal),
and the wrapper's own time is measured as the total minus the wait on LiteLLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from starlette.responses import Response

from custom_callbacks.seal import CLIENT_METADATA_KEY, sealed_metadata
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.pii import Restorer
from wrapper.stream_usage import StreamUsageCounter
from wrapper.streaming import EventStreamResponse, StreamSummary, split_events
from wrapper.tracing import step
from wrapper.upstream import LiteLLMClient, passed_headers, raw_chunks

# nginx's convention for "the client closed the connection before the answer": recorded, never seen.
CLIENT_CLOSED = 499


def sealed_body(body: dict, ctx: RequestContext, secret: bytes) -> bytes:
    """The body LiteLLM receives: the client's checked fields, the model the route resolved, and sealed metadata.

    Every field here passed the route's allow-list (wrapper.request_fields); the gateway adds only what it owns:
    the tenant context, from the authenticated principal, and the usage a stream must report for the record.
    The client's own metadata travels nested under CLIENT_METADATA_KEY, so none of its keys is read by LiteLLM
    as one of its own (tags, trace ids, budgets ...).
    """
    principal = ctx.principal
    upstream = {key: value for key, value in body.items() if key != "metadata"}
    upstream["model"] = ctx.model_group
    if body.get("stream"):  # usage (and LiteLLM's cost) arrive in a last chunk only when asked for
        upstream["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    user = principal.user or body.get("user")
    if user:
        upstream["user"] = user
    identity = {
        "gateway_request_id": ctx.request_id,
        "gateway_tenant_id": principal.tenant,
        "gateway_user_id": principal.user,
        "gateway_endpoint": principal.endpoint,
        "gateway_credential_id": principal.credential_id,
        "tags": [f"tenant:{principal.tenant}"] + ([f"endpoint:{principal.endpoint}"] if principal.endpoint else []),
    }
    metadata = sealed_metadata(secret, upstream, identity)
    if body.get("metadata"):
        metadata[CLIENT_METADATA_KEY] = body["metadata"]
    upstream["metadata"] = metadata
    return orjson.dumps(upstream)


async def forward(
    litellm: LiteLLMClient, path: str, body: dict, ctx: RequestContext, secret: bytes,
    client_gone: Callable[[], Awaitable[None]], usage_counter: StreamUsageCounter, restorer: Restorer | None = None,
) -> Response:
    """`restorer` puts pseudonymised values back into the answer (the provider only ever saw placeholders);
    `usage_counter` counts what a stream cut short had produced."""
    upstream_body = sealed_body(body, ctx, secret)
    if body.get("stream"):
        asked_for_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await _forward_stream(litellm, path, upstream_body, ctx, restorer, asked_for_usage, usage_counter)
    with step("litellm"):
        reply = await _unless_client_leaves(litellm.post(path, upstream_body, ctx.request_id), client_gone)
    _note_reply(ctx, reply.body, reply.headers)
    answer = reply.body
    if restorer is not None and reply.status == 200:
        ctx.outcome.redacted_answer = reply.body  # what the audit may keep: the answer with placeholders
        answer = restorer.answer(reply.body)
    headers = {**reply.headers, "x-gateway-overhead-ms": ctx.overhead_ms(reply.waited_seconds)}
    return Response(answer, status_code=reply.status, headers=headers, media_type="application/json")


async def _unless_client_leaves(call: Awaitable, client_gone: Callable[[], Awaitable[None]]):
    """Await the upstream call, but drop it the moment the client hangs up: no answer nobody reads."""
    answer, watcher = asyncio.ensure_future(call), asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({answer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not answer.done():
            answer.cancel()  # closes the connection to LiteLLM, which stops the provider call
            await asyncio.gather(answer, return_exceptions=True)
    if answer.cancelled():
        raise GatewayError(CLIENT_CLOSED, "The client closed the connection.", type="client_closed_request",
                           code="client_cancelled")
    return answer.result()


def _note_reply(ctx: RequestContext, content: bytes, headers: dict[str, str]) -> None:
    ctx.outcome.note_headers(headers)
    try:
        reply = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    if isinstance(reply, dict):
        ctx.outcome.model_served = reply.get("model") if isinstance(reply.get("model"), str) else None
        ctx.outcome.note_usage(reply.get("usage"))


async def _forward_stream(litellm: LiteLLMClient, path: str, upstream_body: bytes, ctx: RequestContext,
                          restorer: Restorer | None, asked_for_usage: bool,
                          usage_counter: StreamUsageCounter) -> Response:
    response, waited = await litellm.open_stream(path, upstream_body, ctx.request_id)
    summary = ctx.outcome.stream = StreamSummary(started_at=ctx.started_at)
    deployment_id = response.headers.get("x-litellm-model-id")  # whose prices apply, should the stream be cut
    headers = passed_headers(response.headers)
    ctx.outcome.note_headers(headers)

    restoring = restorer.stream() if restorer is not None else None

    async def events():
        try:
            async for event in split_events(raw_chunks(response)):
                summary.observe(event)  # before it is sent: the response path reads the summary at [DONE]
                if not asked_for_usage and _is_usage_only(event):
                    continue  # the gateway asked for it, for the record; the client did not
                yield restoring.event(event) if restoring is not None else event
        except GatewayError as exc:
            # The status line is gone already; the client learns of the break in-band.
            summary.error = exc.envelope()["error"]
            yield exc.sse_event()
        finally:
            response.close()  # no-op after a complete stream, which raw_chunks already released
            if summary.usage is None and summary.first_token_at is not None:
                # Cut short (client gone, stream broken): the provider billed what it produced; count it.
                # The record waits for this; the client, gone or given its error already, does not.
                summary.usage = await usage_counter.count(
                    ctx.body, summary.produced, ctx.outcome.tier or ctx.model_group, deployment_id, ctx.request_id)

    headers["x-gateway-overhead-ms"] = ctx.overhead_ms(waited)
    return EventStreamResponse(events(), headers)


def _is_usage_only(event: bytes) -> bool:
    """The last chunk of a stream asked to include usage: usage (and cost), and no choice with anything in it.

    OpenAI sends it with no choices; LiteLLM with one whose delta is empty.
    """
    if b'"usage"' not in event:
        return False
    try:
        chunk = orjson.loads(event.split(b"data:", 1)[1])
    except (IndexError, orjson.JSONDecodeError):
        return False
    if not isinstance(chunk, dict) or not chunk.get("usage") or not isinstance(chunk.get("choices"), list):
        return False
    return all(isinstance(c, dict) and not c.get("delta") and c.get("finish_reason") is None for c in chunk["choices"])
