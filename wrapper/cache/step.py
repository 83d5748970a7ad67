"""Step 6 of the flow: the cache layers, after the model is resolved and PII redacted, before LiteLLM.

A hit in an enforce layer is the answer: it is served by the forward step as LiteLLM's would be (through every
response half: PII restored for this request, guardrails; a streamed request gets the stored stream's events), at
cost 0, its saving in the record. A hit in a shadow layer is only recorded. A miss leaves a response half that
stores the answer under every layer's key once it has ended well: only a 200, a stream that reached its end
without an error, no tool calls (unless the endpoint allows them), no content filter, not larger than
`max_answer_bytes`. What is stored is the answer as the provider gave it (PII placeholders, not values).

The semantic layer (semantic.py) runs when exact and template found nothing to serve: the last user message's
template is embedded (MiniLM, ~10 ms on a thread of its own) and compared with the stored ones of its bucket.

Cacheable: chat, legacy completions (every layer) and embeddings (exact); a request with `temperature` 0, or none
when the endpoint says `when_temperature_absent`. A client's `Cache-Control: no-cache` skips the lookup, `no-store`
the storing; it can never name a key or a namespace (the `cache` field is refused with the other LiteLLM controls).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
import orjson

from wrapper.cache import keys
from wrapper.cache.meaning import differs
from wrapper.cache.semantic import Embedder, LocalIndex, entry_value, nearest, readable
from wrapper.cache.store import entry_key
from wrapper.config.models import CachePolicy, Mode
from wrapper.context import RequestContext
from wrapper.pipeline import StepResult
from wrapper.upstream.sse import event_data

logger = logging.getLogger("wrapper.cache")

CACHEABLE_ROUTES = frozenset({"chat", "completions", "embeddings"})
SEMANTIC_MAX_CHARS = 1_000  # a longer question is left to the exact and template layers
_storing: set[asyncio.Task] = set()  # stores in flight (a task needs a reference until it ends)


@dataclass
class Hit:
    layer: str
    entry: dict  # kind ("whole" | "events"), body (the answer, or its events), model, cost (what it cost then)


@dataclass
class Semantic:
    """The semantic layer's view of a request: its bucket, the text compared and (once embedded) its vector."""

    mode: Mode
    bucket: str
    text: str  # the template, as embedded
    said: str  # the message as written (after PII), for meaning.differs
    vector: np.ndarray | None = None
    kept_apart: str | None = None  # why the nearest question above the threshold was not the same (meaning.py)


class CacheStep:
    name = "cache"

    def __init__(self, store, secret: bytes, index=None, embedder: Embedder | None = None) -> None:
        self.store = store  # LocalCache or RedisCache
        self.secret = secret
        self.index = index if index is not None else LocalIndex()  # the semantic layer's buckets
        self.embedder = embedder or Embedder()

    def mode(self, ctx: RequestContext) -> Mode:
        # Each layer has its own mode, applied here: a shadow layer is looked up and stored, its hit not served.
        return Mode.enforce if ctx.policy.cache.on else Mode.off

    async def request(self, ctx: RequestContext) -> StepResult:
        policy = ctx.policy.cache
        why_not = _not_cacheable(ctx, policy)
        if why_not is not None:
            return StepResult("skip", {"reason": why_not})
        layers = self._keys(ctx, policy)
        shadow_hit = None
        looking = "no-cache" not in ctx.cache_control
        if looking:
            found = await self.store.get_many([key for _, _, key in layers]) if layers else []
            for (layer, mode, _), raw in zip(layers, found, strict=True):
                entry = _entry(raw)
                if entry is None:
                    continue
                if mode is Mode.enforce:
                    return _hit(ctx, layer, entry)
                shadow_hit = shadow_hit or layer
        semantic = self._semantic(ctx, policy)  # only now: an exact or template hit never needs it
        if looking and semantic is not None:
            match = await self._nearest(ctx, semantic, policy.semantic_threshold)
            if match is not None:
                entry, similarity = match
                if semantic.mode is Mode.enforce:
                    return _hit(ctx, "semantic", entry, similarity)
                shadow_hit = shadow_hit or "semantic"
        half = None
        if "no-store" not in ctx.cache_control:
            half = StoringHalf(self, ctx, [key for _, _, key in layers], policy, semantic)
        detail = {"layer": shadow_hit} if shadow_hit else {}
        if semantic is not None and semantic.kept_apart:
            detail["kept_apart"] = semantic.kept_apart
        return StepResult("would_hit" if shadow_hit else "miss", detail, half=half)

    def _keys(self, ctx: RequestContext, policy: CachePolicy) -> list[tuple[str, Mode, str]]:
        tenant, found = ctx.principal.tenant, []
        if policy.exact is not Mode.off:
            digest = keys.exact_digest(self.secret, _scope(ctx), ctx.body)
            found.append(("exact", policy.exact, entry_key(tenant, "exact", digest)))
        if policy.template is not Mode.off:
            digest = keys.template_digest(self.secret, _scope(ctx), ctx.route.name, ctx.body)
            if digest is not None:
                found.append(("template", policy.template, entry_key(tenant, "template", digest)))
        return found

    def _semantic(self, ctx: RequestContext, policy: CachePolicy) -> Semantic | None:
        if policy.semantic is Mode.off:
            return None
        return semantic_view(self.secret, ctx.route.name, ctx.body, _scope(ctx), ctx.principal.tenant, policy.semantic)

    async def _nearest(self, ctx: RequestContext, semantic: Semantic, threshold: float) -> tuple[dict, float] | None:
        stored = await self.index.vectors(semantic.bucket)
        if not stored:
            return None  # nothing to compare with: the embedding waits for the answer (StoringHalf), off this path
        semantic.vector = await self.embedder.embed(semantic.text)
        for digest, similarity, said in nearest(stored, semantic.vector, threshold):
            reason = differs(semantic.said, said)
            if reason is not None:
                semantic.kept_apart = semantic.kept_apart or reason
                continue
            entry = _entry(await self.store.get(entry_key(ctx.principal.tenant, "semantic", digest)))
            if entry is not None:
                return entry, similarity
        return None


def semantic_view(secret: bytes, route: str, body: dict, scope: tuple, tenant: str, mode: Mode) -> Semantic | None:
    """The request's bucket (all it must share with a stored question) and the text compared within it: the last
    user message's template; None when the route has no texts or no user message, or when that message is longer
    than SEMANTIC_MAX_CHARS (the embedding reads ~256 tokens: two long texts alike there would look the same)."""
    texts = keys.texts_of(route, body)
    if texts is None:
        return None
    field, messages = texts
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i][0] in ("user", "prompt")), None)
    if last is None:
        return None
    _, parts, rest = messages[last]
    text = "\n".join(part for part in parts if isinstance(part, str))
    if len(text) > SEMANTIC_MAX_CHARS:
        return None
    template, values = keys.template(text)
    others = [part for part in parts if not isinstance(part, str)]
    earlier = messages[:last] + messages[last + 1:]
    digest = keys.key(secret, "semantic", scope, keys.parameters(body, field), earlier, rest, others, values)
    return Semantic(mode, entry_key(tenant, "sem", digest), readable(template), text)


def _scope(ctx: RequestContext) -> tuple:
    return keys.scope_of(ctx.principal.tenant, ctx.principal.endpoint, ctx.route.name, ctx.model_group,
                         ctx.body.get("stream"))


def _hit(ctx: RequestContext, layer: str, entry: dict, similarity: float | None = None) -> StepResult:
    ctx.cached = Hit(layer, entry)
    ctx.outcome.served_from_cache(layer, entry.get("model"))
    detail = {"layer": layer, "saved_usd": entry.get("cost") or 0.0}
    if similarity is not None:
        detail["similarity"] = round(similarity, 4)
    return StepResult("hit", detail)


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

    def __init__(self, step: CacheStep, ctx: RequestContext, keys_: list[str], policy: CachePolicy,
                 semantic: Semantic | None) -> None:
        self.step, self.ctx, self.keys, self.policy, self.semantic = step, ctx, keys_, policy, semantic
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
        task = asyncio.get_running_loop().create_task(self._store(value))
        _storing.add(task)
        task.add_done_callback(_storing.discard)

    async def _store(self, value: bytes) -> None:
        store, ttl = self.step.store, self.policy.ttl_seconds
        await asyncio.gather(*(store.put(key, value, ttl) for key in self.keys))
        semantic = self.semantic
        if semantic is not None:
            if semantic.vector is None:  # not needed by the lookup (an empty bucket, or no-cache)
                semantic.vector = await self.step.embedder.embed(semantic.text)
            digest = keys.key(self.step.secret, "semantic entry", semantic.bucket, semantic.said)
            await store.put(entry_key(self.ctx.principal.tenant, "semantic", digest), value, ttl)
            await self.step.index.add(semantic.bucket, digest, entry_value(semantic.vector, semantic.said), ttl)
