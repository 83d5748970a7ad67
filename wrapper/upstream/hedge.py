"""Hedged requests: when the first content is late, one more attempt on the next model group, and the first to
produce content wins.

An endpoint's `resilience.hedge_after_ms` sets the deadline; the hedge goes to the first group of its fallback
chain (wrapper/routing/resilience.py: only groups the tenant may use). A stream counts its first content event
(route.started: role-only chunks and keep-alives do not count); a whole answer, its arrival. The loser's
connection to LiteLLM is closed at once (LiteLLM then stops the provider call), so the client never sees content
from both. A replica hedges at most `budget_percent` of its requests over the last minute (at least one a
minute), so an outage does not double the load. The decision and each attempt's outcome go in the record (step
`hedge`), and what the loser cost is added to the request's cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.upstream.client import UpstreamReply, UpstreamStream
from wrapper.upstream.sse import event_data, split_events

WINDOW_SECONDS = 60.0


class HedgeBudget:
    """At most `percent` of this replica's requests in the last minute may start a hedge (at least one; 0: none)."""

    def __init__(self, percent: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.percent, self.clock = percent, clock
        self._requests: deque[float] = deque()
        self._hedges: deque[float] = deque()

    def note_request(self) -> None:
        now = self.clock()
        self._requests.append(now)
        self._forget(now)  # every request, hedging or not: a minute of them is all it keeps

    def take(self) -> bool:
        if self.percent <= 0:
            return False
        now = self.clock()
        self._forget(now)
        if len(self._hedges) >= max(1.0, self.percent / 100 * len(self._requests)):
            return False
        self._hedges.append(now)
        return True

    def _forget(self, now: float) -> None:
        for times in (self._requests, self._hedges):
            while times and times[0] <= now - WINDOW_SECONDS:
                times.popleft()


@dataclass
class Attempt:
    group: str
    stream: UpstreamStream | None = None
    events: AsyncIterator[bytes] | None = None
    early: list[bytes] = field(default_factory=list)  # events read up to its first content, to send first
    reply: UpstreamReply | None = None
    first_at: float | None = None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def plan(ctx: RequestContext) -> tuple[float, str] | None:
    """(seconds to wait for the first content, the group to hedge to), or None when the endpoint does not hedge."""
    after = ctx.policy.resilience.hedge_after_ms
    chains = ctx.controls.get("fallbacks") or [{}]
    chain = chains[0].get(ctx.model_group) or []
    if after is None or not chain or ctx.upload is not None:
        return None
    return after / 1000, chain[0]


def as_group(ctx: RequestContext, group: str) -> RequestContext:
    """The request as sent to another group: that group's model, its retries, and no fallback of its own."""
    policy = ctx.controls.get("model_group_retry_policy")
    controls = {**ctx.controls, "fallbacks": []}
    if policy:
        controls["model_group_retry_policy"] = {group: policy.get(group) or next(iter(policy.values()))}
    return dataclasses.replace(ctx, model_group=group, controls=controls)


async def first_content(ctx: RequestContext, attempt: Attempt, opened: Awaitable[UpstreamStream]) -> Attempt:
    """Open the stream and read it up to its first content event (or its end); closed if cancelled meanwhile."""
    try:
        attempt.stream = await opened
        attempt.events = split_events(attempt.stream.chunks)
        async for event in attempt.events:
            attempt.early.append(event)
            parsed = event_data(event)
            if event.startswith(b"data: [DONE]") or (parsed is not None and (
                    ctx.route.started(parsed[1]) or ctx.route.stream_error(parsed[1]) or ctx.route.finished(parsed[1]))):
                break
    except BaseException:
        attempt.close()
        raise
    attempt.first_at = time.perf_counter()
    return attempt


async def whole_answer(attempt: Attempt, call: Awaitable[UpstreamReply]) -> Attempt:
    attempt.reply = await call
    attempt.first_at = time.perf_counter()
    return attempt


async def race(ctx: RequestContext, budget: HedgeBudget, after: float, hedge_group: str,
               start: Callable[[RequestContext, Attempt], Awaitable[Attempt]]) -> tuple[Attempt, list[Attempt]]:
    """The winning attempt, and the others (closed). `start` runs one attempt for a request (as_group's)."""
    primary = Attempt(ctx.model_group or "")
    first = asyncio.ensure_future(start(ctx, primary))
    try:
        done, _ = await asyncio.wait({first}, timeout=after)
    except BaseException:  # the caller gave up (the client left): so does the attempt
        first.cancel()
        raise
    if done:
        return first.result(), []
    if not budget.take():
        ctx.decisions.append({"step": "hedge", "mode": "enforce", "decision": "over_budget",
                              "after_ms": round(after * 1000)})
        return await first, []
    second_attempt = Attempt(hedge_group)
    second = asyncio.ensure_future(start(as_group(ctx, hedge_group), second_attempt))
    tasks = {first: primary, second: second_attempt}
    pending, winner, failure = set(tasks), None, None
    try:
        while pending and winner is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: t is not first):  # a tie goes to the primary
                if task.cancelled() or task.exception() is not None:
                    failure = failure or (task.exception() if not task.cancelled() else None)
                elif winner is None:
                    winner = tasks[task]
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
    losers = [attempt for attempt in tasks.values() if attempt is not winner]
    for attempt in losers:
        attempt.close()
    outcome = "hedge_won" if winner is second_attempt else "primary_won" if winner is primary else "both_failed"
    ctx.decisions.append({"step": "hedge", "mode": "enforce", "decision": outcome, "after_ms": round(after * 1000),
                          "attempts": [_summary(ctx, attempt, attempt is winner) for attempt in tasks.values()]})
    if winner is None:
        raise failure if isinstance(failure, GatewayError) else GatewayError(
            502, "Neither the request nor its hedge was answered.", code="upstream_error")
    return winner, losers


def _summary(ctx: RequestContext, attempt: Attempt, won: bool) -> dict:
    summary = {"model": attempt.group, "outcome": "won" if won else "lost"}
    if attempt.first_at is not None:
        summary["first_ms"] = round((attempt.first_at - ctx.started_at) * 1000, 1)
    return summary
