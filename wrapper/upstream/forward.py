"""Steps 7 and 8 of the flow: send the checked request to LiteLLM and hand its answer back through the steps.

The metadata the wrapper vouches for is sealed here (see custom_callbacks.seal).
The answer passes the steps' response halves (in the reverse order of their
request halves) before it reaches the client: a whole answer once, a stream
event by event as each arrives, and what a half still holds just before the
stream's end. The wrapper's own time is measured as the total minus the wait
on LiteLLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import orjson
from starlette.responses import Response, StreamingResponse

from custom_callbacks.seal import CLIENT_METADATA_KEY, STORED_OBJECT, WARM_UP_TENANT, sealed_metadata
from wrapper.cache.replay import replayed
from wrapper.context import RequestContext, ResponseHalf, StreamSummary
from wrapper.errors import CLIENT_CLOSED, GatewayError
from wrapper.observability.tracing import step
from wrapper.pipeline import decided
from wrapper.upstream import hedge
from wrapper.upstream.client import LiteLLMClient, UpstreamStream, passed_headers
from wrapper.upstream.hedge import HedgeBudget
from wrapper.upstream.sse import EventStreamResponse, split_events
from wrapper.upstream.stream_usage import StreamUsageCounter
from wrapper.upload import multipart_body

_DONE = b"data: [DONE]"
WARM_UP_SECONDS = 30


class Upstream:
    """LiteLLM, as the pipeline's last step sees it: one forward per request."""

    def __init__(self, litellm: LiteLLMClient, secret: bytes, usage_counter: StreamUsageCounter,
                 hedge_budget: HedgeBudget | None = None) -> None:
        self.litellm = litellm
        self.secret = secret
        self.usage_counter = usage_counter  # counts what a stream cut short had produced
        self.hedge_budget = hedge_budget or HedgeBudget(5.0)
        self._warm_up: asyncio.Future | None = None

    async def warm_up(self, model: str | None) -> None:
        """Once per process, before it is ready: LiteLLM's first call pays for its own set-up.

        Measured on 1.108.5: the first call took ~360 ms instead of ~12, and the first stream arrived in one piece
        after ~150 ms. A call sealed for the warm-up tenant walks LiteLLM's whole path up to the guard, which
        stops it there, before any provider (custom_callbacks.guard); a token count loads the tokenizer a
        stream's usage needs. Afterwards the first call took ~47 ms (its provider connection) and the first
        stream flowed as paced. Bounded: a warm-up that fails or hangs is given up, never a reason not to serve.
        """
        if self._warm_up is None:
            self._warm_up = asyncio.ensure_future(self._warm(model))
        await asyncio.shield(self._warm_up)

    async def _warm(self, model: str | None) -> None:
        if model is None:
            return
        prompt = {"model": model, "messages": [{"role": "user", "content": "warm-up"}]}
        identity = {"gateway_request_id": "warm-up", "gateway_tenant_id": WARM_UP_TENANT, "gateway_credential_id": "gateway"}
        call = {**prompt, "metadata": sealed_metadata(self.secret, prompt, identity)}
        for path, body in (("/v1/chat/completions", call), ("/utils/token_counter", prompt)):
            try:
                async with asyncio.timeout(WARM_UP_SECONDS):
                    await self.litellm.post(path, orjson.dumps(body), "warm-up")
            except (GatewayError, TimeoutError):
                pass  # the guard's refusal is the warm-up's expected end; anything else only means a colder start

    async def forward(self, ctx: RequestContext, client_gone: Callable[[], Awaitable[None]]) -> Response:
        # The group asked for, recorded even when it fails; LiteLLM's header, when it answers, names the group that
        # answered (a fallback's).
        ctx.outcome.tier = ctx.model_group
        try:
            return await self._within_deadline(ctx, client_gone)
        except GatewayError as refusal:  # a half may say it in the client's terms (an id it knows, not the provider's)
            for half in ctx.halves:
                refusal = half.refused(refusal) if hasattr(half, "refused") else refusal
            raise refusal from None

    async def _within_deadline(self, ctx: RequestContext, client_gone: Callable[[], Awaitable[None]]) -> Response:
        deadline = ctx.policy.resilience.deadline_seconds
        if deadline is None:
            return await self._forward(ctx, client_gone)
        try:  # until the answer, or a stream's first content (the events after it are not bounded here)
            async with asyncio.timeout(deadline):
                return await self._forward(ctx, client_gone)
        except TimeoutError:
            raise GatewayError(504, f"No answer within the endpoint's deadline of {deadline:g} s (retries, fallbacks "
                               "and hedges included).", type="timeout_error", code="deadline_exceeded") from None

    async def _forward(self, ctx: RequestContext, client_gone: Callable[[], Awaitable[None]]) -> Response:
        # What LiteLLM is sent is built while admission's decision travels (its round trip to Redis), down to the
        # connection it goes on; nothing goes out, and no cached answer is served, before that decision is in
        # (`ready`). Its refusal comes first.
        try:
            hedging = None if ctx.cached is not None or ctx.route.binary_answer else hedge.plan(ctx)
            body = None if ctx.cached is not None or hedging is not None else sealed_body(
                ctx, self.secret, ctx.slot_release if ctx.body.get("stream") and not ctx.route.binary_answer else None)
        except BaseException:
            await decided(ctx)
            raise
        ready = lambda: decided(ctx)  # noqa: E731 - awaited where the first byte would go out
        if body is None or ctx.route.binary_answer:
            await ready()
        if ctx.cached is not None:
            return self._cached(ctx)
        self.hedge_budget.note_request()
        if ctx.route.binary_answer:
            return await self._binary(ctx, body)
        if ctx.body.get("stream"):
            return await self._stream(ctx, hedging, body, ready)
        with step("litellm"):
            try:
                if hedging is None:
                    reply = await _unless_client_leaves(self.litellm.post(
                        ctx.route.path, body, ctx.request_id, ctx.upstream_headers, ready), client_gone)
                else:
                    winner, losers = await _unless_client_leaves(
                        hedge.race(ctx, self.hedge_budget, *hedging, self._whole_answer), client_gone)
                    reply = winner.reply
                    await self._cost_of_losers(ctx, losers)
            except GatewayError as exc:
                ctx.outcome.abandoned = exc.status == CLIENT_CLOSED
                raise
        _note_reply(ctx, reply.body, reply.headers)
        outcome = ctx.outcome
        if outcome.cost is None and outcome.tokens_in is not None:
            # LiteLLM 1.108.5 leaves the cost header out of some Responses and Messages answers (a race with its
            # own cost callback, seen in the stack tests, not on every call): priced here from the same prices
            outcome.cost = await self.usage_counter.cost_of(outcome.tokens_in, outcome.tokens_out or 0,
                                                            reply.headers.get("x-litellm-model-id"))
        answer = reply.body
        if reply.status == 200 and ctx.halves:
            ctx.outcome.provider_answer = reply.body  # what the audit may keep: the answer as the provider gave it
            for half in reversed(ctx.halves):
                answer = half.answer(answer)
        headers = _answer_headers(ctx, reply.headers, reply.waited_seconds)
        return Response(answer, status_code=reply.status, headers=headers, media_type="application/json")

    def _cached(self, ctx: RequestContext) -> Response:
        """A cache hit (wrapper/cache), served as LiteLLM's answer is: through every response half, streamed when
        it was asked for (it was stored from a stream then: the key says so)."""
        hit = ctx.cached
        headers = {**_answer_headers(ctx, {}, 0.0), "x-gateway-cache": "hit", "x-gateway-cache-layer": hit.layer}
        if hit.entry["kind"] == "whole":
            answer = hit.entry["body"].encode()
            for half in reversed(ctx.halves):
                answer = half.answer(answer)
            return Response(answer, status_code=200, headers=headers, media_type="application/json")
        stream = replayed(hit.entry["body"])
        ctx.outcome.stream = StreamSummary(ctx.route, started_at=ctx.started_at)
        return EventStreamResponse(self._events(ctx, stream, stream.chunks, None), headers)

    async def _binary(self, ctx: RequestContext, body: bytes) -> Response:
        """An answer that is not JSON (audio): its bytes flow through as LiteLLM sends them, its content type kept.

        No response half reads it (there is no text in it); closing early drops the connection to LiteLLM."""
        stream = await self.litellm.open_stream(ctx.route.path, body, ctx.request_id, ctx.upstream_headers)
        ctx.outcome.note_headers(stream.headers)
        if ctx.outcome.cost is None:  # speech: priced per character of what is said
            ctx.outcome.cost = await self.usage_counter.speech_cost(ctx.route.prompt(ctx.body)["prompt"],
                                                                    stream.headers.get("x-litellm-model-id"))
        return StreamingResponse(stream.chunks, headers=_answer_headers(ctx, stream.headers, stream.waited_seconds),
                                 media_type=stream.headers.get("content-type", "application/octet-stream"))

    async def _stream(self, ctx: RequestContext, hedging: tuple[float, str] | None, body: bytes | None,
                      ready: Callable[[], Awaitable[None]]) -> Response:
        if hedging is None:  # if the stream is cut, LiteLLM gives its slots back once the provider's is closed (the
            # body seals ctx.slot_release)
            stream = await self.litellm.open_stream(ctx.route.path, body, ctx.request_id, ctx.upstream_headers, ready)
            events, losers = split_events(stream.chunks), []
        else:  # the first content of the request or of its hedge, whichever comes first (the wrapper releases:
            # a loser's slot release would free the winner's)
            winner, losers = await hedge.race(ctx, self.hedge_budget, *hedging, self._first_content)
            stream, events = winner.stream, _after(winner.early, winner.events)
        ctx.outcome.note_headers(stream.headers)
        ctx.outcome.stream = StreamSummary(ctx.route, started_at=ctx.started_at)
        headers = _answer_headers(ctx, stream.headers, stream.waited_seconds)
        # What the loser cost is counted meanwhile: the record is written as the stream's end passes
        costing = asyncio.ensure_future(self._cost_of_losers(ctx, losers)) if losers else None
        handover = hedging is None and ctx.slot_release is not None
        return EventStreamResponse(self._events(ctx, stream, events, costing, handover), headers)

    def _whole_answer(self, ctx: RequestContext, attempt: hedge.Attempt) -> Awaitable[hedge.Attempt]:
        return hedge.whole_answer(attempt, self.litellm.post(ctx.route.path, sealed_body(ctx, self.secret),
                                                             ctx.request_id, ctx.upstream_headers))

    def _first_content(self, ctx: RequestContext, attempt: hedge.Attempt) -> Awaitable[hedge.Attempt]:
        opened = self.litellm.open_stream(ctx.route.path, sealed_body(ctx, self.secret), ctx.request_id,
                                          ctx.upstream_headers)
        return hedge.first_content(ctx, attempt, opened)

    async def _cost_of_losers(self, ctx: RequestContext, losers: list[hedge.Attempt]) -> None:
        """What a hedge's losing attempt cost: its prompt and whatever it produced, at its group's prices."""
        for attempt in losers:
            produced = StreamSummary(ctx.route)
            for event in attempt.early:
                produced.observe(event)
            deployment = (attempt.stream.headers if attempt.stream else {}).get("x-litellm-model-id")
            usage = await self.usage_counter.count(ctx.route.prompt(ctx.body), produced.produced, attempt.group,
                                                   deployment, ctx.request_id)
            if usage is None:
                continue
            cost = usage.get("cost")
            if cost is None:  # LiteLLM had not said which deployment: the group's prices (its dearest's)
                prices = await self.usage_counter.group_prices(attempt.group)
                cost = usage["prompt_tokens"] * prices[0] + usage["completion_tokens"] * prices[1] if prices else 0.0
            ctx.outcome.hedge_cost += cost

    async def _events(self, ctx: RequestContext, stream: UpstreamStream, events: AsyncIterator[bytes],
                      costing: asyncio.Future | None, handover: bool = False) -> AsyncIterator[bytes]:
        summary = ctx.outcome.stream
        asked_for_usage = bool((ctx.body.get("stream_options") or {}).get("include_usage"))
        halves = list(reversed(ctx.halves))
        try:
            async for event in events:
                summary.observe(event)  # before it is sent: the response path reads the summary at the end
                if costing is not None and (summary.done or event.startswith(_DONE)):
                    await costing  # a hedge's loser, in the cost before the record is written
                    costing = None
                if summary.done and summary.usage is not None and "cost" not in summary.usage:
                    # usage without LiteLLM's cost (Anthropic's events): priced before the end event goes out
                    summary.usage["cost"] = await self.usage_counter.cost_of(
                        summary.usage.get("prompt_tokens"), summary.usage.get("completion_tokens"),
                        stream.headers.get("x-litellm-model-id"))
                if not asked_for_usage and _is_usage_only(event):
                    continue  # the gateway asked for it, for the record; the client did not
                if event.startswith(_DONE):
                    for held in _still_held(halves):
                        yield held
                    _raise_if_ended(halves)
                    if not ctx.route.ends_with_done:
                        continue  # LiteLLM's addition to a protocol with its own end event: not the client's
                if sent := _through(halves, event):
                    yield sent
                _raise_if_ended(halves)
            for held in _still_held(halves):  # a protocol without [DONE] (Anthropic's): before the stream's end
                yield held
            _raise_if_ended(halves)
        except GatewayError as exc:
            # The status line is gone already; the client learns of the break in-band, in the route's protocol.
            summary.error = exc.envelope()["error"]
            yield ctx.route.error_event(exc)
        finally:
            stream.close()  # no-op after a complete stream
            # the client left before the first token (the pump cancelled): the provider's call may go on until then
            cut = not summary.done and summary.error is None
            ctx.outcome.abandoned = cut and summary.first_token_at is None
            ctx.outcome.slots_handed_over = cut and handover  # LiteLLM gives them back once the provider's is closed
            if costing is not None:
                await costing
            if summary.usage is None and summary.first_token_at is not None and ctx.outcome.cached_layer is None:
                # Cut short (client gone, stream broken): the provider billed what it produced; count it.
                # The record waits for this; the client, gone or given its error already, does not.
                summary.usage = await self.usage_counter.count(
                    ctx.route.prompt(ctx.body), summary.produced, ctx.outcome.tier or ctx.model_group,
                    stream.headers.get("x-litellm-model-id"), ctx.request_id)


def sealed_body(ctx: RequestContext, secret: bytes, slot_release: str | None = None) -> bytes:
    """The body LiteLLM receives: the client's checked fields, the model the route resolved, and sealed metadata.

    Every field here passed the route's allow-list (wrapper.routes); the gateway adds only what it owns: the
    tenant context, from the authenticated principal, and the usage a stream must report for the record.
    The client's own metadata travels nested under CLIENT_METADATA_KEY, so none of its keys is read by LiteLLM
    as one of its own (tags, trace ids, budgets ...).
    """
    principal, body, route = ctx.principal, ctx.body, ctx.route
    own_metadata = route.metadata_field == "metadata"  # else the API's `metadata` is its own, passed as sent
    upstream = {key: value for key, value in body.items() if key != "metadata" or not own_metadata}
    if ctx.model_group is not None:
        upstream["model"] = ctx.model_group
        if ctx.upload is None:  # the gateway's own: retries, fallbacks, timeout (sealed with the rest)
            upstream.update(ctx.controls)
    if body.get("stream") and route.stream_usage_option:  # usage (and cost) come in a last chunk only when asked
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
    if slot_release is not None:
        identity["gateway_release"] = slot_release
    tier = next((d for d in ctx.decisions if d.get("step") == "tier" and d.get("mode") == "enforce"), None)
    if tier is not None:  # model: auto's decision, for the trace (the record has it already)
        identity["tags"].append(f"route:{tier['decision']}")
        identity["gateway_route"] = f"{tier['decision']} score={tier['score']} ({tier['reason']})"
    metadata = sealed_metadata(secret, upstream if ctx.model_group is not None else {**upstream, "model": STORED_OBJECT},
                               identity)
    if body.get("metadata") and own_metadata:
        metadata[CLIENT_METADATA_KEY] = body["metadata"]
    upstream[route.metadata_field] = metadata
    if ctx.upload is not None:
        body, ctx.upstream_headers["content-type"] = multipart_body(upstream, ctx.upload)
        return body
    return orjson.dumps(upstream)


def _answer_headers(ctx: RequestContext, upstream: dict[str, str], waited_seconds: float) -> dict[str, str]:
    """LiteLLM's headers the client may see, the steps' own (rate limits), and the wrapper's own time."""
    return {**passed_headers(upstream), **ctx.response_headers, "x-gateway-overhead-ms": ctx.overhead_ms(waited_seconds)}


def _still_held(halves: list[ResponseHalf]) -> Iterator[bytes]:
    """What each half still holds (b"" once it has given it), through the halves after it."""
    for index, half in enumerate(halves):
        if held := half.end():
            yield _through(halves[index + 1:], held)


async def _after(early: list[bytes], events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The events a hedge race read already, then the rest of the stream."""
    for event in early:
        yield event
    async for event in events:
        yield event


def _raise_if_ended(halves: list[ResponseHalf]) -> None:
    """A half that ended the answer (an output guardrail's block) says why: the stream ends with that error."""
    for half in halves:
        if (ended := getattr(half, "ended", None)) is not None:
            raise ended


def _through(halves: list[ResponseHalf], event: bytes) -> bytes:
    for half in halves:
        event = half.event(event)
    return event


async def _unless_client_leaves(call: Awaitable, client_gone: Callable[[], Awaitable[None]]):
    """Await the upstream call, but drop it the moment the client hangs up: no answer nobody reads.

    The call runs in the request's own task and one watcher task cancels it when the client leaves
    (a second task and asyncio.wait cost ~30 µs per request). Cancelling closes the connection to
    LiteLLM, which stops the provider call.
    """
    request_task = asyncio.current_task()
    left = False

    async def watch() -> None:
        nonlocal left
        await client_gone()
        left = True
        request_task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await call
    except asyncio.CancelledError:
        if not left:
            raise  # cancelled from outside (shutdown): not the client's doing
        request_task.uncancel()
        raise GatewayError(CLIENT_CLOSED, "The client closed the connection.", type="client_closed_request",
                           code="client_cancelled") from None
    finally:
        watcher.cancel()


def _note_reply(ctx: RequestContext, content: bytes, headers: dict[str, str]) -> None:
    ctx.outcome.note_headers(headers)
    try:
        reply = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    if isinstance(reply, dict):
        model = ctx.route.served_model(reply)
        ctx.outcome.model_served = model if isinstance(model, str) else None
        ctx.outcome.note_usage(ctx.route.usage(reply))


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
