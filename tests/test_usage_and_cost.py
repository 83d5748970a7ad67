"""Tokens and cost of every answer, streamed or not, as the audit record keeps them.

fake-chat and paced have prices in the test stack's LiteLLM config (tests/conftest.py);
the fake provider reports 11 prompt and 7 completion tokens per answer.
"""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.audit_db import records_of
from tests.conftest import COST_EACH, TOKENS_IN, TOKENS_OUT


def record_of(stack, request_id: str) -> dict:
    records = records_of(stack.database_url, request_id)
    assert len(records) == 1, records
    return records[0]


def stream(stack, model: str, **extra) -> tuple[str, list[dict]]:
    request_id = f"usage-{uuid.uuid4().hex[:16]}"
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                      headers={**stack.auth, "x-request-id": request_id}) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return request_id, [orjson.loads(e) for e in events[:-1]]


def test_a_plain_answer_is_recorded_with_its_tokens_and_its_price(stack):
    request_id = f"usage-{uuid.uuid4().hex[:16]}"
    response = httpx.post(f"{stack.url}/v1/chat/completions", timeout=30, headers={**stack.auth, "x-request-id": request_id},
                          json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200
    assert float(response.headers["x-litellm-response-cost"]) == pytest.approx(COST_EACH)
    record = record_of(stack, request_id)
    assert (record["tokens_in"], record["tokens_out"]) == (TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH)


def test_a_stream_is_recorded_with_its_tokens_and_price_though_the_client_did_not_ask_for_usage(stack):
    request_id, chunks = stream(stack, "paced")
    assert not any(chunk.get("usage") for chunk in chunks)  # no usage it did not ask for
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    record = record_of(stack, request_id)
    assert (record["tokens_in"], record["tokens_out"]) == (TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH)


def test_a_client_that_asks_for_usage_in_a_stream_gets_it(stack):
    request_id, chunks = stream(stack, "paced", stream_options={"include_usage": True})
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert len(usage) == 1 and (usage[0]["prompt_tokens"], usage[0]["completion_tokens"]) == (TOKENS_IN, TOKENS_OUT)
    assert record_of(stack, request_id)["cost"] == pytest.approx(COST_EACH)
