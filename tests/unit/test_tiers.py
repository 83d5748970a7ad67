"""`model: auto`: the complexity classifier against labelled prompts, and the tier step in the app (in process)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.inprocess import in_process_gateway
from wrapper.routing.complexity import SCANNED_CHARS, classify
from wrapper.routing.tiers import DEFAULT_THRESHOLD, last_user_text

DATA = Path(__file__).resolve().parents[1] / "data"


def labelled(name: str) -> list[dict]:
    return yaml.safe_load((DATA / f"complexity_{name}.yaml").read_text())


def decide(item: dict) -> str:
    prompt = item["prompt"]
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text, turns = last_user_text("chat", {"messages": messages})
    return "complex" if classify(text, turns, tools=bool(item.get("tools"))).score >= DEFAULT_THRESHOLD else "simple"


def test_the_classifier_agrees_with_the_held_out_labels():
    items = labelled("heldout")
    assert len(items) >= 100 and {item["label"] for item in items} == {"simple", "complex"}
    wrong = [item["prompt"] for item in items if decide(item) != item["label"]]
    assert 1 - len(wrong) / len(items) >= 0.85, wrong


def test_a_decision_names_the_cues_behind_it():
    design = classify("Design a rate limiter for a distributed API gateway and compare GCRA with token buckets.")
    assert design.score >= DEFAULT_THRESHOLD and "asks to" in design.reason() and "technical terms" in design.reason()
    lookup = classify("What is the capital of Australia?")
    assert lookup.score < DEFAULT_THRESHOLD and lookup.reason() == "a lookup"


def test_a_huge_prompt_is_scored_on_its_first_characters_only():
    cue = "Prove that this algorithm terminates. "
    assert "prove" not in classify("word " * 200_000 + cue).reason()  # the cue is past the limit
    assert "asks to prove" in classify(cue + "word " * 200_000).reason()
    assert SCANNED_CHARS <= 10_000


@pytest.mark.parametrize(("route", "body", "expected"), [
    ("chat", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": [{"type": "text", "text": "c"}, {"type": "image_url"}]}]},
     ("c", 2)),
    ("messages", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, ("hi", 1)),
    ("responses", {"input": "one string"}, ("one string", 1)),
    ("responses", {"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]}, ("x", 1)),
    ("completions", {"prompt": ["p", "q"]}, ("p q", 1)),
    ("chat", {"messages": [{"role": "system", "content": "only a system prompt"}]}, ("", 0)),
    ("chat", {"messages": [{"role": "user", "content": 5}, "not a message"]}, ("", 1)),
])
def test_the_last_user_text_is_read_in_each_routes_shape(route, body, expected):
    assert last_user_text(route, body) == expected


# --- The tier step in the app ------------------------------------------------------------------------------------

MODELS = {"fake-mini": {"tier": "cheap"}, "fake-max": {"tier": "frontier"}, "fake-other": {}}
SIMPLE = "What is the capital of Australia?"
COMPLEX = ("Design a rate limiter for a distributed API gateway that is exact across replicas. Compare sliding "
           "windows, GCRA and token buckets, and explain the failure modes under partitions.")


async def routed(gateway, text: str, key: str = "acme", model: str = "auto") -> tuple[object, dict, dict | None]:
    """The reply, the record's tier decision, and what the provider received."""
    marker = uuid.uuid4().hex
    reply = await gateway.client.post("/v1/chat/completions", headers={**gateway.auth(key), "x-request-id": marker},
                                      json={"model": model, "messages": [{"role": "user", "content": f"{text} {marker}"}]})
    record = (await gateway.client.get(f"/v1/audit/events/{marker}", headers=gateway.auth("auditor"))).json()
    decision = next((d for d in record["data"][0]["record"].get("decisions") or () if d["step"] == "tier"), None)
    sent = gateway.received(marker)
    return reply, decision, sent[0] if sent else None


def set_routing(gateway, tenant_models: list[str] | None = None, **endpoints) -> None:
    data = yaml.safe_load(gateway.config.read_text())
    for endpoint, policy in endpoints.items():
        data["tenants"]["acme"]["endpoints"][endpoint] = {"routing": policy}
    if tenant_models is not None:
        data["tenants"]["acme"]["models"] = tenant_models
    gateway.config.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
async def tiered(tmp_path):
    tenant = {"models": list(MODELS), "endpoints": {"shadowed": {}, "enforced": {}}}
    async with in_process_gateway(tmp_path, tenant, MODELS) as app:
        yield app


async def test_auto_sends_a_lookup_to_the_cheap_tier_and_a_design_task_to_the_frontier(tiered):
    reply, decision, sent = await routed(tiered, SIMPLE)
    assert reply.status_code == 200, reply.text
    assert sent["model"] == "fake-mini" and reply.headers["x-gateway-route"].startswith("tier=cheap; score=")
    assert decision["decision"] == "cheap" and decision["model"] == "fake-mini" and decision["score"] < 0.35
    assert decision["reason"] == "a lookup"
    reply, decision, sent = await routed(tiered, COMPLEX)
    assert reply.status_code == 200 and sent["model"] == "fake-max"
    assert decision["decision"] == "frontier" and decision["score"] >= 0.35 and "asks to" in decision["reason"]
    metrics = (await tiered.client.get("/metrics")).text
    assert [line for line in metrics.splitlines()
            if line.startswith("gateway_policy_decisions_total{") and 'step="tier"' in line
            and 'decision="frontier"' in line and 'mode="enforce"' in line]


async def test_the_tenants_allow_list_bounds_the_tier(tiered):
    set_routing(tiered, tenant_models=["fake-mini", "fake-other"])
    reply, decision, sent = await routed(tiered, COMPLEX)  # frontier wanted, not allowed: the nearest allowed tier
    assert reply.status_code == 200 and sent["model"] == "fake-mini"
    assert decision["decision"] == "cheap" and decision["wanted"] == "frontier"
    set_routing(tiered, tenant_models=["fake-other"])  # no tier at all
    reply, decision, sent = await routed(tiered, SIMPLE)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "model_not_allowed" and sent is None


async def test_shadow_records_the_tier_it_would_pick_and_serves_the_named_model(tiered):
    set_routing(tiered, shadowed={"mode": "shadow"})
    reply, decision, sent = await routed(tiered, SIMPLE, key="shadowed", model="fake-max")
    assert reply.status_code == 200 and sent["model"] == "fake-max" and "x-gateway-route" not in reply.headers
    assert decision["mode"] == "shadow" and decision["decision"] == "cheap" and decision["model"] == "fake-mini"
    reply, decision, sent = await routed(tiered, SIMPLE, key="shadowed")  # auto names nothing to serve: routed
    assert reply.status_code == 200 and sent["model"] == "fake-mini" and decision["mode"] == "enforce"


async def test_an_endpoint_that_routes_every_request_overrides_the_named_model(tiered):
    set_routing(tiered, enforced={"every_request": True, "tiers": {"cheap": 0.0, "frontier": 0.9}})
    reply, decision, sent = await routed(tiered, COMPLEX, key="enforced", model="fake-max")
    assert reply.status_code == 200 and sent["model"] == "fake-mini"  # its own threshold: 0.9
    assert decision["decision"] == "cheap"
    reply, decision, sent = await routed(tiered, COMPLEX, model="fake-max")  # the tenant's default: named, served
    assert sent["model"] == "fake-max" and decision is None


async def test_routing_off_refuses_auto_and_a_client_cannot_name_a_tier(tiered):
    set_routing(tiered, enforced={"mode": "off"})
    reply, decision, sent = await routed(tiered, SIMPLE, key="enforced")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found" and sent is None
    for steering in ("cheap", "frontier", "tier=frontier"):  # a tier is not a model name
        reply, _, sent = await routed(tiered, SIMPLE, model=steering)
        assert reply.status_code == 404 and sent is None


async def test_a_bad_routing_policy_is_refused_at_load_naming_it(tiered):
    from wrapper.config.models import Tenant

    with pytest.raises(ValueError, match="endpoints.enforced.routing"):
        Tenant.model_validate({"models": ["*"], "endpoints": {"enforced": {"routing": {"tiers": {"frontier": 3}}}}})
    set_routing(tiered, enforced={"tiers": {"cheap": 0.0, "frontier": 3}})
    reply = await tiered.client.post("/v1/chat/completions", headers=tiered.auth("enforced"),
                                     json={"model": "auto", "messages": [{"role": "user", "content": SIMPLE}]})
    assert reply.status_code == 200  # the last good file stays in force (the reload was refused and logged)


async def test_auto_is_listed_as_a_model_only_where_it_would_be_served(tiered):
    async def listed(key: str) -> bool:
        ids = [m["id"] for m in (await tiered.client.get("/v1/models", headers=tiered.auth(key))).json()["data"]]
        return "auto" in ids

    assert await listed("acme")
    assert (await tiered.client.get("/v1/models/auto", headers=tiered.auth("acme"))).json()["owned_by"] == "gateway"
    set_routing(tiered, enforced={"mode": "off"})
    assert await listed("acme") and not await listed("enforced")
    set_routing(tiered, tenant_models=["fake-other"])
    assert not await listed("acme")
