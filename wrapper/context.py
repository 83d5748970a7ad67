"""What one request carries from step to step: who asked, what was asked, what came back.

The request id middleware creates the context when the request arrives; each
step of the flow fills in its part; the response path reads it to write the
audit record.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import orjson

from wrapper.auth.principal import Principal
from wrapper.config.models import EndpointPolicies, Tenant
from wrapper.upstream.sse import event_data

if TYPE_CHECKING:
    from wrapper.routes import Route
    from wrapper.upload import Upload


class ResponseHalf(Protocol):
    """What a step does to the answer, for one request: a whole answer, each streamed event, the stream's end."""

    def answer(self, body: bytes) -> bytes: ...

    def event(self, event: bytes) -> bytes: ...

    def end(self) -> bytes: ...  # before the stream's end: whatever it still holds back, as an event (b"" if none)


@dataclass
class StreamSummary:
    """What the stream said, for the response path (cost, audit, metrics), read through the route's adapter."""

    route: Route
    started_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    events: int = 0
    usage: dict | None = None
    model: str | None = None
    error: dict | None = None
    done: bool = False
    text: list[str] = field(default_factory=list)  # what the model said (audit content `full`, usage counts)
    arguments: list[str] = field(default_factory=list)  # what it passed to tools: produced tokens too

    def observe(self, event: bytes) -> None:
        self.events += 1
        if event.startswith(b"data: [DONE]"):
            self.done = True
            return
        parsed = event_data(event)
        if parsed is None:
            return
        payload, route = parsed[1], self.route
        if self.first_token_at is None and route.started(payload):
            self.first_token_at = time.perf_counter()
        model = route.served_model(payload)
        self.model = model if isinstance(model, str) else self.model
        if usage := route.usage(payload):  # in one event (OpenAI's), or in parts (Anthropic's: input, then output)
            self.usage = {**(self.usage or {}), **{key: value for key, value in usage.items() if value is not None}}
        self.error = route.stream_error(payload) or self.error
        self.done = self.done or route.finished(payload)
        for piece in route.stream_texts(payload):
            text = piece.container.get(piece.field)
            if isinstance(text, str) and text and piece.kind in ("content", "arguments"):
                (self.text if piece.kind == "content" else self.arguments).append(text)

    @property
    def produced(self) -> str:
        """Everything the model generated so far, as text: what a count of its output tokens reads."""
        return "".join(self.text) + "".join(self.arguments)

    @property
    def time_to_first_token_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started_at) * 1000


@dataclass
class Outcome:
    """What the answer said, noted on the response path (audit, cost, metrics)."""

    model_served: str | None = None
    tier: str | None = None  # LiteLLM's model group: the name the platform team gave the route
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    usage_estimated: bool = False  # counted by the gateway (a stream cut short), not reported by the provider
    cache_hit: bool = False
    attempts: int = 1  # calls LiteLLM made for it: the first, its retries and its fallbacks
    hedge_cost: float = 0.0  # what a hedge's losing attempt cost (wrapper/upstream/hedge.py), added to `cost`
    # The client left after the request was forwarded and before its answer began: LiteLLM 1.108.5 lets the
    # provider finish a whole answer's call (and a stream's up to its first chunk), so it may still be billed.
    abandoned: bool = False
    # A stream cut before its end whose concurrency slots LiteLLM gives back once the provider's stream is closed
    # (custom_callbacks/slot_release.py): the wrapper keeps them taken for a grace period only.
    slots_handed_over: bool = False
    cached_layer: str | None = None  # answered by the gateway's cache (wrapper/cache): nothing was spent
    stream: StreamSummary | None = None  # set for streamed answers, filled as events pass
    provider_answer: bytes | None = None  # a whole answer as the provider gave it, when steps changed what was sent

    def served_from_cache(self, layer: str, model: object) -> None:
        """A cache hit: no tokens, no cost (the stored answer's usage is what it cost when it was stored)."""
        self.cached_layer, self.cache_hit = layer, True
        self.tokens_in, self.tokens_out, self.cost = 0, 0, 0.0
        self.model_served = model if isinstance(model, str) else None

    def note_usage(self, usage: object) -> None:
        if isinstance(usage, dict) and self.cached_layer is None:
            self.tokens_in = _count(usage.get("prompt_tokens"))
            self.tokens_out = _count(usage.get("completion_tokens"))
            # LiteLLM adds the cost to a stream's usage (include_cost_in_streaming_usage).
            cost = usage.get("cost")
            if isinstance(cost, int | float) and not isinstance(cost, bool):
                self.cost = float(cost)
            self.usage_estimated = usage.get("estimated") is True

    def with_stream_usage(self) -> Outcome:
        """This outcome with a stream's usage (its last chunk) read into it and a hedge's losing attempt added to
        its cost, as a copy; itself when there is neither."""
        streamed = self.stream is not None and bool(self.stream.usage)
        if not streamed and not self.hedge_cost:
            return self
        final = dataclasses.replace(self)
        if streamed:
            final.note_usage(self.stream.usage)
        if self.hedge_cost:
            final.cost = (final.cost or 0.0) + self.hedge_cost
        return final

    def note_headers(self, headers) -> None:
        """LiteLLM's answer headers, all of them (some are not passed on to the client, the cache key for one)."""
        self.tier = headers.get("x-litellm-model-group") or self.tier
        self.cache_hit = bool(headers.get("x-litellm-cache-key"))
        self.attempts = 1 + _count_text(headers.get("x-litellm-attempted-retries")) + _count_text(
            headers.get("x-litellm-attempted-fallbacks"))
        try:
            self.cost = float(headers["x-litellm-response-cost"])
        except (KeyError, ValueError):
            pass


@dataclass
class RequestContext:
    request_id: str
    started_at: float = field(default_factory=time.perf_counter)  # when the request reached the wrapper
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    client_addr: str | None = None
    principal: Principal | None = None  # set by authentication, read by every later step
    tenant: Tenant | None = None  # the principal's tenant, from the same config snapshot
    policy: EndpointPolicies | None = None  # the tenant's policies as they apply to the principal's endpoint
    route: Route | None = None  # the API shape of the request (chat, embeddings ...): how steps read it
    body: dict | None = None  # the request as checked (after the steps changed it): the client's fields only
    model_group: str | None = None  # the model LiteLLM is asked for: the request's, aliases resolved (step 5)
    controls: dict = field(default_factory=dict)  # LiteLLM's control fields the gateway sets (retries, fallbacks)
    upload: Upload | None = None  # the file of a multipart upload (transcriptions), beside the body
    upstream_headers: dict[str, str] = field(default_factory=dict)  # the route's API headers passed to LiteLLM
    halves: list[ResponseHalf] = field(default_factory=list)  # the steps' response halves, in request order
    decisions: list[dict] = field(default_factory=list)  # what each step did, or in shadow would have done
    outcome: Outcome = field(default_factory=Outcome)
    guardrails: list[dict] = field(default_factory=list)  # decisions of later issues' guardrails
    undecided: list = field(default_factory=list)  # started steps whose decisions travel still (wrapper.pipeline)
    held: object | None = None  # what admission reserved (wrapper.limits.step.Held), until the request ends
    slot_release: str | None = None  # a stream's concurrency slots, for LiteLLM to give back if it is cut (sealed)
    response_headers: dict[str, str] = field(default_factory=dict)  # steps' headers for the answer (rate limits)
    cache_control: str = ""  # the client's Cache-Control header: no-cache, no-store (wrapper/cache)
    cached: object | None = None  # a cache hit (wrapper.cache.step.Hit): the answer, instead of LiteLLM's
    pii: dict = field(default_factory=dict)  # action, and entity type -> count found; never values
    # What the output guardrails mask, applied to an answer's text before the audit record keeps it (content
    # `full`): a secret the model wrote is not in the log either
    record_mask: Callable[[str], str] | None = None
    # The forwarded body's hash, once computed: a stream's provisional record (wrapper/audit/journal.py) and its
    # final one both carry it, and a large prompt costs ~0.3 ms per 100 KB to hash
    request_sha256: str | None = None

    def overhead_ms(self, waited_seconds: float) -> str:
        return f"{(time.perf_counter() - self.started_at - waited_seconds) * 1000:.3f}"


CONTEXT_KEY = "gateway.ctx"  # where the ASGI scope holds the request's context


def request_context(scope) -> RequestContext:
    return scope[CONTEXT_KEY]


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count_text(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0
