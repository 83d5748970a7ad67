"""Langfuse traces from the stack's LiteLLM, received by a local stand-in of Langfuse's OTLP endpoint.

The test decodes what arrived (protobuf spans) and checks the user, tags,
model, usage and cost of requests of two tenants; then shows that a Langfuse
that hangs costs requests nothing.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from langfuse import Langfuse

from tests.support.audit_db import records_of
from tests.support.fake_provider import DEFAULT_REPLY
from tests.support.http import chat as support_chat
from tests.support.stack import COST_EACH, PRICES

PROMPT_MARKER = "prompt-text-7f3a9c"


def chat(stack, key: str, model: str = "fake-chat", **headers):
    return support_chat(stack, key, text=f"hi {PROMPT_MARKER}", model=model, **headers)


def generation_of(langfuse, request_id: str) -> dict:
    return langfuse.generations(request_id)[0]["attributes"]


def attribute(attributes: dict, *fragments: str):
    """The value of the one attribute whose key holds all these fragments (Langfuse's names are long)."""
    found = [v for k, v in attributes.items() if all(f in k for f in fragments)]
    assert len(found) == 1, (fragments, sorted(attributes))
    return found[0]


def test_each_call_is_a_trace_with_user_tags_model_usage_and_cost(stack, langfuse):
    request_ids = {}
    for key, user in (("acme-support", None), ("globex-app", None)):
        request_ids[key] = f"lf-{uuid.uuid4().hex[:16]}"
        assert chat(stack, key, **{"x-request-id": request_ids[key]}).status_code == 200
    token = stack.idp.token("acme", "ada", roles=["app"])
    request_ids["sso"] = f"lf-{uuid.uuid4().hex[:16]}"
    assert httpx.post(f"{stack.url}/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {token}", "x-request-id": request_ids["sso"]},
                      json={"model": "fake-chat", "messages": [{"role": "user", "content": PROMPT_MARKER}]}).status_code == 200

    acme = generation_of(langfuse, request_ids["acme-support"])
    assert set(attribute(acme, "trace", "tags")) == {"tenant:acme", "endpoint:support", "tier:fake-chat"}
    assert "fake-chat" in attribute(acme, "model")
    assert json.loads(attribute(acme, "usage_details")) == {"input": 11, "output": 7}
    assert json.loads(attribute(acme, "cost_details"))["total"] == pytest.approx(COST_EACH)
    assert json.loads(attribute(acme, "observation.metadata.tenant_id")) == "acme"
    assert request_ids["acme-support"] in attribute(acme, "observation.metadata.request_id")
    globex = generation_of(langfuse, request_ids["globex-app"])
    assert set(attribute(globex, "trace", "tags")) == {"tenant:globex", "tier:fake-chat"}
    assert attribute(generation_of(langfuse, request_ids["sso"]), "user", "id") == "ada"
    # Facts only: the prompt's text is not sent (the marker is in every prompt these requests sent).
    assert PROMPT_MARKER not in json.dumps(acme) and PROMPT_MARKER not in json.dumps(globex)


def test_responses_and_messages_are_traced_for_the_sealed_tenant_whatever_the_clients_metadata_says(stack, langfuse):
    """On these routes `metadata` is the client's API field: a tenant naming another in it changes nothing."""
    spoof = {"gateway_tenant_id": "globex", "gateway_request_id": "spoofed"}
    request_ids = {"responses": f"lf-{uuid.uuid4().hex[:16]}", "messages": f"lf-{uuid.uuid4().hex[:16]}"}
    reply = httpx.post(f"{stack.url}/v1/responses", timeout=30,
                       headers={**stack.auth_for("acme-support"), "x-request-id": request_ids["responses"]},
                       json={"model": "fake-chat", "input": "hi", "metadata": spoof})
    assert reply.status_code == 200, reply.text
    reply = httpx.post(f"{stack.url}/v1/messages", timeout=30,
                       headers={**stack.auth_for("acme-support"), "x-request-id": request_ids["messages"]},
                       json={"model": "fake-chat", "max_tokens": 10, "metadata": {"user_id": "u1"},
                             "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text
    for route, request_id in request_ids.items():
        generation = generation_of(langfuse, request_id)
        assert set(attribute(generation, "trace", "tags")) == {"tenant:acme", "endpoint:support", "tier:fake-chat"}
        assert json.loads(attribute(generation, "observation.metadata.tenant_id")) == "acme", route
        assert json.loads(attribute(generation, "cost_details"))["total"] == pytest.approx(COST_EACH), route


def test_a_request_that_falls_back_is_one_trace_with_a_generation_per_attempt(stack, langfuse):
    request_id = f"lf-{uuid.uuid4().hex[:16]}"
    response = chat(stack, "acme-app", model="falls-back", **{"x-request-id": request_id})
    assert response.status_code == 200 and response.headers["x-litellm-attempted-fallbacks"] == "1"
    attempts = langfuse.generations(request_id, count=2)
    assert len(attempts) == 2 and len({span["trace_id"] for span in attempts}) == 1
    [failed] = [span for span in attempts if any("level" in key for key in span["attributes"])]
    [answered] = [span for span in attempts if span is not failed]
    assert attribute(failed["attributes"], "level") == "ERROR" and "falls-back" in attribute(failed["attributes"], "model")
    assert json.loads(attribute(failed["attributes"], "cost_details"))["total"] == 0
    assert "fake-chat" in attribute(answered["attributes"], "model")
    assert json.loads(attribute(answered["attributes"], "cost_details"))["total"] == pytest.approx(COST_EACH)
    # The audit record has the request's cost (the answering attempt's) and how many calls it took.
    record = records_of(stack.database_url, request_id)[0]
    assert record["attempts"] == 2 and record["cost"] == pytest.approx(COST_EACH)


def test_the_trace_id_follows_from_tenant_and_request_id_so_tenants_never_share_a_trace(stack, langfuse):
    request_id = f"lf-{uuid.uuid4().hex[:16]}"  # the same id, sent by two tenants
    for key in ("acme-app", "globex-app"):
        assert chat(stack, key, **{"x-request-id": request_id}).status_code == 200
    spans = langfuse.generations(request_id, count=2)
    by_tenant = {json.loads(attribute(span["attributes"], "observation.metadata.tenant_id")): span["trace_id"]
                 for span in spans}
    assert by_tenant == {tenant: Langfuse.create_trace_id(seed=f"{tenant}:{request_id}") for tenant in ("acme", "globex")}


def test_a_stream_the_client_leaves_is_traced_with_the_cost_of_what_was_produced(stack, langfuse):
    request_id = f"lf-{uuid.uuid4().hex[:16]}"
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", timeout=30,
                      headers={**stack.auth_for("acme-app"), "x-request-id": request_id},
                      json={"model": "long-stream", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n >= 8:
                break  # leave after a few of its 40 pieces
    generation = generation_of(langfuse, request_id)
    cost = json.loads(attribute(generation, "cost_details"))["total"]
    usage = json.loads(attribute(generation, "usage_details"))
    assert 0 < usage["output"] < stack.count_tokens(model="long-stream", prompt=DEFAULT_REPLY)
    assert cost == pytest.approx(usage["input"] * PRICES["input"] + usage["output"] * PRICES["output"])


def timed_calls(stack) -> list[float]:
    times = []
    for _ in range(10):
        started = time.perf_counter()
        assert chat(stack, "acme-app").status_code == 200
        times.append(time.perf_counter() - started)
    return sorted(times)


def test_a_hanging_langfuse_costs_requests_nothing(stack, langfuse):
    before = timed_calls(stack)
    langfuse.set_mode("hang")
    try:
        exports = langfuse.exports()
        assert chat(stack, "acme-app").status_code == 200
        deadline = time.monotonic() + 5
        while langfuse.exports() == exports and time.monotonic() < deadline:  # the exporter is now stuck on it
            time.sleep(0.05)
        assert langfuse.exports() > exports
        during = timed_calls(stack)
    finally:
        langfuse.set_mode("ok")
    # Loose on purpose (a shared machine): the exporter's 2 s timeout would show as seconds, not noise.
    assert during[5] < before[5] + 0.5 and during[-1] < 2.0, (before, during)


def test_a_langfuse_that_is_down_costs_requests_nothing_and_traces_resume_when_it_is_back(stack, langfuse):
    before = timed_calls(stack)
    with langfuse.down():  # nothing listens: every export is refused
        during = timed_calls(stack)
    assert during[5] < before[5] + 0.5 and during[-1] < 2.0, (before, during)
    request_id = f"lf-{uuid.uuid4().hex[:16]}"
    assert chat(stack, "acme-app", **{"x-request-id": request_id}).status_code == 200
    assert json.loads(attribute(generation_of(langfuse, request_id), "observation.metadata.tenant_id")) == "acme"
