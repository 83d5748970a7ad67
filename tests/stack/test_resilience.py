"""Retries and fallbacks per endpoint (gateway.yaml `resilience`), done by the real LiteLLM against the fake
provider's failure sequences: the policy's exact count for 429 and 5xx, none for a client error, Retry-After
honoured, a fallback only to a model the tenant may use, and every attempt in the record."""

from __future__ import annotations

import time
import uuid

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
