"""Hedging (wrapper/upstream/hedge.py): the budget, and the race in the app, in process."""

from __future__ import annotations

import time
import uuid

from tests.support.inprocess import in_process_gateway
from wrapper.upstream.hedge import HedgeBudget

MODELS = {"stalls": {"stall_every": 1, "stall_ms": 1000, "reply": "the slow answer"}, "fake-chat": {},
          "boom": {"status": 500}}


def test_the_budget_allows_a_share_of_the_last_minutes_requests_and_at_least_one():
    now = [0.0]
    budget = HedgeBudget(5.0, clock=lambda: now[0])
    assert budget.take() and not budget.take()  # one a minute, whatever the traffic
    for _ in range(60):
        budget.note_request()
    assert budget.take() and budget.take() and not budget.take()  # 5 % of 60 requests: 3
    now[0] = 61.0  # a minute later the old requests and hedges have left the window
    assert budget.take() and not budget.take()
    assert not HedgeBudget(0.0).take()  # 0 %: hedging off


def test_the_budget_keeps_only_a_minute_of_requests_even_when_nothing_hedges():
    now = [0.0]
    budget = HedgeBudget(5.0, clock=lambda: now[0])
    for second in range(600):  # ten minutes of traffic on endpoints that never hedge
        now[0] = float(second)
        for _ in range(10):
            budget.note_request()
    assert len(budget._requests) <= 610  # the last minute's, not ten minutes' (it grew without bound before)


async def chat(gateway, model: str, stream: bool) -> tuple[object, dict, float]:
    marker = uuid.uuid4().hex
    started = time.monotonic()
    reply = await gateway.client.post(
        "/v1/chat/completions", headers={**gateway.auth("enforced"), "x-request-id": marker},
        json={"model": model, "stream": stream, "messages": [{"role": "user", "content": f"hi {marker}"}]})
    took = time.monotonic() - started
    record = (await gateway.client.get(f"/v1/audit/events/{marker}", headers=gateway.auth("auditor"))).json()
    decision = next((d for d in record["data"][0]["record"]["decisions"] if d["step"] == "hedge"), None)
    return reply, decision, took


async def test_a_late_answer_is_hedged_once_then_the_budget_says_no(tmp_path):
    tenant = {"models": list(MODELS), "endpoints": {"shadowed": {}, "enforced": {
        "resilience": {"hedge_after_ms": 200, "fallbacks": ["fake-chat"]}}}}
    async with in_process_gateway(tmp_path, tenant, MODELS) as gateway:
        reply, decision, took = await chat(gateway, "stalls", stream=True)
        assert reply.status_code == 200 and "the slow answer" not in reply.text and took < 0.9
        assert decision["decision"] == "hedge_won"
        assert [(a["model"], a["outcome"]) for a in decision["attempts"]] == [("stalls", "lost"), ("fake-chat", "won")]
        reply, decision, took = await chat(gateway, "stalls", stream=False)  # over the 5 % budget (one a minute)
        assert reply.status_code == 200 and "the slow answer" in reply.text and took >= 1.0
        assert decision["decision"] == "over_budget"
        reply, decision, _ = await chat(gateway, "fake-chat", stream=False)  # in time: nothing to hedge
        assert reply.status_code == 200 and decision is None
        reply, decision, _ = await chat(gateway, "boom", stream=False)  # failed before the deadline: its error
        assert reply.status_code >= 500 and decision is None


async def test_without_a_fallback_the_tenant_may_use_there_is_no_hedge(tmp_path):
    tenant = {"models": ["stalls"], "endpoints": {"shadowed": {}, "enforced": {
        "resilience": {"hedge_after_ms": 200, "fallbacks": ["fake-chat"]}}}}  # fake-chat: not the tenant's
    async with in_process_gateway(tmp_path, tenant, MODELS) as gateway:
        reply, decision, took = await chat(gateway, "stalls", stream=False)
        assert reply.status_code == 200 and "the slow answer" in reply.text and decision is None
