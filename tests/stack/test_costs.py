"""The cost API through the real stack: sums equal to the usage times the prices, and only for who may read them.

fake-chat has prices in the test stack's LiteLLM config; the fake provider
reports 11 prompt and 7 completion tokens per answer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.audit_db import query
from tests.support.http import chat, get
from tests.support.stack import (COST_EACH, EMBED_COST, PRICE_PER_CHARACTER, PRICE_PER_IMAGE, PRICE_PER_QUERY,
                                 TOKENS_IN, TOKENS_OUT)


def costs(stack, key: str, **params) -> httpx.Response:
    return get(stack, key, "/v1/costs", **params)


@pytest.fixture(scope="module")
def window(stack) -> dict[str, str]:
    """A time window holding only this module's requests: acme 3 + 1 on `support`, globex 2."""
    since = datetime.now(UTC)
    time.sleep(0.01)
    for key in ("acme-app",) * 3 + ("acme-support",) + ("globex-app",) * 2:
        assert chat(stack, key).status_code == 200
    time.sleep(0.01)
    return {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(milliseconds=1)).isoformat()}


def test_finance_sees_its_tenants_spend_equal_to_usage_times_prices(stack, window):
    response = costs(stack, "acme-finance", group_by="tenant,endpoint,model", **window)
    assert response.status_code == 200, response.text
    rows = {(r["tenant"], r["endpoint"], r["model"]): r for r in response.json()["data"]}
    assert set(rows) == {("acme", None, "fake-chat"), ("acme", "support", "fake-chat")}
    assert rows[("acme", None, "fake-chat")]["requests"] == 3
    assert rows[("acme", None, "fake-chat")]["cost"] == pytest.approx(3 * COST_EACH)
    assert rows[("acme", "support", "fake-chat")]["tokens_in"] == 11
    total = response.json()["total"]
    assert total == {"requests": 4, "tokens_in": 44, "tokens_out": 28, "cost": pytest.approx(4 * COST_EACH)}


def test_the_totals_match_the_ledger_rows(stack, window):
    total = costs(stack, "admin", group_by="tenant", **window).json()["total"]
    ledger = query(stack.database_url, "SELECT count(*) AS n, sum(cost) AS cost, sum(tokens_out) AS out FROM audit_events "
                   "WHERE model IS NOT NULL AND occurred_at >= $1 AND occurred_at < $2",
                   datetime.fromisoformat(window["since"]), datetime.fromisoformat(window["until"]))[0]
    assert (total["requests"], total["tokens_out"]) == (ledger["n"], ledger["out"]) == (6, 42)
    assert total["cost"] == pytest.approx(ledger["cost"]) and total["cost"] == pytest.approx(6 * COST_EACH)


def test_an_admin_sees_every_tenant_by_day(stack, window):
    response = costs(stack, "admin", group_by="tenant", granularity="day", **window)
    assert response.status_code == 200, response.text
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert [(r["tenant"], r["period"], r["requests"]) for r in response.json()["data"]] == [("acme", today, 4), ("globex", today, 2)]
    only = costs(stack, "admin", group_by="model", tenant="globex", **window).json()
    assert only["total"]["requests"] == 2 and only["data"][0]["model"] == "fake-chat"


@pytest.mark.parametrize(("key", "params", "status", "code"), [
    ("acme-app", {}, 403, "role_not_allowed"),
    ("acme-auditor", {}, 403, "role_not_allowed"),
    ("acme-finance", {"tenant": "globex"}, 403, "tenant_not_allowed"),
    ("acme-finance", {"group_by": "tenant,colour"}, 400, None),
    ("acme-finance", {"granularity": "week"}, 400, None),
    ("acme-finance", {"since": "yesterday"}, 400, None),
])
def test_who_may_not_read_costs_and_bad_questions_are_refused(stack, key, params, status, code):
    response = costs(stack, key, **params)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["error"]["code"] == code


def test_every_routes_spend_is_in_the_cost_api(stack, openai_client):
    """One call on each route that reaches a model, whole and streamed: /v1/costs sums each model's requests, tokens
    and cost, equal to the fake provider's usage times the model's prices."""
    from anthropic import Anthropic

    hi = [{"role": "user", "content": "hi"}]
    since = datetime.now(UTC)
    time.sleep(0.01)
    openai_client.chat.completions.create(model="fake-chat", messages=hi)
    list(openai_client.chat.completions.create(model="paced", messages=hi, stream=True))
    openai_client.completions.create(model="fake-chat", prompt="hi")
    list(openai_client.completions.create(model="paced", prompt="hi", stream=True))
    openai_client.responses.create(model="fake-chat", input="hi")
    with openai_client.responses.stream(model="paced", input="hi") as stream:
        list(stream)
    with Anthropic(base_url=stack.url, api_key=stack.keys["acme-app"], max_retries=0, timeout=30) as anthropic:
        anthropic.messages.create(model="fake-chat", max_tokens=10, messages=hi)
        with anthropic.messages.stream(model="paced", max_tokens=10, messages=hi) as s:
            list(s)
    openai_client.embeddings.create(model="fake-embed", input="hi")
    openai_client.moderations.create(model="fake-chat", input="hi")
    openai_client.images.generate(model="fake-image", prompt="a fox")
    openai_client.audio.speech.create(model="fake-tts", voice="alloy", input="hello")
    openai_client.audio.transcriptions.create(model="fake-whisper", file=("a.wav", b"hello", "audio/wav"))
    httpx.post(f"{stack.url}/v1/rerank", headers=stack.auth, timeout=30,
               json={"model": "fake-rerank", "query": "q", "documents": ["a"]}).raise_for_status()
    time.sleep(0.5)  # the last streams' records
    window = {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(milliseconds=1)).isoformat()}
    answer = costs(stack, "acme-finance", group_by="model", **window).json()
    rows = {r["model"]: (r["requests"], r["tokens_in"], r["tokens_out"], r["cost"]) for r in answer["data"]}
    expected = {  # model: requests, tokens in, tokens out, cost
        # chat, completions, responses, messages: 11 + 7 tokens each; and a moderation, which LiteLLM 1.108.5 bills
        # nothing (no usage, no cost: tests/stack/test_routes.py), counted as a request at 0
        "fake-chat": (5, 4 * TOKENS_IN, 4 * TOKENS_OUT, 4 * COST_EACH),
        "paced": (4, 4 * TOKENS_IN, 4 * TOKENS_OUT, 4 * COST_EACH),  # the same four, streamed
        "fake-embed": (1, TOKENS_IN, 0, EMBED_COST),  # input tokens only
        "fake-image": (1, 0, 0, PRICE_PER_IMAGE),  # per image; the fake reports no tokens
        "fake-tts": (1, 0, 0, len("hello") * PRICE_PER_CHARACTER),  # per character; no tokens
        "fake-whisper": (1, TOKENS_IN, TOKENS_OUT, COST_EACH),  # the transcription's token usage
        "fake-rerank": (1, TOKENS_IN, 0, PRICE_PER_QUERY),  # per search unit; Cohere's token meta
    }
    assert rows == {model: (*counts, pytest.approx(cost)) for model, (*counts, cost) in expected.items()}
    assert answer["total"] == {"requests": 14, "tokens_in": 11 * TOKENS_IN, "tokens_out": 9 * TOKENS_OUT,
                               "cost": pytest.approx(sum(cost for *_, cost in expected.values()))}
