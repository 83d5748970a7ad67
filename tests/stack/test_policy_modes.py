"""A policy rolled out endpoint by endpoint, on the real stack: shadow on one endpoint, enforce on another.

Tenant `soylent` (tests/support/stack.py): PII `shadow` (redact) on `watched`, `enforce` (redact) on `guarded`,
nothing on `plain`. Its model echoes the prompt and answers equal requests with byte-equal answers.
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

EMAIL = "jane.doe@example.com"


def ask(stack, endpoint: str, text: str, stream: bool = False) -> httpx.Response:
    body = {"model": "fake-echo-fixed", "stream": stream, "messages": [{"role": "user", "content": text}]}
    request_id = f"mode-{endpoint}-{uuid.uuid4().hex}"
    response = httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                          headers={**stack.auth_for(f"soylent-{endpoint}"), "x-request-id": request_id})
    assert response.status_code == 200, response.text
    response.request_id = request_id
    return response


def record_of(stack, response: httpx.Response) -> dict:
    found = httpx.get(f"{stack.url}/v1/audit/events/{response.request_id}", headers=stack.auth_for("admin"), timeout=30)
    return found.json()["data"][0]["record"]


def _unstamped(content: bytes) -> bytes:
    return re.sub(rb'"created":\d+', b'"created":0', content)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_shadow_changes_nothing_the_client_sees_and_records_what_it_would_have_done(stack, fake_provider, stream):
    text = f"{uuid.uuid4().hex} write to {EMAIL}"
    watched, plain = ask(stack, "watched", text, stream), ask(stack, "plain", text, stream)
    sent = [r["body"]["messages"][0]["content"] for r in fake_provider.requests_containing(text.split()[0])]
    assert sent == [text, text]  # the provider got the raw text from both
    # And the client the same bytes as with the policy off, but for the second LiteLLM stamps a stream's chunks with
    # (`created`: its clock, not the provider's; two requests may straddle a second).
    assert _unstamped(watched.content) == _unstamped(plain.content)
    record = record_of(stack, watched)
    assert record["pii"] == {}  # nothing was done
    assert {"step": "pii", "mode": "shadow", "decision": "redact", "found": {"EMAIL_ADDRESS": 1}} in record["decisions"]
    assert not any(d["step"] == "pii" for d in record_of(stack, plain)["decisions"])


def test_enforce_on_another_endpoint_of_the_same_tenant_redacts(stack, fake_provider):
    marker = uuid.uuid4().hex
    guarded = ask(stack, "guarded", f"{marker} write to {EMAIL}")
    [sent] = fake_provider.requests_containing(marker)
    assert sent["body"]["messages"][0]["content"] == f"{marker} write to <EMAIL_ADDRESS>"
    assert guarded.json()["choices"][0]["message"]["content"] == f"{marker} write to <EMAIL_ADDRESS>"
    record = record_of(stack, guarded)
    assert record["pii"] == {"action": "redact", "found": {"EMAIL_ADDRESS": 1}}
    assert {"step": "pii", "mode": "enforce", "decision": "redact", "found": {"EMAIL_ADDRESS": 1}} in record["decisions"]


def test_the_decisions_are_counted_per_endpoint_and_mode(stack):
    ask(stack, "watched", f"again {EMAIL}")
    ask(stack, "guarded", f"again {EMAIL}")
    metrics = httpx.get(f"{stack.url}/metrics", timeout=30).text
    for endpoint, mode in (("watched", "shadow"), ("guarded", "enforce")):
        assert (f'gateway_policy_decisions_total{{decision="redact",endpoint="{endpoint}",mode="{mode}",step="pii",'
                f'tenant="soylent"}}') in metrics
