"""Step 6 of the flow: the cache layers, after the model is resolved and PII redacted, before LiteLLM.

A hit in an enforce layer is the answer: it is served by the forward step as LiteLLM's would be (through every
response half: PII restored for this request, guardrails; a streamed request gets the stored stream's events), at
cost 0, its saving in the record. A hit in a shadow layer is only recorded. A miss leaves a response half that
stores the answer under every layer's key once it has ended well: only a 200, a stream that reached its end
without an error, no tool calls (unless the endpoint allows them), no content filter, not larger than
`max_answer_bytes`. What is stored is the answer as the provider gave it (PII placeholders, not values).

Cacheable: chat, legacy completions (both layers) and embeddings (exact); a request with `temperature` 0, or none
when the endpoint says `when_temperature_absent`. A client's `Cache-Control: no-cache` skips the lookup, `no-store`
the storing; it can never name a key or a namespace (the `cache` field is refused with the other LiteLLM controls).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson

from wrapper.cache import keys
from wrapper.cache.store import entry_key
from wrapper.config.models import CachePolicy, Mode
from wrapper.context import RequestContext
from wrapper.pipeline import StepResult
from wrapper.upstream.sse import event_data

logger = logging.getLogger("wrapper.cache")

CACHEABLE_ROUTES = frozenset({"chat", "completions", "embeddings"})
_storing: set[asyncio.Task] = set()  # stores in flight (a task needs a reference until it ends)


@dataclass
class Hit:
    layer: str
    entry: dict  # kind ("whole" | "events"), body (the answer, or its events), model, cost (what it cost then)


class CacheStep:
    name = "cache"

    def __init__(self, store, secret: bytes) -> None:
        self.store = store  # LocalCache or RedisCache
        self.secret = secret

    def mode(self, ctx: RequestContext) -> Mode:
        # Each layer has its own mode, applied here: a shadow layer is looked up and stored, its hit not served.
        return Mode.enforce if ctx.policy.cache.on else Mode.off

    async def request(self, ctx: RequestContext) -> StepResult:
        policy = ctx.policy.cache
        why_not = _not_cacheable(ctx, policy)
        if why_not is not None:
            return StepResult("skip", {"reason": why_not})
        layers = self._keys(ctx, policy)
        control = ctx.cache_control
        shadow_hit = None
        if "no-cache" not in control:
            found = await asyncio.gather(*(self.store.get(key) for _, _, key in layers))
            for (layer, mode, _), raw in zip(layers, found, strict=True):
                entry = _entry(raw)
                if entry is None:
                    continue
                if mode is Mode.enforce:
                    ctx.cached = Hit(layer, entry)
                    ctx.outcome.served_from_cache(layer, entry.get("model"))
                    return StepResult("hit", {"layer": layer, "saved_usd": entry.get("cost") or 0.0})
                shadow_hit = shadow_hit or layer
        half = None if "no-store" in control else StoringHalf(self.store, ctx, [key for _, _, key in layers], policy)
        return StepResult("would_hit" if shadow_hit else "miss", {"layer": shadow_hit} if shadow_hit else {},
                          half=half)

    def _keys(self, ctx: RequestContext, policy: CachePolicy) -> list[tuple[str, Mode, str]]:
        body, tenant = ctx.body, ctx.principal.tenant
        scope = keys.scope_of(tenant, ctx.principal.endpoint, ctx.route.name, ctx.model_group, body.get("stream"))
        found = []
        if policy.exact is not Mode.off:
            digest = keys.key(self.secret, "exact", scope, keys.parameters(body, None))
            found.append(("exact", policy.exact, entry_key(tenant, "exact", digest)))
        texts = keys.texts_of(ctx.route.name, body)
        if policy.template is not Mode.off and texts is not None:
            field, messages = texts
            shaped, values = keys.template_parts(messages)
            digest = keys.key(self.secret, "template", scope, keys.parameters(body, field), shaped, values)
            found.append(("template", policy.template, entry_key(tenant, "template", digest)))
        return found


def _not_cacheable(ctx: RequestContext, policy: CachePolicy) -> str | None:
    if ctx.route.name not in CACHEABLE_ROUTES or ctx.upload is not None:
        return "route"
    if "no-cache" in ctx.cache_control and "no-store" in ctx.cache_control:
        return "client"
    if ctx.route.name != "embeddings":
        temperature = ctx.body.get("temperature")
        if temperature is None and not policy.when_temperature_absent:
            return "temperature"
        if temperature not in (None, 0):
            return "temperature"
    return None


def _entry(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) and entry.get("kind") in ("whole", "events") else None


class StoringHalf:
    """Sees the answer first (the last step's half), changes nothing, and stores it once it has ended well."""

    def __init__(self, store, ctx: RequestContext, keys_: list[str], policy: CachePolicy) -> None:
        self.store, self.ctx, self.keys, self.policy = store, ctx, keys_, policy
        self.events: list[bytes] | None = []
        self.size = 0

    def answer(self, body: bytes) -> bytes:
        if len(body) <= self.policy.max_answer_bytes:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return body
            if isinstance(parsed, dict) and self._keepable([parsed]):
                self._save({"kind": "whole", "body": body.decode(), "cost": self.ctx.outcome.cost})
        return body

    def event(self, event: bytes) -> bytes:
        if self.events is not None and not event.startswith(b"data: [DONE]"):
            self.size += len(event)
            if self.size > self.policy.max_answer_bytes:
                self.events = None  # too large to keep
            else:
                self.events.append(event)
        return event

    def end(self) -> bytes:
        summary = self.ctx.outcome.stream
        if self.events and summary is not None and summary.error is None and not summary.arguments:
            payloads = [parsed[1] for parsed in map(event_data, self.events) if parsed is not None]
            if self._keepable(payloads):
                cost = (summary.usage or {}).get("cost")
                self._save({"kind": "events", "body": [e.decode() for e in self.events], "cost": cost})
        self.events = None  # stored once
        return b""

    def _keepable(self, payloads: list[dict]) -> bool:
        """No choice ended by a content filter, and none calls a tool unless the endpoint allows it."""
        for payload in payloads:
            for choice in payload.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("finish_reason") == "content_filter":
                    return False
                said = choice.get("message") or choice.get("delta") or {}
                if not self.policy.tool_calls and isinstance(said, dict) and (said.get("tool_calls")
                                                                              or said.get("function_call")):
                    return False
        return True

    def _save(self, entry: dict) -> None:
        outcome = self.ctx.outcome
        value = orjson.dumps({**entry, "model": outcome.model_served, "stored_at": int(time.time())})
        for key in self.keys:
            task = asyncio.get_running_loop().create_task(self.store.put(key, value, self.policy.ttl_seconds))
            _storing.add(task)
            task.add_done_callback(_storing.discard)
