"""Admission through the whole stack, on Redis: rate limits, concurrency, token and USD budgets, per endpoint of the
`umbrella` tenant (tests/support/stack.py: UMBRELLA_LIMITS), with what a client and an operator see."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.audit_db import the_record
from tests.support.stack import COST_EACH


def _chat(stack, endpoint: str, model: str = "fake-chat", **extra) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth_for(f"umbrella-{endpoint}"), timeout=60,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def test_requests_beyond_the_rate_are_refused_with_the_time_to_wait_and_never_reach_the_provider(stack, fake_provider):
    before = len(fake_provider.log())
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: _chat(stack, "burst"), range(8)))
    served = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    assert (len(served), len(refused)) == (5, 3)
    assert len([r for r in fake_provider.log()[before:] if r["path"].endswith("/chat/completions")]) == 5
    for reply in refused:
        assert reply.json()["error"]["code"] == "rate_limit_requests"
        assert 55 <= int(reply.headers["retry-after"]) <= 60  # the first of the five leaves the window then
    assert {r.headers["x-ratelimit-limit-requests"] for r in served} == {"5"}
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in served) == [0, 1, 2, 3, 4]


def test_no_more_requests_than_the_concurrency_limit_are_in_flight_and_slots_come_back(stack, fake_provider):
    before = len(fake_provider.log())
    with ThreadPoolExecutor(6) as pool:  # paced streams take ~0.25 s each: six at once meet a limit of two
        replies = list(pool.map(lambda _: _chat(stack, "narrow", "paced", stream=True), range(6)))
    assert sorted(r.status_code for r in replies).count(200) >= 2
    assert {r.json()["error"]["code"] for r in replies if r.status_code == 429} <= {"concurrency"}
    calls = [r for r in fake_provider.log()[before:] if r["model"] == "paced"]
    for call in calls:  # at no moment more than two upstream at once
        overlapping = [c for c in calls if c["received_at"] < call["finished_at"] and call["received_at"] < c["finished_at"]]
        assert len(overlapping) <= 2
    # Clients that leave mid-stream give their slots back: 20 of them, then two at once are served.
    for _ in range(20):
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers=stack.auth_for("umbrella-narrow"),
                          timeout=30, json={"model": "long-stream", "stream": True,
                                            "messages": [{"role": "user", "content": "hi"}]}) as reply:
            if reply.status_code == 200:
                next(reply.iter_lines())  # the first event, then hang up
    time.sleep(0.5)
    with ThreadPoolExecutor(2) as pool:
        assert [r.status_code for r in pool.map(lambda _: _chat(stack, "narrow"), range(2))] == [200, 200]


def test_a_daily_budget_is_never_overspent_and_says_when_it_resets(stack):
    """$0.01 a day; each answer costs $0.0025 and reserves a little more up front (its prompt and max_tokens)."""
    served, spent = 0, 0.0
    for _ in range(10):
        reply = _chat(stack, "frugal", max_tokens=7)
        if reply.status_code != 200:
            break
        served += 1
        spent += float(reply.headers["x-litellm-response-cost"])
        time.sleep(0.2)  # the settlement follows the answer
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "budget_exceeded"
    assert served >= 2 and spent <= 0.01 + 1e-9 and served * COST_EACH == pytest.approx(spent)
    now = time.gmtime()
    assert abs(int(reply.headers["retry-after"]) - (86400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec))) <= 2


def test_tokens_are_reserved_up_front_and_a_request_that_alone_exceeds_the_limit_is_refused(stack):
    alone = _chat(stack, "tokens", max_tokens=1000)  # 1,000 completion tokens could never fit 400 a minute
    assert alone.status_code == 429 and alone.json()["error"]["code"] == "rate_limit_tokens"
    assert "retry-after" not in alone.headers and "alone" in alone.json()["error"]["message"]
    served = [_chat(stack, "tokens", max_tokens=100).status_code for _ in range(6)]
    # each reserves ~105 (its prompt and 100) and settles to the 18 it used: far more than 400 / 105 get through
    assert served == [200] * 6


def test_shadow_mode_answers_everything_and_records_the_refusals_enforce_would_make(stack):
    request_ids = [uuid.uuid4().hex for _ in range(5)]
    for request_id in request_ids:
        reply = httpx.post(f"{stack.url}/v1/chat/completions", timeout=30,
                           headers={**stack.auth_for("umbrella-watched"), "x-request-id": request_id},
                           json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200 and "x-ratelimit-limit-requests" not in reply.headers
    decisions = [next(d for d in the_record(stack.database_url, request_id)["decisions"]
                      if d["step"] == "admit") for request_id in request_ids]
    assert [d["decision"] for d in decisions] == ["admit", "admit", "refuse", "refuse", "refuse"]
    assert all(d["mode"] == "shadow" for d in decisions)
    assert decisions[2]["code"] == "rate_limit_requests" and decisions[2]["status"] == 429
