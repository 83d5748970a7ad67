"""What one request carries from step to step: who asked, what was asked, what came back.

The audit middleware creates the context when the request arrives; each step of
the flow fills in its part; the response path reads it to write the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from wrapper.auth import Principal
from wrapper.gateway_config import Tenant
from wrapper.streaming import StreamSummary


@dataclass
class Outcome:
    """What the answer said, noted on the response path (audit now; cost and metrics later)."""

    model_served: str | None = None
    tier: str | None = None  # LiteLLM's model group: the name the platform team gave the route
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    usage_estimated: bool = False  # counted by the gateway (a stream cut short), not reported by the provider
    cache_hit: bool = False
    attempts: int = 1  # calls LiteLLM made for it: the first, its retries and its fallbacks
    stream: StreamSummary | None = None  # set for streamed answers, filled as events pass
    redacted_answer: bytes | None = None  # the provider's answer before pseudonyms were restored

    def note_usage(self, usage: object) -> None:
        if isinstance(usage, dict):
            self.tokens_in = _count(usage.get("prompt_tokens"))
            self.tokens_out = _count(usage.get("completion_tokens"))
            # LiteLLM adds the cost to a stream's usage (include_cost_in_streaming_usage).
            cost = usage.get("cost")
            if isinstance(cost, int | float) and not isinstance(cost, bool):
                self.cost = float(cost)
            self.usage_estimated = usage.get("estimated") is True

    def note_headers(self, headers: dict[str, str]) -> None:
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
    body: dict | None = None  # the request as checked (after PII redaction): the client's fields only
    model_group: str | None = None  # the model LiteLLM is asked for: the request's, aliases resolved (step 5)
    outcome: Outcome = field(default_factory=Outcome)
    guardrails: list[dict] = field(default_factory=list)  # decisions of later issues' guardrails
    pii: dict = field(default_factory=dict)  # mode, and entity type -> count found; never values

    def overhead_ms(self, waited_seconds: float) -> str:
        return f"{(time.perf_counter() - self.started_at - waited_seconds) * 1000:.3f}"


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count_text(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0
