"""Every request that reaches the wrapper leaves exactly one audit record, committed before its answer ends.

Each test sends one request with its own x-request-id through the real stack
(wrapper, LiteLLM, fake provider, PostgreSQL) and reads the log directly.
"""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest

from tests.support import audit_db
from tests.support.audit_db import records_of
from wrapper.audit.chain import canonical

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hello audit"}]}


def request_id() -> str:
    return f"audit-{uuid.uuid4().hex[:16]}"


def the_record(stack, rid: str, wait_seconds: float = 0) -> dict:
    return audit_db.the_record(stack.database_url, rid, wait_seconds)


def call(stack, body, *, key="acme-app", path="/v1/chat/completions", headers=None) -> tuple[str, httpx.Response]:
    rid = request_id()
    auth = stack.auth_for(key) if key else {}
    payload = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{stack.url}{path}", headers={**auth, "x-request-id": rid, **(headers or {})}, timeout=30, **payload)
    return rid, response


def test_an_answer_is_recorded_before_the_client_has_it(stack):
    rid, response = call(stack, CHAT, headers={"x-gateway-endpoint": "support"})
    assert response.status_code == 200
    record = the_record(stack, rid)  # no waiting: the record was committed before the body was sent
    assert record["tenant"] == "acme" and record["endpoint"] == "support" and record["credential_id"].startswith("key:")
    assert record["status"] == 200 and record["outcome"] == "ok" and record["error_code"] is None
    assert record["model"] == "fake-chat" and record["model_served"] and record["tier"] == "fake-chat"
    assert (record["tokens_in"], record["tokens_out"]) == (response.json()["usage"]["prompt_tokens"],
                                                          response.json()["usage"]["completion_tokens"])
    assert record["client_addr"] == "127.0.0.1" and record["path"] == "/v1/chat/completions"
    assert record["latency_ms"] > 0 and record["stream"] is False and record["cache_hit"] is False
    # Content by the default policy: hashes that anyone holding the exchange can recompute.
    assert record["content"] == {
        "policy": "hash",
        "request_sha256": hashlib.sha256(canonical(CHAT).encode()).hexdigest(),
        "response_sha256": hashlib.sha256(response.content).hexdigest(),
    }
    assert "hello audit" not in str(record)  # no text under the hash policy


def test_a_stream_is_recorded_before_its_done_event(stack):
    rid = request_id()
    body = {**CHAT, "model": "paced", "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body,
                      headers={**stack.auth, "x-request-id": rid}, timeout=30) as response:
        received = b""
        for chunk in response.iter_bytes():
            received += chunk
            if b"[DONE]" in received:
                record = the_record(stack, rid)  # already there when [DONE] arrives
    assert record["stream"] is True and record["status"] == 200 and record["outcome"] == "ok"
    assert record["ttft_ms"] is not None and 0 < record["ttft_ms"] < record["latency_ms"]
    assert record["tokens_out"] is not None
    assert record["content"]["response_sha256"] == hashlib.sha256(received).hexdigest()


@pytest.mark.parametrize(
    "case, status, tenant, error_code",
    [
        ("bad key", 401, "_system", "invalid_credentials"),
        ("no key", 401, "_system", "invalid_credentials"),
        ("auditor calls a model", 403, "acme", "role_not_allowed"),
        ("model of another tenant", 403, "acme", "model_not_allowed"),
        ("invalid JSON", 400, "acme", "invalid_request"),
        ("provider fails", 502, "acme", "upstream_error"),
        ("provider limits", 429, "acme", "429"),
        ("unknown route", 404, "_system", "route_not_found"),
    ],
)
def test_every_refusal_and_failure_has_one_record(stack, case, status, tenant, error_code):
    body, key, path = CHAT, "acme-app", "/v1/chat/completions"
    if case == "bad key":
        key = None
        headers = {"authorization": "Bearer gwk_000000000000_" + "x" * 43}
    else:
        headers = {}
    if case == "no key":
        key = None
    if case == "auditor calls a model":
        key = "acme-auditor"
    if case == "model of another tenant":
        body = {**CHAT, "model": "globex-private"}
    if case == "invalid JSON":
        body = b"{not json"
    if case == "provider fails":
        body = {**CHAT, "model": "boom"}
    if case == "provider limits":
        body = {**CHAT, "model": "limited"}
    if case == "unknown route":
        path = "/v1/nothing-here"
    rid, response = call(stack, body, key=key, path=path, headers=headers)
    assert response.status_code == status, response.text
    record = the_record(stack, rid)
    assert record["tenant"] == tenant and record["status"] == status
    assert record["outcome"] == ("refused" if status < 500 else "error")
    assert record["error_code"] == error_code
    if tenant == "_system":
        assert record["user"] is None and record["credential_id"] is None


def test_an_sso_token_of_an_unknown_tenant_goes_to_the_system_chain(stack):
    token = stack.idp.token("umbrella", "mallory")
    rid, response = call(stack, CHAT, key=None, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 403
    record = the_record(stack, rid)
    assert record["tenant"] == "_system" and record["error_code"] == "tenant_not_enabled"


def test_a_stream_the_client_leaves_is_recorded_as_cancelled(stack):
    rid = request_id()
    body = {**CHAT, "model": "long-stream", "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body,
                      headers={**stack.auth, "x-request-id": rid}, timeout=30) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n >= 4:
                break
    record = the_record(stack, rid, wait_seconds=5)
    assert record["status"] == 499 and record["outcome"] == "cancelled" and record["stream"] is True


def test_a_plain_call_the_client_abandons_is_recorded_as_cancelled(stack, fake_provider):
    rid = request_id()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{stack.url}/v1/chat/completions", json={**CHAT, "model": "stuck"},
                   headers={**stack.auth, "x-request-id": rid}, timeout=0.5)
    record = the_record(stack, rid, wait_seconds=5)
    assert record["status"] == 499 and record["outcome"] == "cancelled" and record["error_code"] == "client_cancelled"
    assert record["latency_ms"] < 1500  # recorded when the client left, not when the model would have timed out


def test_a_stream_broken_by_the_provider_is_recorded_as_an_error(stack):
    rid = request_id()
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json={**CHAT, "model": "drops", "stream": True},
                      headers={**stack.auth, "x-request-id": rid}, timeout=30) as response:
        text = response.read()
    assert b"[DONE]" not in text
    record = the_record(stack, rid)
    assert record["status"] == 502 and record["outcome"] == "error"


def test_health_probes_are_not_recorded(stack):
    rid = request_id()
    assert httpx.get(f"{stack.url}/healthz", headers={"x-request-id": rid}).status_code == 200
    assert records_of(stack.database_url, rid) == []
