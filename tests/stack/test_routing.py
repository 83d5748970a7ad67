"""`model: auto` through the whole stack: the tier's model answers (LiteLLM serves the group the gateway chose),
the record, the header and the Langfuse trace carry the decision, and a client cannot pick the tier."""

from __future__ import annotations

import json
import uuid

from tests.stack.test_langfuse import attribute, generation_of
from tests.support.audit_db import the_record
from tests.support.http import chat

SIMPLE = "What is the capital of Australia?"
COMPLEX = ("Design a rate limiter for a distributed API gateway that is exact across replicas. Compare sliding "
           "windows, GCRA and token buckets, and explain the failure modes under partitions.")


def test_auto_is_answered_by_the_tier_its_task_needs_and_the_trace_says_why(stack, fake_provider, langfuse):
    for text, tier, model in ((SIMPLE, "cheap", "fake-mini"), (COMPLEX, "frontier", "fake-max")):
        request_id = f"auto-{uuid.uuid4().hex[:16]}"
        reply = chat(stack, "acme-app", text=f"{text} {request_id}", model="auto", **{"x-request-id": request_id})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gateway-route"].startswith(f"tier={tier}; score=")
        assert reply.headers["x-gateway-route"].endswith(f"model={model}")
        assert [r["model"] for r in fake_provider.requests_containing(request_id)] == [model]
        decision = next(d for d in the_record(stack.database_url, request_id, 10)["decisions"] if d["step"] == "tier")
        assert decision["decision"] == tier and decision["model"] == model and decision["reason"]
        generation = generation_of(langfuse, request_id)
        assert f"route:{tier}" in attribute(generation, "trace", "tags")
        assert json.loads(attribute(generation, "observation.metadata.route")).startswith(f"{tier} score=")


def test_a_client_cannot_choose_the_tier_or_reach_a_tier_model_it_may_not_use(stack):
    for model in ("cheap", "frontier", "tier:frontier", "AUTO"):  # a tier is not a model name
        reply = chat(stack, "acme-app", text=COMPLEX, model=model)
        assert reply.status_code == 404, (model, reply.text)
    reply = chat(stack, "acme-app", text=COMPLEX, model="auto,fake-max")  # LiteLLM's "a,b" list: never passed on
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"
    reply = chat(stack, "hooli-app", text=COMPLEX, model="auto")  # hooli may use fake-chat only: no tier at all
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "model_not_allowed"
    reply = chat(stack, "hooli-app", text=COMPLEX, model="fake-max")
    assert reply.status_code == 403
