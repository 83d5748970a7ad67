"""Tokens and cost of every answer, streamed or not, as the audit record keeps them.

fake-chat and paced have prices in the test stack's LiteLLM config (tests/support/stack.py), fake-embed an input
price; the fake provider reports 11 prompt and 7 completion tokens per answer (11 prompt tokens per embedding).
"""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.support.audit_db import the_record
from tests.support.fake_provider import DEFAULT_REPLY
from tests.support.stack import COST_EACH, PRICES, TOKENS_IN, TOKENS_OUT


def record_of(stack, request_id: str, wait_seconds: float = 0) -> dict:
    return the_record(stack.database_url, request_id, wait_seconds)


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


def test_an_embedding_is_recorded_with_its_input_tokens_and_its_price(stack):
    """fake-embed has an input price only: an embedding bills the provider's prompt tokens, nothing comes out."""
    request_id = f"usage-{uuid.uuid4().hex[:16]}"
    response = httpx.post(f"{stack.url}/v1/embeddings", timeout=30, headers={**stack.auth, "x-request-id": request_id},
                          json={"model": "fake-embed", "input": ["alpha", "beta"]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == TOKENS_IN  # the provider's count, as it gave it
    assert float(response.headers["x-litellm-response-cost"]) == pytest.approx(TOKENS_IN * PRICES["input"])
    record = record_of(stack, request_id)
    assert (record["path"], record["model"], record["tokens_in"], record["tokens_out"]) == \
        ("/v1/embeddings", "fake-embed", TOKENS_IN, 0)
    assert record["cost"] == pytest.approx(TOKENS_IN * PRICES["input"])


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


# Streams cut short never get their usage chunk; the gateway counts what was produced with LiteLLM's
# tokenizer and prices it with the deployment's prices (wrapper/upstream/stream_usage.py).

def content_of(events: list[str]) -> str:
    chunks = [orjson.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def test_a_stream_the_client_leaves_is_costed_for_what_was_produced(stack):
    request_id = f"usage-{uuid.uuid4().hex[:16]}"
    messages = [{"role": "user", "content": "Tell me about foxes, at length."}]
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", timeout=30,
                      headers={**stack.auth, "x-request-id": request_id},
                      json={"model": "long-stream", "messages": messages, "stream": True}) as response:
        received = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line[6:])
            if len(received) == 6:
                break  # and leave: the stream had 40 pieces to go, 100 ms apart
    record = record_of(stack, request_id, wait_seconds=10)  # written once its usage is counted
    assert record["status"] == 499 and record["usage_estimated"] is True
    assert record["tokens_in"] == stack.count_tokens(model="long-stream", messages=messages)
    whole_answer = stack.count_tokens(model="long-stream", prompt=DEFAULT_REPLY)
    assert stack.count_tokens(model="long-stream", prompt=content_of(received)) <= record["tokens_out"] < whole_answer
    assert record["cost"] == pytest.approx(record["tokens_in"] * PRICES["input"] + record["tokens_out"] * PRICES["output"])
    assert record["cost"] < record["tokens_in"] * PRICES["input"] + whole_answer * PRICES["output"]


def test_a_stream_the_provider_breaks_is_costed_for_what_it_sent(stack):
    request_id = f"usage-{uuid.uuid4().hex[:16]}"
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", timeout=30,
                      headers={**stack.auth, "x-request-id": request_id},
                      json={"model": "drops", "messages": [{"role": "user", "content": "hi"}], "stream": True}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    sent = content_of([e for e in events if '"error"' not in e])
    assert sent and "[DONE]" not in events  # two pieces, then the break
    record = record_of(stack, request_id)
    assert record["status"] == 502 and record["usage_estimated"] is True
    assert record["tokens_out"] == stack.count_tokens(model="drops", prompt=sent)
    assert record["cost"] == pytest.approx(record["tokens_in"] * PRICES["input"] + record["tokens_out"] * PRICES["output"])


def test_a_finished_stream_keeps_the_providers_own_usage(stack):
    request_id, _ = stream(stack, "paced")
    assert record_of(stack, request_id)["usage_estimated"] is False

