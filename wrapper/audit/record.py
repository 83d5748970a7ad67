"""The audit record of one request: what happened, to whom, at what cost, never a secret.

Fields (all present in every record, None when unknown):
  kind "request", event_id (unique), request_id, occurred_at (arrival), completed_at,
  tenant (SYSTEM_TENANT when the caller was not admitted), user, endpoint, credential_id,
  client_addr, method, path, model (requested), model_served, tier, stream,
  status (the HTTP status the client got; 499 when it left first), outcome
  (ok | refused | error | cancelled), error_type, error_code, tokens_in, tokens_out, cost,
  usage_estimated (true when the gateway counted a stream cut short; see wrapper.upstream.stream_usage),
  latency_ms, ttft_ms, cache_hit, attempts (LiteLLM's calls: the first, its retries and fallbacks),
  guardrails (decisions), pii (action, entity type -> count), decisions (each pipeline step's: step, mode
  (shadow: what it would have done; nothing was changed), decision, and counts),
  content (by tenant policy: {"policy": "none"}, {"policy": "hash", "request_sha256",
  "response_sha256"} or {"policy": "full", "request", "response"}).

request_sha256 covers the request as forwarded, in canonical JSON (wrapper.audit.chain.canonical);
response_sha256 covers the response bytes exactly as sent to the client.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from wrapper.audit.chain import canonical
from wrapper.config import SYSTEM_TENANT, AuditContent
from wrapper.context import RequestContext
from wrapper.observability.request_id import new_id
from wrapper.routes.shapes import within_depth


@dataclass
class Delivery:
    """What the client was sent, as seen on the way out."""

    method: str
    path: str
    status: int = 500
    streamed: bool = False
    error: dict | None = None  # the OpenAI error envelope's inner object, when there was one
    response_sha256: str | None = None
    response_body: bytes = b""  # non-stream answers only, for the `full` content policy
    completed: float = field(default_factory=time.perf_counter)


def outcome_of(status: int) -> str:
    if status == 499:
        return "cancelled"
    if status < 400:
        return "ok"
    return "refused" if status < 500 else "error"


def build_record(ctx: RequestContext, delivery: Delivery) -> dict:
    principal, body, outcome = ctx.principal, ctx.body or {}, ctx.outcome
    stream = outcome.stream
    status = delivery.status
    error = delivery.error or (stream.error if stream else None) or {}
    if delivery.streamed and status < 400 and error:
        status = 502  # the stream broke after it began: the client got an error event, not an answer
    outcome = outcome.with_stream_usage()  # a stream's usage comes in its last chunk
    return {
        "kind": "request",
        "event_id": new_id(),
        "request_id": ctx.request_id,
        "occurred_at": ctx.received_at,
        "completed_at": datetime.now(UTC),
        "tenant": principal.tenant if principal else SYSTEM_TENANT,
        "user": _column_text(principal.user) if principal else None,
        "endpoint": principal.endpoint if principal else None,
        "credential_id": principal.credential_id if principal else None,
        "client_addr": ctx.client_addr,
        "method": delivery.method,
        "path": delivery.path,
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
        "model_served": _column_text(outcome.model_served or (stream.model if stream else None)),
        "tier": _column_text(outcome.tier),
        "stream": delivery.streamed,
        "status": status,
        "outcome": outcome_of(status),
        "error_type": error.get("type"),
        "error_code": error.get("code"),
        "tokens_in": outcome.tokens_in,
        "tokens_out": outcome.tokens_out,
        "cost": outcome.cost,
        "usage_estimated": outcome.usage_estimated,
        "latency_ms": round((delivery.completed - ctx.started_at) * 1000, 3),
        "ttft_ms": round(stream.time_to_first_token_ms, 3) if stream and stream.first_token_at else None,
        "cache_hit": outcome.cache_hit,
        "attempts": outcome.attempts,
        "guardrails": ctx.guardrails,
        "pii": ctx.pii,
        "decisions": ctx.decisions,
        "content": _content(ctx, delivery),
    }


def _content(ctx: RequestContext, delivery: Delivery) -> dict:
    policy = ctx.tenant.audit.content if ctx.tenant else AuditContent.hash
    if policy == AuditContent.none:
        return {"policy": "none"}
    if policy == AuditContent.hash:
        if ctx.request_sha256 is None and ctx.body is not None:
            ctx.request_sha256 = sha256_hex(canonical(ctx.body).encode())
        return {"policy": "hash", "request_sha256": ctx.request_sha256, "response_sha256": delivery.response_sha256}
    stream = ctx.outcome.stream
    if delivery.streamed:
        response = "".join(stream.text) if stream else None
    else:
        # With pseudonyms, the client got the restored values; the record keeps the placeholders.
        body = ctx.outcome.provider_answer if ctx.outcome.provider_answer is not None else delivery.response_body
        try:
            response = orjson.loads(body) if body else None
            if isinstance(response, dict | list) and not within_depth(response):
                raise ValueError  # the record's canonical form must be writable: a deep answer is kept as text
        except (orjson.JSONDecodeError, ValueError):
            response = body.decode("utf-8", "replace")
    if ctx.record_mask is not None and response is not None:
        if isinstance(response, str):
            response = ctx.record_mask(response)
        elif isinstance(response, dict):
            for container, key in ctx.route.answer_texts(response):
                container[key] = ctx.record_mask(container[key])
    return {"policy": "full", "request": ctx.body, "response": response}


def _column_text(value: object) -> str | None:
    """A text the audit table's query columns can hold (VARCHAR(256), no NUL), whoever chose it: provider, IdP."""
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "")[:256]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
