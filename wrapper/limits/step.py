"""Step 2 of the flow: admit, before any provider spend. Every limit that applies is checked and charged at once.

The scopes: the tenant (all its requests), the endpoint (its own `limits`), each user and each API key (`per_user`,
`per_key`). What a request takes: one request; its tokens, reserved as the prompt's size (a character count / 3,
generous on purpose) plus its `max_tokens` (or the policy's `max_tokens` when it sets none); one concurrency slot;
and its cost at the model's prices for those tokens. When the request ends, however it ends (answered, refused
later, failed, the client gone), `finish` settles tokens and money to what was really used and gives the slot back.

In shadow mode the counters count (so the refusals recorded are the ones enforce would make under the same load),
and nothing is refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass

import orjson
from redis.exceptions import RedisError

from wrapper.config.models import LimitSet, Mode
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.limits.charges import BUDGET_KINDS, Admission, Charge, Kind, micro_usd
from wrapper.observability.request_id import new_id
from wrapper.pipeline import StepResult

logger = logging.getLogger("wrapper.limits")

STORE_TIMEOUT_SECONDS = 0.25  # a store that does not answer by then is down, for this request (RedisLimits' bound)
# How long a hung-up stream's concurrency slot stays taken at most when LiteLLM is to give it back (once it has
# closed the provider's stream: custom_callbacks/slot_release.py); it does so well before, unless it died.
HANDOVER_GRACE_MS = 60_000
GENERATING = frozenset({"chat", "completions", "responses", "messages"})  # routes whose answer is generated tokens
CODES = {Kind.requests: "rate_limit_requests", Kind.tokens: "rate_limit_tokens", Kind.concurrency: "concurrency",
         Kind.usd_day: "budget_exceeded", Kind.usd_month: "budget_exceeded"}
_WHAT = {Kind.requests: "requests per minute", Kind.tokens: "tokens per minute", Kind.concurrency: "concurrent requests",
         Kind.usd_day: "daily budget", Kind.usd_month: "monthly budget"}
_FIELDS = {Kind.requests: "requests_per_minute", Kind.tokens: "tokens_per_minute", Kind.concurrency: "concurrency",
           Kind.usd_day: "usd_per_day", Kind.usd_month: "usd_per_month"}


@dataclass
class Held:
    """What an admitted request holds until it ends."""

    store: object
    member: str  # the request's entry in each counter (never its client-chosen x-request-id: see `start`)
    charges: list[Charge]
    admission: Admission


class AdmitStep:
    name = "admit"
    counts_in_shadow = True  # shadow runs on the request itself: the counters must see the load to judge it

    def __init__(self, store, prices, resolve) -> None:
        self.store = store  # RedisLimits or LocalLimits
        self.prices = prices  # async (model group) -> (input, output) USD per token, or None
        self.resolve = resolve  # a model name -> its model group (the catalog's; step 5 checks it later)
        # caller (its policy, tenant, endpoint, user, key) -> (that policy, its counters): worked out once per caller
        # and config, not per request (the time before the query leaves is time the request waits)
        self._plans: dict[tuple, tuple[object, tuple[tuple[str, Kind, int], ...]]] = {}

    def mode(self, ctx: RequestContext) -> Mode:
        return ctx.policy.limits.mode

    async def request(self, ctx: RequestContext) -> StepResult:
        return await self.start(ctx)

    def start(self, ctx: RequestContext) -> Awaitable[StepResult]:
        """The request's charges, read from it now and sent to the store at once; the decision is awaited later, so
        the steps after this one run while Redis decides (the pipeline waits for it before anything is spent)."""
        tokens_in, tokens_out = _reserved_tokens(ctx)
        # The request's entry in the counters: its own, never the client's x-request-id (a client sending the same
        # id every time would otherwise be one entry in a window, one lease: no limit at all)
        member = new_id()
        counters = self._counters(ctx)
        if any(kind in BUDGET_KINDS for _, kind, _ in counters):  # priced: the model's prices may have to be read
            return self._priced(ctx, member, counters, tokens_in, tokens_out, self.resolve(ctx.body["model"]))
        return self._send(ctx, member, _charges(counters, tokens_in + tokens_out, 0), tokens_in + tokens_out)

    async def _priced(self, ctx: RequestContext, member: str, counters, tokens_in: int, tokens_out: int,
                      group: str | None) -> StepResult:
        prices = await self.prices(group)
        usd = micro_usd(tokens_in * prices[0] + tokens_out * prices[1]) if prices else 0
        return await self._send(ctx, member, _charges(counters, tokens_in + tokens_out, usd), tokens_in + tokens_out)

    def _counters(self, ctx: RequestContext) -> tuple[tuple[str, Kind, int], ...]:
        """The caller's counters (key, kind, limit), from the cache while its policy is the one in force."""
        principal = ctx.principal
        caller = (id(ctx.policy), principal.tenant, principal.endpoint, principal.user, principal.credential_id)
        cached = self._plans.get(caller)
        if cached is not None and cached[0] is ctx.policy:
            return cached[1]
        if len(self._plans) >= 10_000:  # callers come and go (keys, users): start again rather than grow
            self._plans.clear()
        counters = tuple(_counters(ctx))
        self._plans[caller] = (ctx.policy, counters)
        return counters

    def _send(self, ctx: RequestContext, member: str, charges: list[Charge], reserved: int) -> Awaitable[StepResult]:
        slots = [c.key for c in charges if c.kind is Kind.concurrency]
        if slots and ctx.body.get("stream") and getattr(self.store, "shared", False):
            # LiteLLM can reach the store only when it is Redis: then a cut stream's slots are its to give back.
            # Sealed into the body, which is built while Redis decides (sent only if admitted)
            ctx.slot_release = orjson.dumps({"keys": slots, "id": member}).decode()
        return self._decide(ctx, member, charges, reserved, self.store.start_admit(member, charges))

    async def _decide(self, ctx: RequestContext, member: str, charges: list[Charge], reserved: int,
                      pending: Awaitable[Admission]) -> StepResult:
        if not charges:
            await pending
            return StepResult("none")
        try:  # the store bounds its own wait (STORE_TIMEOUT_SECONDS): a timer per request here cost more than it
            admission = await pending
        except asyncio.CancelledError:  # the request is gone (its client, its deadline) with the answer unread
            self._abandon(member, charges)
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self._abandon(member, charges)
            logger.error("the limits store is unavailable (%s)", type(exc).__name__)
            if ctx.policy.limits.on_store_failure == "open":
                return StepResult("store_unavailable_open")
            return StepResult("store_unavailable", refusal=GatewayError(
                503, "Limits cannot be checked right now, so the request was not forwarded.", code="limits_unavailable"))
        if not admission.admitted:
            refusal = _refusal(admission)
            detail = {"limit": admission.refused.kind.value, "scope": _scope(admission.refused), "at": admission.at_ms}
            if "retry-after" in refusal.headers:
                detail["retry_after"] = int(refusal.headers["retry-after"])
            return StepResult("refuse", detail, refusal=refusal)
        ctx.held = Held(self.store, member, charges, admission)
        budgets = _budgets(charges, admission)
        warning = _budget_warning(budgets, ctx.policy.limits.warn_at_percent)
        if ctx.policy.limits.mode is Mode.enforce:  # in shadow, nothing the client sees changes
            ctx.response_headers.update(_headers(charges, admission))
            if warning:
                ctx.response_headers["x-gateway-budget-warning"] = warning
        detail = {"reserved_tokens": reserved, "at": admission.at_ms}
        if budgets:
            detail["budgets"] = budgets
        if warning:
            detail["budget_warning"] = warning
        return StepResult("admit", detail)

    def _abandon(self, member: str, charges: list[Charge]) -> None:
        """An admission whose answer never came back (a timeout, a lost connection, the request cancelled) may still
        have been taken: its slots and tokens are given back, or they would stay taken until their leases expire
        (15 minutes). Budgets keep the reservation: without the answer its period is unknown (an upper bound)."""
        given_back = [(c, 0) for c in charges if c.kind in (Kind.concurrency, Kind.tokens)]
        if given_back:
            self.store.settle_all(member, given_back, Admission(False))


def finish(ctx: RequestContext) -> Awaitable[None] | None:
    """The settlement of what an admitted request holds, to run once it has ended; None when it holds nothing.

    It runs in a task of its own (the audit middleware's), a loop turn later, and not at once: a stream the client
    cut is finalised after the request's handler returned, and only then says whether LiteLLM is to give its slot
    back (outcome.slots_handed_over). Read sooner, the slot was given back while the provider's stream was still
    open: the full-scale proof saw 9 streams at the provider against a concurrency of 8."""
    held, ctx.held = ctx.held, None
    return None if held is None else _settle(ctx, held)


async def _settle(ctx: RequestContext, held: Held) -> None:
    """Settle what the request reserved to what it used, and give its slot back; never raises."""
    outcome = ctx.outcome.with_stream_usage()
    produced = outcome.stream is not None and outcome.stream.first_token_at is not None
    # Nothing was spent: give it back. Unless the client left a forwarded request before its answer: the provider
    # may have finished it all the same (outcome.abandoned), so its reservation stands, as an upper bound.
    failed = outcome.tokens_in is None and outcome.cost is None and not produced and not outcome.abandoned
    tokens = None if outcome.tokens_in is None else outcome.tokens_in + (outcome.tokens_out or 0)
    used = []
    for charge in held.charges:
        if charge.kind is Kind.concurrency:  # given back, or kept for LiteLLM to give back (a lease's ms left)
            used.append((charge, HANDOVER_GRACE_MS if outcome.slots_handed_over else 0))
        elif charge.kind is Kind.tokens and (tokens is not None or failed):
            used.append((charge, tokens or 0))
        elif charge.kind in BUDGET_KINDS and (outcome.cost is not None or failed):
            used.append((charge, micro_usd(outcome.cost or 0)))
    # (a stream that produced tokens whose usage could not be counted keeps its reservation: an upper bound)
    if used and (sent := held.store.settle_all(held.member, used, held.admission)) is not None:
        await sent  # a store that sends at once; its own errors are logged there


def _reserved_tokens(ctx: RequestContext) -> tuple[int, int]:
    body = ctx.body
    prompt = math.ceil(len(orjson.dumps(ctx.route.prompt(body))) / 3)
    asked = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
    out = (asked if isinstance(asked, int) else ctx.policy.limits.max_tokens) if ctx.route.name in GENERATING else 0
    return prompt, out


def _scopes(ctx: RequestContext) -> list[tuple[str, LimitSet]]:
    principal, policy = ctx.principal, ctx.policy
    scopes = [("tenant", ctx.tenant.limits), (f"endpoint:{principal.endpoint}", policy.endpoint_limits)]
    if principal.user:
        scopes.append((f"user:{principal.user}", policy.limits.per_user))
    scopes.append((f"key:{principal.credential_id}", policy.limits.per_key))
    return scopes


def _counters(ctx: RequestContext):
    """(key, kind, limit) of every limit that applies to the caller, scope by scope."""
    for scope, limits in _scopes(ctx):
        for kind, name in _FIELDS.items():
            limit = getattr(limits, name)
            if limit is not None:
                value = micro_usd(limit) if kind in BUDGET_KINDS else int(limit)
                yield f"gw:lim:{{{ctx.principal.tenant}}}:{scope}:{kind.value}", kind, value


def _charges(counters: tuple[tuple[str, Kind, int], ...], tokens: int, usd: int) -> list[Charge]:
    """What this request takes from each counter: one request, its tokens, one slot, its reserved cost."""
    amounts = {Kind.requests: 1, Kind.tokens: tokens, Kind.concurrency: 1, Kind.usd_day: usd, Kind.usd_month: usd}
    return [Charge(key, kind, limit, amounts[kind]) for key, kind, limit in counters]


def _scope(charge: Charge) -> str:
    return charge.key.split("}:", 1)[1].rsplit(":", 1)[0].split(":", 1)[0]  # tenant | endpoint | user | key


def _refusal(admission: Admission) -> GatewayError:
    charge, retry = admission.refused, admission.retry_after
    what = f"the {_scope(charge)}'s {_WHAT[charge.kind]}"
    if retry < 0:
        return GatewayError(429, f"This request alone exceeds {what} ({_shown(charge, charge.limit)}).",
                            code=CODES[charge.kind], type="rate_limit_error")
    seconds = max(1, math.ceil(retry))
    return GatewayError(429, f"Exceeded {what} ({_shown(charge, charge.limit)}); retry in {seconds} s.",
                        code=CODES[charge.kind], type="rate_limit_error", headers={"retry-after": str(seconds)})


def _shown(charge: Charge, value: int) -> str:
    return f"${value / 1_000_000:.2f}" if charge.kind in BUDGET_KINDS else str(value)


def _headers(charges: list[Charge], admission: Admission) -> dict[str, str]:
    """OpenAI's rate-limit headers for the tightest applicable limit of each kind (the one with least remaining)."""
    headers = {}
    for kind, name in ((Kind.requests, "requests"), (Kind.tokens, "tokens")):
        applicable = [c for c in charges if c.kind is kind]
        if applicable:
            tightest = min(applicable, key=lambda c: admission.remaining[c.key])
            headers[f"x-ratelimit-limit-{name}"] = str(tightest.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(admission.remaining[tightest.key])
            headers[f"x-ratelimit-reset-{name}"] = duration(admission.resets.get(tightest.key, 0.0))
    return headers


def duration(seconds: float) -> str:
    """A time as OpenAI writes it in x-ratelimit-reset-*: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60}m{rest}s"


def _budgets(charges: list[Charge], admission: Admission) -> list[dict]:
    """Each budget's use with this request's reservation, for the record, the metrics and the warning."""
    return [{"scope": _scope_name(charge), "kind": charge.kind.value, "period": admission.periods.get(charge.key, ""),
             "used_usd": (charge.limit - admission.remaining[charge.key]) / 1_000_000, "limit_usd": charge.limit / 1_000_000}
            for charge in charges if charge.kind in BUDGET_KINDS]


def _budget_warning(budgets: list[dict], warn_at: int) -> str | None:
    """The budget most used, once past warn_at percent."""
    worst = max(budgets, key=lambda b: b["used_usd"] / b["limit_usd"] if b["limit_usd"] else 1.0, default=None)
    if worst is None:
        return None
    used = 100 if not worst["limit_usd"] else int(worst["used_usd"] * 100 // worst["limit_usd"])
    if used < warn_at:
        return None
    return f"{worst['scope'].split(':', 1)[0]} {_WHAT[Kind(worst['kind'])]} {used}% used"


def _scope_name(charge: Charge) -> str:
    """tenant, endpoint:E, user:U or key:K."""
    return charge.key.split("}:", 1)[1].rsplit(":", 1)[0]
