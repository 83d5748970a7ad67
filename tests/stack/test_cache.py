"""The cache layers through the whole stack (on the stack's Redis): what a client, finance and an auditor see, and what
another tenant, another endpoint or a hostile client can never get (tests/support/stack.py: CACHE_ENDPOINTS)."""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
import pytest

from tests.support.audit_db import the_record
from wrapper.config.models import CachePolicy


def ask(stack, key: str, text: str, model: str = "fake-chat", headers: dict | None = None, **extra) -> httpx.Response:
    body = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                      headers={**stack.auth_for(key), "x-request-id": uuid.uuid4().hex, **(headers or {})})


def calls_with(fake_provider, marker: str) -> int:
    return len(fake_provider.requests_containing(marker))


def stored() -> None:
    time.sleep(0.2)  # an answer is stored as the response ends, off the client's path


def semantic_entries(tenant: str) -> int:
    """How many questions the semantic layer has indexed for the tenant (its buckets' sizes)."""
    import redis

    from tests.support.stack import STACK_REDIS_URL

    client = redis.Redis.from_url(STACK_REDIS_URL)
    try:
        return sum(client.hlen(key) for key in client.scan_iter(f"gw:cache:{{{tenant}}}:sem:*"))
    finally:
        client.close()


def indexed(tenant: str, before: int) -> None:
    """Wait until the semantic layer has indexed one more question: its embedding comes after the answer, and the
    embedder's first use loads the model (seconds when the machine is busy, not the 0.2 s of `stored`)."""
    deadline = time.monotonic() + 20
    while semantic_entries(tenant) <= before:
        assert time.monotonic() < deadline, "the answer was never indexed"
        time.sleep(0.05)


def test_an_equal_request_is_answered_from_the_cache_at_no_cost_with_the_saving_recorded(stack, fake_provider):
    from tests.stack.test_metrics import sample, scrape

    def saved() -> float:
        return sample(scrape(stack), "gateway_cache_saved_usd_total", tenant="wonka", endpoint="cached",
                      layer="exact") or 0.0

    saved_before = saved()
    text = f"What is our refund policy? {uuid.uuid4().hex}"
    first = ask(stack, "wonka-cached", text)
    assert first.status_code == 200 and "x-gateway-cache" not in first.headers
    stored()
    second = ask(stack, "wonka-cached", text)
    assert second.status_code == 200
    assert (second.headers["x-gateway-cache"], second.headers["x-gateway-cache-layer"]) == ("hit", "exact")
    assert second.json()["choices"] == first.json()["choices"]
    assert calls_with(fake_provider, text) == 1  # the provider was asked once
    record = the_record(stack.database_url, second.request.headers["x-request-id"], 5)
    cost = float(first.headers["x-litellm-response-cost"])
    assert record["cache_hit"] is True and record["cost"] == 0 and record["tokens_in"] == 0
    decision = next(d for d in record["decisions"] if d["step"] == "cache")
    assert decision["decision"] == "hit" and decision["layer"] == "exact"
    assert decision["saved_usd"] == pytest.approx(cost)
    assert saved() - saved_before == pytest.approx(cost)  # finance's dashboards see what the cache saved


def test_a_template_hit_needs_the_same_slot_values_and_tolerates_spacing_and_case(stack, fake_provider):
    marker = uuid.uuid4().hex[:10]
    first = ask(stack, "wonka-cached", f"Refund order #48213 for customer {marker}, please.", model="fake-echo")
    stored()
    again = ask(stack, "wonka-cached", f"refund   order #48213 for Customer {marker}, please", model="fake-echo")
    assert again.headers.get("x-gateway-cache-layer") == "template"
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    other = ask(stack, "wonka-cached", f"Refund order #48214 for customer {marker}, please.", model="fake-echo")
    assert "x-gateway-cache" not in other.headers  # another order: another answer
    assert "#48214" in other.json()["choices"][0]["message"]["content"]
    negated = ask(stack, "wonka-cached", f"Do not refund order #48213 for customer {marker}, please.", model="fake-echo")
    assert "x-gateway-cache" not in negated.headers
    assert calls_with(fake_provider, marker) == 3


def test_no_entry_is_shared_between_tenants_or_endpoints(stack, fake_provider):
    text = f"Summarise the quarter {uuid.uuid4().hex}"
    for key in ("wonka-cached", "oscorp-cached", "wonka-other"):
        assert "x-gateway-cache" not in ask(stack, key, text).headers, key
        stored()
    assert calls_with(fake_provider, text) == 3
    assert ask(stack, "oscorp-cached", text).headers["x-gateway-cache"] == "hit"  # each has its own now


def test_shadow_mode_serves_the_provider_and_records_the_hit_it_would_have_been(stack, fake_provider):
    text = f"Shadowed question {uuid.uuid4().hex}"
    ask(stack, "wonka-shadowed", text)
    stored()
    second = ask(stack, "wonka-shadowed", text)
    assert second.status_code == 200 and "x-gateway-cache" not in second.headers
    assert calls_with(fake_provider, text) == 2
    record = the_record(stack.database_url, second.request.headers["x-request-id"], 5)
    decision = next(d for d in record["decisions"] if d["step"] == "cache")
    assert (decision["decision"], decision["layer"]) == ("would_hit", "exact")
    assert record["cache_hit"] is False and record["cost"] > 0


def test_only_deterministic_requests_are_cached_and_a_client_may_opt_out_but_never_choose_a_key(stack, fake_provider):
    text = f"Sampled {uuid.uuid4().hex}"
    for temperature in (None, 0.7):
        extra = {} if temperature is None else {"temperature": temperature}
        for _ in range(2):
            body = {"model": "fake-chat", "messages": [{"role": "user", "content": f"{text} {temperature}"}], **extra}
            reply = httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                               headers=stack.auth_for("wonka-cached"))
            assert "x-gateway-cache" not in reply.headers
            stored()
    assert calls_with(fake_provider, text) == 4
    kept = f"Not kept {uuid.uuid4().hex}"
    ask(stack, "wonka-cached", kept, headers={"cache-control": "no-store"})
    stored()
    assert "x-gateway-cache" not in ask(stack, "wonka-cached", kept).headers  # not stored: asked again
    stored()
    assert "x-gateway-cache" not in ask(stack, "wonka-cached", kept, headers={"cache-control": "no-cache"}).headers
    assert calls_with(fake_provider, kept) == 3
    # LiteLLM's cache controls are never a client's: another tenant's namespace is refused, not looked up
    for field in ({"cache": {"namespace": "oscorp"}}, {"cache": {"no-cache": False}}, {"caching": True}):
        refused = ask(stack, "wonka-cached", kept, **field)
        assert refused.status_code == 400, field


def test_a_streamed_hit_replays_the_stream_in_order_with_its_framing(stack, fake_provider):
    text = f"Stream me {uuid.uuid4().hex[:8]}"

    def streamed() -> tuple[httpx.Headers, list[bytes]]:
        body = {"model": "fake-echo-chars", "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": text}]}
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                          headers=stack.auth_for("wonka-cached")) as reply:
            assert reply.status_code == 200
            return reply.headers, [line.encode() for line in reply.iter_lines() if line]

    first_headers, first = streamed()
    stored()
    headers, replay = streamed()
    assert "x-gateway-cache" not in first_headers and headers["x-gateway-cache"] == "hit"
    assert replay[-1] == b"data: [DONE]" and all(line.startswith(b"data: ") for line in replay)
    text_of = lambda lines: "".join(orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""  # noqa: E731
                                    for line in lines[:-1] if orjson.loads(line[6:]).get("choices"))
    assert text_of(replay) == text_of(first) == text
    assert len(replay) == len(first)
    assert calls_with(fake_provider, text) == 1
    # a whole answer is not a stream's: the same request unstreamed is its own entry
    assert "x-gateway-cache" not in ask(stack, "wonka-cached", text, model="fake-echo-chars").headers


def test_a_hit_restores_this_requests_personal_data_not_the_stored_ones(stack, fake_provider):
    marker = uuid.uuid4().hex[:8]
    first = ask(stack, "wonka-private", f"Write to jane.doe@example.com about ticket {marker}", model="fake-echo")
    stored()
    second = ask(stack, "wonka-private", f"Write to john.roe@example.org about ticket {marker}", model="fake-echo")
    assert second.headers.get("x-gateway-cache") == "hit"  # the provider saw the same pseudonymized prompt
    assert "john.roe@example.org" in second.json()["choices"][0]["message"]["content"]
    assert "jane.doe" not in second.text
    assert "jane.doe" in first.json()["choices"][0]["message"]["content"]
    assert calls_with(fake_provider, marker) == 1
    assert not fake_provider.requests_containing("example.org")  # and no address ever reached it


def test_a_paraphrase_hits_the_semantic_layer_but_another_value_or_the_opposite_never_does(stack, fake_provider):
    marker = uuid.uuid4().hex[:6]
    before = semantic_entries("wonka")
    ask(stack, "wonka-meaning", f"How do I reset my password for account 7? ({marker})", model="fake-echo")
    indexed("wonka", before)
    paraphrase = ask(stack, "wonka-meaning", f"Could you tell me how to reset the password of account 7? ({marker})",
                     model="fake-echo")
    assert paraphrase.headers.get("x-gateway-cache-layer") == "semantic"
    record = the_record(stack.database_url, paraphrase.request.headers["x-request-id"], 5)
    decision = next(d for d in record["decisions"] if d["step"] == "cache")
    assert decision["layer"] == "semantic" and decision["similarity"] >= CachePolicy().semantic_threshold
    kept_apart = {}
    for other in (f"How do I reset my password for account 8? ({marker})",  # another value: another bucket
                  f"How do I not reset my password for account 7? ({marker})",  # a negation
                  f"How do I reset my password for account 7? ({marker}) Reply in French."):
        answer = ask(stack, "wonka-meaning", other, model="fake-echo")
        assert "x-gateway-cache" not in answer.headers, other
        record = the_record(stack.database_url, answer.request.headers["x-request-id"], 5)
        kept_apart[other] = next(d for d in record["decisions"] if d["step"] == "cache").get("kept_apart")
        stored()
    assert kept_apart[f"How do I not reset my password for account 7? ({marker})"] == "negation"  # the record says why
    assert calls_with(fake_provider, marker) == 4
    # another tenant asking the very same paraphrase finds nothing
    assert "x-gateway-cache" not in ask(stack, "oscorp-cached", f"Could you tell me how to reset the password of "
                                                                 f"account 7? ({marker})", model="fake-echo").headers
