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

from tests.conftest import COST_EACH


def chat(stack, key: str, **headers) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", headers={**stack.auth_for(key), **headers}, timeout=30,
                      json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]})


def generation_of(langfuse, request_id: str, wait: float = 10) -> dict:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for span in langfuse.spans():
            if request_id in json.dumps(span["attributes"]) and span["name"] == "model-call":
                return span["attributes"]
        time.sleep(0.2)
    raise AssertionError(f"no trace of {request_id} reached Langfuse")


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
                      json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200

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
    # Facts only: the prompt's text is not sent.
    assert not any("hi" == v for v in acme.values())


def test_a_hanging_langfuse_costs_requests_nothing(stack, langfuse):
    def timed_calls() -> list[float]:
        times = []
        for _ in range(10):
            started = time.perf_counter()
            assert chat(stack, "acme-app").status_code == 200
            times.append(time.perf_counter() - started)
        return sorted(times)

    before = timed_calls()
    langfuse.set_mode("hang")
    try:
        exports = langfuse.exports()
        assert chat(stack, "acme-app").status_code == 200
        deadline = time.monotonic() + 5
        while langfuse.exports() == exports and time.monotonic() < deadline:  # the exporter is now stuck on it
            time.sleep(0.05)
        assert langfuse.exports() > exports
        during = timed_calls()
    finally:
        langfuse.set_mode("ok")
    # Loose on purpose (a shared machine): the exporter's 2 s timeout would show as seconds, not noise.
    assert during[5] < before[5] + 0.5 and during[-1] < 2.0, (before, during)
