"""A hostile tenant with an ordinary app key, on the real stack: it cannot steer LiteLLM around its allow-list, hurt
another tenant, or stop the gateway with a body (issue 12). Tenant `hooli` may use `fake-chat` only.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import orjson
import pytest

from tests.support.stack import COST_EACH
from wrapper.audit.query import encode_cursor
from wrapper.routes.chat import CHAT

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm below must not reach out

# Read from a request body by LiteLLM's router and proxy, beside litellm.types.utils.all_litellm_params.
ROUTER_FIELDS = (
    "deployment_id", "specific_deployment", "model_group_retry_policy", "context_window_fallbacks",
    "content_policy_fallbacks", "disable_fallbacks", "max_fallbacks", "mock_testing_fallbacks",
    "mock_testing_rate_limit_error", "mock_testing_context_fallbacks", "router_settings_override", "user_config",
    "fastest_response", "base_url", "api_type", "organization", "extra_body", "extra_headers", "extra_query",
    "no-cache", "s-maxage", "namespace", "timeout", "enable_tag_filtering", "success_callback", "failure_callback",
    "callbacks", "tags", "guardrails",
)
INVENTED = ("x_unknown", "", "__proto__", "Model", "messages ", "provider", "😀", "a" * 300)
# What an attacker would put in the fields that matter most (any other field is sent as `true`).
HARMFUL = {
    "fallbacks": ["globex-private"], "context_window_fallbacks": [{"fake-chat": ["globex-private"]}],
    "deployment_id": "x", "custom_llm_provider": "anthropic", "num_retries": 10, "max_retries": 10,
    "api_base": "http://127.0.0.1:9/v1", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-mine",
    "mock_response": "a free answer", "model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x"}}],
    "timeout": 0.001, "cache": {"namespace": "globex"}, "caching": True, "user_config": {"model_list": []},
}


def litellm_fields() -> set[str]:
    from litellm.types.utils import all_litellm_params

    return set(all_litellm_params)


def hostile_fields() -> list[str]:
    return sorted({*litellm_fields(), *ROUTER_FIELDS, *INVENTED} - set(CHAT.fields))


def chat_body(marker: str, **extra) -> dict:
    return {"model": "fake-chat", "messages": [{"role": "user", "content": f"{marker} hello"}], **extra}


class OtherTenant:
    """globex, calling the shared deployment the whole time: any cooldown the attacker caused shows up here."""

    def __init__(self, stack) -> None:
        self.stack, self.statuses, self._stop = stack, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.stack.url, headers=self.stack.auth_for("globex-app"), timeout=30) as client:
            while not self._stop.is_set():
                response = client.post("/v1/chat/completions", json=chat_body("globex-bystander"))
                self.statuses.append(response.status_code)
                time.sleep(0.02)


@contextmanager
def other_tenant_calling(stack):
    other = OtherTenant(stack)
    other._thread.start()
    try:
        yield other
    finally:
        other._stop.set()
        other._thread.join(30)
    assert other.statuses and set(other.statuses) == {200}, f"another tenant was hurt: {other.statuses}"


def hooli(stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers=stack.auth_for("hooli-app"), timeout=30)


def hooli_events(stack, prefix: str) -> list[dict]:
    events, cursor = [], None
    while True:
        params = {"tenant": "hooli", "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{stack.url}/v1/audit/events", params=params, headers=stack.auth_for("admin"), timeout=30)
        assert page.status_code == 200, page.text
        events += [e["record"] for e in page.json()["data"] if e["request_id"].startswith(prefix)]
        if not (cursor := page.json()["next_cursor"]):
            return events


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_every_field_litellm_acts_on_is_refused_by_name(stack, fake_provider, stream):
    fields, marker = hostile_fields(), f"hostile-{uuid.uuid4().hex}"
    assert {"fallbacks", "num_retries", "deployment_id", "custom_llm_provider", "api_base", "mock_response"} <= set(fields)
    with other_tenant_calling(stack), hooli(stack) as client:
        for index, field in enumerate(fields):
            body = chat_body(marker, stream=stream, **{field: HARMFUL.get(field, True)})
            response = client.post("/v1/chat/completions", json=body, headers={"x-request-id": f"{marker}-{index}"})
            error = response.json()["error"]
            assert (response.status_code, error["code"], error["param"]) == (400, "unsupported_parameter", field[:200])
    assert fake_provider.requests_containing(marker) == []  # nothing reached a provider, allowed model or not
    # The audit log shows what happened: each a refusal for that field, none a model call the ledger would bill.
    events = hooli_events(stack, marker)
    assert len(events) == len(fields)
    assert {(e["status"], e["error_code"], e["model"], e["cost"]) for e in events} == {(400, "unsupported_parameter", None, None)}


def test_client_metadata_and_user_have_no_effect_on_litellm(stack, fake_provider):
    marker = f"inert-{uuid.uuid4().hex}"
    # Keys LiteLLM would read from its own metadata (tag routing, model group, budgets, Langfuse trace ids).
    metadata = {"tags": "tenant:globex", "model_group": "globex-private", "disable_fallbacks": "true",
                "user_api_key_team_id": "team-of-globex", "deployment": "x", "existing_trace_id": "globex-trace"}
    costs_before = spend(stack)
    with hooli(stack) as client:
        for stream in (False, True):
            response = client.post("/v1/chat/completions", headers={"x-request-id": f"{marker}-{stream}"},
                                   json=chat_body(marker, metadata=metadata, user="someone", stream=stream))
            assert response.status_code == 200, response.text
    assert [r["model"] for r in fake_provider.requests_containing(marker)] == ["fake-chat", "fake-chat"]
    events = hooli_events(stack, marker)
    assert [(e["model"], e["tier"], e["status"]) for e in events] == [("fake-chat", "fake-chat", 200)] * 2
    assert spend(stack) == pytest.approx(costs_before + 2 * COST_EACH)


def spend(stack) -> float:
    reply = httpx.get(f"{stack.url}/v1/costs", params={"tenant": "hooli"}, headers=stack.auth_for("admin"), timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["total"]["cost"]


@pytest.mark.parametrize("model, status", [
    ("globex-private", 403),
    ("openai/globex-private", 404),  # a deployment's provider string: LiteLLM would serve it through the platform's key
    ("openai/fake-chat", 404),
    ("fake-chat,globex-private", 400),  # LiteLLM would call every model in the list
    ("fake-*", 404),
    ("gpt-4o", 404),  # nothing in the catalog: LiteLLM would hand it to a provider with the platform's keys
])
def test_a_model_outside_the_catalog_or_the_allow_list_never_reaches_litellm(stack, fake_provider, model, status):
    marker = f"model-{uuid.uuid4().hex}"
    with hooli(stack) as client:
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json={**chat_body(marker), "model": model, "stream": stream})
            assert response.status_code == status, response.text
        assert client.post("/v1/embeddings", json={"model": "fake-embed", "input": marker}).status_code == 403
    assert fake_provider.requests_containing(marker) == []


def test_a_tenants_own_extra_field_passes_and_no_other_tenants(stack, fake_provider):
    marker = f"extra-{uuid.uuid4().hex}"
    with hooli(stack) as client:
        assert client.post("/v1/chat/completions", json=chat_body(marker, top_k=5)).status_code == 200
    [received] = fake_provider.requests_containing(marker)
    assert received["body"]["top_k"] == 5
    refused = httpx.post(f"{stack.url}/v1/chat/completions", json=chat_body(marker, top_k=5), headers=stack.auth)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_k"


def nested(depth: int, where: str) -> bytes:
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    head = b'{"model":"fake-chat","messages":[{"role":"user","content":'
    if where == "metadata":
        return head + b'"hi"}],"metadata":' + inner + b"}"
    if where == "content":
        return head + b"[" * depth + b"]" * depth + b"}]}"
    return head + b'"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":' + inner + b"}}]}"


@pytest.mark.parametrize("key, auditor", [("acme-app", "acme-auditor"), ("initech-app", "initech-auditor")],
                         ids=["hash", "full"])
@pytest.mark.parametrize("where", ["metadata", "content", "tools"])
@pytest.mark.parametrize("depth", [300, 1000, 10000])
def test_deeply_nested_bodies_are_refused_and_hurt_no_one(stack, key, auditor, where, depth):
    started = time.monotonic()
    response = httpx.post(f"{stack.url}/v1/chat/completions", content=nested(depth, where),
                          headers={**stack.auth_for(key), "content-type": "application/json"}, timeout=30)
    assert response.status_code == 400, response.text
    assert time.monotonic() - started < 1.0
    other = httpx.post(f"{stack.url}/v1/chat/completions", json=chat_body("after-nesting"),
                       headers=stack.auth_for("globex-app"), timeout=30)
    assert other.status_code == 200
    listing = httpx.get(f"{stack.url}/v1/audit/events", params={"limit": 1000}, headers=stack.auth_for(auditor),
                        timeout=30)
    assert listing.status_code == 200, listing.text
    assert httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200


async def test_a_deeply_nested_record_already_in_the_log_still_lists(stack):
    """Records written before bodies were bounded: the tenant's listing must not become a 500."""
    from datetime import UTC, datetime

    from wrapper.audit.store import AuditStore, make_engine

    deep: object = "bottom"
    for _ in range(300):
        deep = {"a": deep}
    request_id = f"deep-{uuid.uuid4().hex}"
    store = AuditStore(make_engine(stack.database_url))
    try:
        await store.append([{"tenant": "initech", "request_id": request_id, "occurred_at": datetime.now(UTC),
                             "status": 200, "content": {"policy": "full", "request": deep}}])
    finally:
        await store.close()
    listing = httpx.get(f"{stack.url}/v1/audit/events", params={"limit": 1000},
                        headers=stack.auth_for("initech-auditor"), timeout=30)
    assert listing.status_code == 200, listing.text[:300]
    assert request_id in {e["request_id"] for e in listing.json()["data"]}
    one = httpx.get(f"{stack.url}/v1/audit/events/{request_id}", headers=stack.auth_for("initech-auditor"), timeout=30)
    assert one.status_code == 200


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": {}, "content": "hi"}]}, "messages[0].role"),
    ({"stream_options": "x"}, "stream_options"),
    ({"stream_options": [1]}, "stream_options"),
    ({"stream_options": 5}, "stream_options"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ({"temperature": "hot"}, "temperature"),
    ({"n": 0}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]},
     "tools[0].function.parameters"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"seed": 2**70}, "seed"),
])
def test_client_mistakes_are_400s_at_once_without_a_traceback(stack, fake_provider, body, param):
    traceback_lines = stack.log.read_text().count("Traceback")
    started = time.monotonic()
    response = httpx.post(f"{stack.url}/v1/chat/completions", json={**chat_body("mistake"), **body},
                          headers=stack.auth, timeout=30)
    assert (response.status_code, response.json()["error"]["param"]) == (400, param), response.text
    assert time.monotonic() - started < 1.0
    assert stack.log.read_text().count("Traceback") == traceback_lines


@pytest.mark.parametrize("data, param", [([[]], "input"), ([], "input"), ("", "input"), ([["a"]], "input"),
                                         ([-1], "input"), ({"text": "x"}, "input")])
def test_bad_embeddings_input_is_a_400(stack, data, param):
    response = httpx.post(f"{stack.url}/v1/embeddings", json={"model": "fake-embed", "input": data},
                          headers=stack.auth, timeout=30)
    assert (response.status_code, response.json()["error"]["param"]) == (400, param), response.text


def test_a_clients_forwarded_for_is_not_its_address(stack):
    request_id = f"xff-{uuid.uuid4().hex}"
    response = httpx.post(f"{stack.url}/v1/chat/completions", json=chat_body("xff"), timeout=30,
                          headers={**stack.auth, "x-forwarded-for": "203.0.113.9", "x-request-id": request_id})
    assert response.status_code == 200
    record = httpx.get(f"{stack.url}/v1/audit/events/{request_id}", headers=stack.auth_for("acme-auditor"),
                       timeout=30).json()["data"][0]["record"]
    assert record["client_addr"] == "127.0.0.1"


def test_a_pii_tenants_raw_user_is_never_logged_or_sent(stack, fake_provider):
    marker = f"user-{uuid.uuid4().hex}"
    response = httpx.post(f"{stack.url}/v1/chat/completions", timeout=30, headers=stack.auth_for("initech-app"),
                          json={"model": "fake-chat", "user": "jane.doe@example.com",
                                "messages": [{"role": "user", "content": marker}]})
    assert response.status_code == 200
    [received] = fake_provider.requests_containing(marker)
    assert "jane.doe@example.com" not in orjson.dumps(received["body"]).decode()
    assert "jane.doe@example.com" not in stack.log.read_text()


@pytest.mark.parametrize("path, params", [
    ("/v1/audit/events", {"status": "99999999999999999999"}),
    ("/v1/audit/events", {"limit": "9" * 5000}),
    ("/v1/audit/events", {"cursor": encode_cursor("acme", 10**30)}),
    ("/v1/audit/events", {"since": "0001-01-01T00:00:00+14:00"}),
    ("/v1/audit/events", {"user": "a\x00b"}),
    ("/v1/audit/events/" + quote("a\x00b", safe=""), {}),
    ("/v1/audit/export", {"tenant": "acme", "until": "9999-12-31T23:59:59-14:00"}),
    ("/v1/costs", {"since": "0001-01-01T00:00:00+14:00"}),
    ("/v1/costs", {"tenant": "acme\x00"}),
])
def test_audit_and_cost_queries_that_were_500s_are_400s(stack, path, params):
    response = httpx.get(f"{stack.url}{path}", params=params, headers=stack.auth_for("admin"), timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"]
