"""Retries and fallbacks per endpoint (gateway.yaml `resilience`), done by the real LiteLLM against the fake
provider's failure sequences: the policy's exact count for 429 and 5xx, none for a client error, Retry-After
honoured, a fallback only to a model the tenant may use, and every attempt in the record."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.support.audit_db import the_record
from tests.support.http import chat


def attempt(stack, fake_provider, key: str, model: str) -> tuple[object, list[dict], dict, float]:
    """The reply, the provider calls this request made (by its marker), its record, and how long it took."""
    marker = uuid.uuid4().hex
    started = time.monotonic()
    reply = chat(stack, key, text=f"hi {marker}", model=model, **{"x-request-id": marker})
    took = time.monotonic() - started
    return reply, fake_provider.requests_containing(marker), the_record(stack.database_url, marker, 10), took


def test_a_429_is_retried_as_often_as_the_policy_says_after_its_retry_after(stack, fake_provider):
    reply, calls, record, took = attempt(stack, fake_provider, "umbrella-retrying", "flaky-429")
    assert reply.status_code == 200, reply.text  # two 429s, then the answer
    assert [c["model"] for c in calls] == ["flaky-429"] * 3
    assert took >= 1.0  # the provider said Retry-After: 1
    assert record["status"] == 200 and record["attempts"] == 3
    reply, calls, record, _ = attempt(stack, fake_provider, "umbrella-retrying", "limited-fast")  # 429 for ever
    assert reply.status_code == 429 and len(calls) == 3 and record["status"] == 429  # the first and two retries


def test_a_5xx_is_retried_and_a_client_error_never(stack, fake_provider):
    reply, calls, record, _ = attempt(stack, fake_provider, "umbrella-retrying", "flaky-500")
    assert reply.status_code == 200 and len(calls) == 2  # one 500, then the answer
    reply, calls, record, _ = attempt(stack, fake_provider, "umbrella-retrying", "boom")
    assert reply.status_code >= 500 and len(calls) == 3
    reply, calls, record, _ = attempt(stack, fake_provider, "umbrella-retrying", "refuses")  # 400
    assert reply.status_code == 400 and len(calls) == 1 and record["status"] == 400


def test_an_endpoint_without_fallbacks_overrides_litellms_own(stack, fake_provider):
    reply, calls, _, _ = attempt(stack, fake_provider, "umbrella-plain", "falls-back")  # litellm_config's fallback
    assert reply.status_code == 200 and [c["model"] for c in calls] == ["falls-back", "fake-chat"]
    reply, calls, _, _ = attempt(stack, fake_provider, "umbrella-retrying", "falls-back")  # fallbacks: []
    assert reply.status_code >= 500 and {c["model"] for c in calls} == {"falls-back"}


def test_a_failing_primary_falls_back_once_and_only_to_a_model_the_tenant_may_use(stack, fake_provider):
    reply, calls, record, _ = attempt(stack, fake_provider, "umbrella-failover", "boom")
    assert reply.status_code == 200, reply.text
    assert [c["model"] for c in calls] == ["boom", "boom", "fake-chat"]  # the first, one retry, the fallback
    assert "globex-private" not in {c["model"] for c in calls}  # named in the policy, not umbrella's to use
    # The record counts attempts as LiteLLM reports them: the answering group's calls plus one per fallback; the
    # failed group's retries are not in LiteLLM's headers (its Langfuse trace has a generation for each).
    assert record["status"] == 200 and record["attempts"] == 2
    assert record["model"] == "boom" and "fake-chat" in record["model_served"] and record["tier"] == "fake-chat"


def test_a_client_cannot_send_the_control_fields_itself(stack, fake_provider):
    marker = uuid.uuid4().hex
    for field, value in (("num_retries", 5), ("fallbacks", ["fake-chat"]), ("model_group_retry_policy", {}),
                         ("timeout", 1)):
        body = {"model": "boom", "messages": [{"role": "user", "content": f"hi {marker}"}], field: value}
        reply = chat(stack, "umbrella-plain", body)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == field, (field, reply.text)
    assert fake_provider.requests_containing(marker) == []


def test_a_stream_broken_after_its_first_bytes_is_not_retried_and_ends_with_an_error_event(stack, fake_provider):
    marker = uuid.uuid4().hex
    body = {"model": "drops", "stream": True, "messages": [{"role": "user", "content": f"hi {marker}"}]}
    for key in ("umbrella-retrying", "umbrella-failover"):  # retries, and a fallback, that must not run mid-stream
        with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                          headers={**stack.auth_for(key), "x-request-id": f"{key}-{marker}"}) as reply:
            assert reply.status_code == 200
            events = [line for line in reply.iter_lines() if line.startswith("data:")]
        assert "data: [DONE]" not in events and '"error"' in events[-1]
        content = "".join(e for e in events[:-1])
        assert content.count('"role"') <= 1  # one answer's chunks: never a second attempt spliced on
    assert len(fake_provider.requests_containing(marker)) == 2  # one call per request, none retried
