"""Retries and fallbacks per endpoint (gateway.yaml `resilience`), done by the real LiteLLM against the fake
provider's failure sequences: the policy's exact count for 429 and 5xx, none for a client error, Retry-After
honoured, a fallback only to a model the tenant may use, and every attempt in the record."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.stack.test_metrics import sample, scrape
from tests.support.audit_db import the_record
from tests.support.http import chat
from tests.support.stack import COST_EACH


def attempt(stack, fake_provider, key: str, model: str) -> tuple[object, list[dict], dict, float]:
    """The reply, the provider calls this request made (by its marker), its record, and how long it took."""
    marker = uuid.uuid4().hex
    started = time.monotonic()
    reply = chat(stack, key, text=f"hi {marker}", model=model, **{"x-request-id": marker})
    took = time.monotonic() - started
    return reply, fake_provider.requests_containing(marker), the_record(stack.database_url, marker, 10), took


def test_a_429_is_retried_as_often_as_the_policy_says_after_its_retry_after(stack, fake_provider):
    labels = {"tenant": "vandelay", "endpoint": "retrying", "group": "flaky-429"}
    before = sample(scrape(stack), "gateway_upstream_attempts_total", attempt="extra", **labels)
    reply, calls, record, took = attempt(stack, fake_provider, "vandelay-retrying", "flaky-429")
    assert reply.status_code == 200, reply.text  # two 429s, then the answer
    assert [c["model"] for c in calls] == ["flaky-429"] * 3
    assert took >= 1.0  # the provider said Retry-After: 1
    assert record["status"] == 200 and record["attempts"] == 3
    assert sample(scrape(stack), "gateway_upstream_attempts_total", attempt="extra", **labels) == before + 2
    reply, calls, record, _ = attempt(stack, fake_provider, "vandelay-retrying", "limited-fast")  # 429 for ever
    assert reply.status_code == 429 and len(calls) == 3 and record["status"] == 429  # the first and two retries


def test_a_5xx_is_retried_and_a_client_error_never(stack, fake_provider):
    reply, calls, record, _ = attempt(stack, fake_provider, "vandelay-retrying", "flaky-500")
    assert reply.status_code == 200 and len(calls) == 2  # one 500, then the answer
    reply, calls, record, _ = attempt(stack, fake_provider, "vandelay-retrying", "boom")
    assert reply.status_code >= 500 and len(calls) == 3
    for model, status in (("refuses", 400), ("status-401", 401), ("status-403", 403), ("status-404", 404),
                          ("status-422", 422)):
        reply, calls, record, _ = attempt(stack, fake_provider, "vandelay-retrying", model)
        assert reply.status_code >= 400 and len(calls) == 1, (model, reply.status_code, len(calls))
        assert record["attempts"] == 1, model


def test_an_endpoint_without_fallbacks_overrides_litellms_own(stack, fake_provider):
    reply, calls, record, _ = attempt(stack, fake_provider, "vandelay-plain", "falls-back")  # litellm_config's
    assert reply.status_code == 200 and [c["model"] for c in calls] == ["falls-back", "fake-chat"]
    assert record["attempts"] == 2 and record["tier"] == "fake-chat"  # one extra attempt, recorded
    reply, calls, _, _ = attempt(stack, fake_provider, "vandelay-retrying", "falls-back")  # fallbacks: []
    assert reply.status_code >= 500 and {c["model"] for c in calls} == {"falls-back"}


def test_a_failing_primary_falls_back_once_and_only_to_a_model_the_tenant_may_use(stack, fake_provider):
    reply, calls, record, _ = attempt(stack, fake_provider, "vandelay-failover", "boom")
    assert reply.status_code == 200, reply.text
    assert [c["model"] for c in calls] == ["boom", "boom", "fake-chat"]  # the first, one retry, the fallback
    assert "globex-private" not in {c["model"] for c in calls}  # named in the policy, not vandelay's to use
    # The record counts attempts as LiteLLM reports them: the answering group's calls plus one per fallback; the
    # failed group's retries are not in LiteLLM's headers (its Langfuse trace has a generation for each).
    assert record["status"] == 200 and record["attempts"] == 2
    assert record["model"] == "boom" and "fake-chat" in record["model_served"] and record["tier"] == "fake-chat"


def test_a_client_cannot_send_the_control_fields_itself(stack, fake_provider):
    marker = uuid.uuid4().hex
    for field, value in (("num_retries", 5), ("fallbacks", ["fake-chat"]), ("model_group_retry_policy", {}),
                         ("timeout", 1)):
        body = {"model": "boom", "messages": [{"role": "user", "content": f"hi {marker}"}], field: value}
        reply = chat(stack, "vandelay-plain", body)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == field, (field, reply.text)
    assert fake_provider.requests_containing(marker) == []


def test_a_stream_broken_after_its_first_bytes_is_not_retried_and_ends_with_an_error_event(stack, fake_provider):
    marker = uuid.uuid4().hex
    body = {"model": "drops", "stream": True, "messages": [{"role": "user", "content": f"hi {marker}"}]}
    for key in ("vandelay-retrying", "vandelay-failover"):  # retries, and a fallback, that must not run mid-stream
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                          headers={**stack.auth_for(key), "x-request-id": f"{key}-{marker}"}) as reply:
            assert reply.status_code == 200
            events = [line for line in reply.iter_lines() if line.startswith("data:")]
        assert "data: [DONE]" not in events and '"error"' in events[-1]
        content = "".join(e for e in events[:-1])
        assert content.count('"role"') <= 1  # one answer's chunks: never a second attempt spliced on
    assert len(fake_provider.requests_containing(marker)) == 2  # one call per request, none retried


def hedged(stack, model: str, stream: bool) -> tuple[object, str, str, float]:
    """The reply, the text the client got, the request id, and the time to its first content (s)."""
    marker = uuid.uuid4().hex
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": f"hi {marker}"}]}
    started, first, text = time.monotonic(), None, ""
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                      headers={**stack.auth_for("vandelay-hedged"), "x-request-id": marker}) as reply:
        for line in reply.iter_lines():
            first = first or time.monotonic()
            text += line
    return reply, text, marker, first - started


def test_a_late_first_token_is_hedged_and_the_first_content_wins_alone(stack, fake_provider):
    for stream in (True, False):
        reply, text, marker, ttft = hedged(stack, "stalls", stream)
        assert reply.status_code == 200, text
        assert ttft < 2.0  # the stalled call's first token came after 3 s
        assert "the slow answer" not in text and ("data: [DONE]" in text if stream else "choices" in text)
        calls = {c["model"]: c for c in fake_provider.requests_containing(marker)}
        assert set(calls) == {"stalls", "fake-chat"}
        if stream:
            # The wrapper drops the loser's connection to LiteLLM at once; LiteLLM 1.108.5 notices only when the
            # provider's first chunk arrives (not while it waits for it), and then stops the provider's stream.
            deadline = time.monotonic() + 8
            while not (loser := fake_provider.requests_containing(marker)[0])["finished_at"] \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            loser = next(c for c in fake_provider.requests_containing(marker) if c["model"] == "stalls")
            assert loser["caller_disconnected"] and loser["outcome"] == "caller_disconnected"
        record = the_record(stack.database_url, marker, 10)
        decision = next(d for d in record["decisions"] if d["step"] == "hedge")
        assert decision["decision"] == "hedge_won" and decision["after_ms"] == 400
        assert [(a["model"], a["outcome"]) for a in decision["attempts"]] == [("stalls", "lost"), ("fake-chat", "won")]
        assert record["cost"] > COST_EACH  # the answer, and the prompt of the attempt that lost


def test_a_first_token_in_time_is_not_hedged(stack, fake_provider):
    reply, text, marker, _ = hedged(stack, "fake-chat", True)
    assert reply.status_code == 200 and len(fake_provider.requests_containing(marker)) == 1
    assert not [d for d in the_record(stack.database_url, marker, 10)["decisions"] if d["step"] == "hedge"]


def test_the_endpoints_deadline_bounds_the_wait_retries_included(stack, fake_provider):
    for model, stream in (("stalls", True), ("stalls", False), ("limited-fast", False)):  # 3 s late; 429 x 3
        marker = uuid.uuid4().hex
        started = time.monotonic()
        reply = chat(stack, "vandelay-bounded", {"model": model, "stream": stream,
                                                 "messages": [{"role": "user", "content": f"hi {marker}"}]},
                     **{"x-request-id": marker})
        took = time.monotonic() - started
        assert reply.status_code == 504 and reply.json()["error"]["code"] == "deadline_exceeded", (model, reply.text)
        assert took < 2.5, (model, took)
        assert the_record(stack.database_url, marker, 10)["status"] == 504
    # The client has its answer at the deadline; LiteLLM 1.108.5 goes on with a whole answer's retries all the
    # same (the wrapper's closed connection does not stop them): the provider sees all three, a second apart.
    deadline = time.monotonic() + 10
    while len(fake_provider.requests_containing(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(fake_provider.requests_containing(marker)) == 3


def test_the_status_of_model_groups_shows_one_that_keeps_failing(stack, fake_provider):
    for _ in range(5):
        attempt(stack, fake_provider, "vandelay-plain", "boom")
        attempt(stack, fake_provider, "vandelay-plain", "fake-chat")
    assert httpx.get(f"{stack.url}/v1/status/models", headers=stack.auth_for("vandelay-plain"),
                     timeout=30).status_code == 403  # the platform team's view, not a tenant's
    groups = {g["model_group"]: g for g in httpx.get(f"{stack.url}/v1/status/models", headers=stack.auth_for("admin"),
                                                     timeout=30).json()["data"]}
    assert groups["boom"]["state"] == "failing" and groups["boom"]["errors_5xx"] >= 5
    assert groups["fake-chat"]["state"] in ("ok", "degraded") and groups["fake-chat"]["latency_p50_ms"] > 0
    assert "cooldown" not in groups  # only model groups, never a client-typed name
