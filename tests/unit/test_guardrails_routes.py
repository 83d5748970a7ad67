"""Guardrails on every route's own shape, in process: the output checks read Responses and legacy completions
through their adapters (Anthropic Messages, which only LiteLLM translates for the fake provider, is in
tests/stack/test_guardrails.py), and a domain check may be async on input."""

from __future__ import annotations

import orjson
import pytest
import yaml

from tests.support.inprocess import in_process_gateway

GUARDED = {"mode": "enforce",
           "input": [{"check": "python", "name": "tickets",
                      "path": "tests.support.guardrail_examples:NoTicketNumbersToVendors"}],
           "output": [{"check": "banned_terms", "terms": ["project falcon"]}]}
TENANT = {"models": ["fake-echo"], "guardrails": GUARDED, "endpoints": {"shadowed": {}, "enforced": {}}}


@pytest.fixture
async def gateway(tmp_path):
    async with in_process_gateway(tmp_path, tenant=TENANT, models={"fake-echo": {"echo": True, "chunks": 7}}) as app:
        yield app


@pytest.mark.parametrize(("path", "body", "error_event"), [
    ("/v1/responses", {"input": "The Project Falcon plan is ready", "stream": True}, b"error"),
    ("/v1/completions", {"prompt": "The Project Falcon plan is ready", "stream": True}, b'"error"'),
])
async def test_a_banned_term_ends_the_stream_of_every_route_in_its_own_protocol(gateway, path, body, error_event):
    reply = await gateway.client.post(path, json={"model": "fake-echo", **body}, headers=gateway.auth("acme"))
    assert reply.status_code == 200
    text = reply.content.decode()
    assert "falcon" not in text.lower() and "Falcon" not in text
    assert error_event in reply.content and "banned_terms" in text and "[DONE]" not in text


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", {"input": "The Project Falcon plan is ready"}),
    ("/v1/completions", {"prompt": "The Project Falcon plan is ready"}),
])
async def test_a_banned_term_withholds_a_whole_answer_on_every_route(gateway, path, body):
    reply = await gateway.client.post(path, json={"model": "fake-echo", **body}, headers=gateway.auth("acme"))
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "banned_terms"
    assert "falcon" not in reply.text.lower()


async def test_an_async_domain_check_refuses_on_input_and_nothing_is_forwarded(gateway):
    reply = await gateway.client.post("/v1/chat/completions", headers=gateway.auth("acme"), json={
        "model": "fake-echo", "messages": [{"role": "user", "content": "Escalate INC-482913 to the vendor"}]})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "tickets"
    assert gateway.received("INC-482913") == []


async def test_a_config_naming_a_class_that_cannot_be_imported_is_refused_at_load(tmp_path):
    from wrapper.config import ConfigError, load_config

    bad = {"tenants": {"t": {"guardrails": {"output": [{"check": "python", "path": "nowhere.at_all:Guard"}]}}}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="cannot import nowhere.at_all:Guard"):
        load_config(tmp_path / "g.yaml")
    long_term = {"tenants": {"t": {"guardrails": {"input": [{"check": "banned_terms", "terms": ["x" * 65]}]}}}}
    (tmp_path / "g.yaml").write_text(orjson.dumps(long_term).decode())
    with pytest.raises(ConfigError, match="1-64 characters"):
        load_config(tmp_path / "g.yaml")
