"""The ordered steps of a model call, and how a step's mode applies: in one place, for every step.

A step owns one concern of the request flow (DESIGN.md: admit, guardrails, PII,
route, cache). Its request half runs in order and may refuse (a `refusal`, or a
GatewayError raised when it cannot decide), answer (a Response: nothing later
runs, LiteLLM is not called) or go on, rewriting the request and leaving a
response half that will see the answer: whole, or each streamed event and then
the end of the stream.
Response halves see the answer in the reverse order of the request halves, as
layers do.

Each step's policy has a mode (gateway.yaml, per endpoint):
- off: the step does not run;
- shadow: the step runs on a copy of the request; what it would have done is
  recorded (the audit record's `decisions`, the `gateway_policy_decisions`
  counter), and nothing the client sees changes: no refusal, no rewrite, no
  response half, and a failure of the step is only recorded. A step that must
  count the load to judge it (admission: `counts_in_shadow`) runs on the
  request itself, and its refusals are recorded, never raised;
- enforce: the step runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from starlette.responses import Response

from wrapper.config.models import Mode
from wrapper.context import RequestContext, ResponseHalf
from wrapper.errors import GatewayError
from wrapper.observability.tracing import step as span

logger = logging.getLogger("wrapper.pipeline")


@dataclass
class StepResult:
    decision: str  # what the step did (or would have done): a word from a small, fixed set per step
    detail: dict = field(default_factory=dict)  # for the audit record: counts, names; never a value from the request
    refusal: GatewayError | None = None  # the request may not go on (raised in enforce mode)
    half: ResponseHalf | None = None  # what it will do to the answer
    answer: Response | None = None  # the answer itself: LiteLLM is not called


class Step(Protocol):
    name: str

    def mode(self, ctx: RequestContext) -> Mode: ...

    async def request(self, ctx: RequestContext) -> StepResult: ...

    # A step that waits on a store may also have `start(ctx) -> Awaitable[StepResult]`: it reads what it needs
    # from the request and sends its query at once, and the steps after it run while the answer travels, and so
    # does the building of what LiteLLM will be sent: `decided(ctx)` waits for it before anything goes out, and
    # its refusal still comes first. Such a step neither answers nor has a response half (what it holds is given
    # back when the request ends, however it ends).


@dataclass
class _Started:
    step: Step
    mode: Mode
    at: int  # its place in ctx.decisions
    pending: Awaitable[StepResult]


class Pipeline:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)

    async def run(self, ctx: RequestContext) -> Response | None:
        """Every step's request half, in order; a Response when a step answered, else None (go to LiteLLM)."""
        started: list[_Started] = []
        try:
            for step in self.steps:
                mode = step.mode(ctx)
                if mode is Mode.off:
                    continue
                if hasattr(step, "start") and (mode is Mode.enforce or getattr(step, "counts_in_shadow", False)):
                    with span(step.name):
                        started.append(_Started(step, mode, len(ctx.decisions), step.start(ctx)))
                    ctx.decisions.append({})  # its decision, once known
                    continue
                with span(step.name):
                    if mode is Mode.enforce:
                        result = await step.request(ctx)
                    elif getattr(step, "counts_in_shadow", False):
                        result = await _shadow_in_place(step, ctx, step.request(ctx))
                    else:
                        result = await _shadow(step, ctx)
                answered = _apply(step, mode, result, ctx)
                if answered is not None:
                    await _finish_started(started, ctx)  # a refusal of an earlier step comes first
                    return answered
        except GatewayError:  # a later step refused: an earlier step's refusal still comes first
            await _finish_started(started, ctx)
            raise
        except BaseException:
            await _finish_started(started, ctx, failing=True)
            raise
        ctx.undecided = started  # decided(ctx) waits for them, once what LiteLLM is sent has been built
        return None


async def decided(ctx: RequestContext, failing: bool = False) -> None:
    """Wait for the started steps still on their way (admission's round trip to Redis) and act on their results:
    an earlier step's refusal is raised. Before anything reaches LiteLLM or a cached answer is served; when the
    request failed before that (`failing`), their results are only recorded, so what they hold is given back."""
    started, ctx.undecided = ctx.undecided, []
    if started:
        await _finish_started(started, ctx, failing)


def _apply(step: Step, mode: Mode, result: StepResult, ctx: RequestContext, at: int | None = None) -> Response | None:
    """A step's result recorded and acted on: raises its refusal, returns its answer, keeps its response half."""
    decision = {"step": step.name, "mode": mode.value, "decision": result.decision, **result.detail}
    if at is None:
        ctx.decisions.append(decision)
    else:
        ctx.decisions[at] = decision
    if mode is Mode.shadow:
        return None
    if result.refusal is not None:
        raise result.refusal
    if result.answer is not None:
        return result.answer
    if result.half is not None:
        ctx.halves.append(result.half)
    return None


async def _finish_started(started: list[_Started], ctx: RequestContext, failing: bool = False) -> None:
    """Wait for the started steps, in order, and act on their results (a refusal raised; when the request is
    already failing, only recorded, so what they hold is still given back when it ends)."""
    while started:
        first = started.pop(0)
        with span(f"{first.step.name}.wait"):
            try:
                if first.mode is Mode.shadow or failing:
                    result = await _shadow_in_place(first.step, ctx, first.pending)
                else:
                    result = await first.pending
            except BaseException as exc:  # the request cancelled while it waited (its client left): said so
                gone = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
                ctx.decisions[first.at] = {"step": first.step.name, "mode": first.mode.value, "decision": gone}
                raise
        if failing:
            ctx.decisions[first.at] = {"step": first.step.name, "mode": first.mode.value, "decision": result.decision,
                                       **result.detail}
            continue
        try:
            _apply(first.step, first.mode, result, ctx, first.at)
        except BaseException:
            await _finish_started(started, ctx, failing=True)
            raise


async def _shadow_in_place(step: Step, ctx: RequestContext, pending: Awaitable[StepResult]) -> StepResult:
    """The step, run on the request itself (it must see the real load); a refusal or failure is only recorded."""
    try:
        result = await pending
    except Exception as exc:
        logger.error("step %s failed in shadow mode (%s)", step.name, type(exc).__name__)
        return StepResult("error")
    if result.refusal is not None:
        return StepResult(result.decision, {**result.detail, "status": result.refusal.status, "code": result.refusal.code})
    return StepResult(result.decision, result.detail)


async def _shadow(step: Step, ctx: RequestContext) -> StepResult:
    """The step, run on a copy of the request: whatever it does, refuses or breaks stays in the copy."""
    copy = dataclasses.replace(ctx, body=orjson.loads(orjson.dumps(ctx.body)), halves=[], decisions=[], pii={},
                               outcome=dataclasses.replace(ctx.outcome))
    try:
        result = await step.request(copy)
    except GatewayError as refusal:
        return StepResult("refuse", {"status": refusal.status, "code": refusal.code})
    except Exception as exc:  # a shadow step must never cost the request anything
        logger.error("step %s failed in shadow mode (%s)", step.name, type(exc).__name__)
        return StepResult("error")
    return StepResult(result.decision, result.detail)
