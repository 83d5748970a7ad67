"""The Anthropic Messages API through the whole stack, with the official anthropic SDK unchanged: messages whole and
streamed (Anthropic's events), count_tokens, `x-api-key` auth; PII pseudonymized and restored; usage and cost from
the route's own usage shape; what a client may not send."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.support.audit_db import the_record
from tests.support.fake_provider import DEFAULT_REPLY
from tests.support.stack import COST_EACH, TOKENS_IN, TOKENS_OUT


def _anthropic(stack, key: str = "acme-app"):
    from anthropic import Anthropic

    return Anthropic(base_url=stack.url, api_key=stack.keys[key], max_retries=0, timeout=30)


def test_a_message_whole_is_the_providers_with_its_tokens_and_price(stack):
    request_id = uuid.uuid4().hex
    with _anthropic(stack) as client:
        message = client.messages.create(model="fake-chat", max_tokens=100, system="Be brief.",
                                         messages=[{"role": "user", "content": "Say something."}],
                                         extra_headers={"x-request-id": request_id})
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == DEFAULT_REPLY
    assert (message.usage.input_tokens, message.usage.output_tokens) == (TOKENS_IN, TOKENS_OUT)
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["tokens_in"], record["tokens_out"]) == \
        ("/v1/messages", 200, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH)


def test_a_streamed_message_has_anthropics_events_its_text_usage_and_price(stack):
    request_id = uuid.uuid4().hex
    with _anthropic(stack) as client:
        with client.messages.stream(model="paced", max_tokens=100, extra_headers={"x-request-id": request_id},
                                    messages=[{"role": "user", "content": "Say something."}]) as stream:
            events = list(stream)
            final = stream.get_final_message()
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and "message_stop" in kinds and "content_block_delta" in kinds
    assert final.content[0].text == DEFAULT_REPLY
    record = the_record(stack.database_url, request_id, wait_seconds=5)
    assert (record["stream"], record["status"], record["tokens_in"], record["tokens_out"]) == \
        (True, 200, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH) and record["ttft_ms"] is not None


def test_count_tokens_answers_with_the_providers_count_and_costs_nothing(stack, fake_provider):
    request_id = uuid.uuid4().hex
    with _anthropic(stack) as client:
        counted = client.messages.count_tokens(model="fake-chat", extra_headers={"x-request-id": request_id},
                                               messages=[{"role": "user", "content": "How many tokens is this?"}])
    assert counted.input_tokens == TOKENS_IN  # LiteLLM asked the provider (OpenAI's responses/input_tokens)
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["cost"] or 0) == ("/v1/messages/count_tokens", 200, 0)


def test_bearer_auth_works_as_well_as_x_api_key_and_no_key_is_a_401(stack):
    body = {"model": "fake-chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    bearer = httpx.post(f"{stack.url}/v1/messages", json=body, headers=stack.auth, timeout=30)
    assert bearer.status_code == 200 and bearer.json()["content"][0]["text"] == DEFAULT_REPLY
    assert httpx.post(f"{stack.url}/v1/messages", json=body, timeout=30).status_code == 401


@pytest.mark.parametrize("stream", [False, True])
def test_pii_in_system_blocks_and_tool_inputs_never_reaches_the_provider_and_is_restored(stack, fake_provider, stream):
    marker = uuid.uuid4().hex
    text = f"{marker}: write to jane.doe@example.com about EMP-123456"
    request = dict(model="fake-echo", max_tokens=100, system=[{"type": "text", "text": "Owner: jane.doe@example.com"}],
                   messages=[{"role": "user", "content": [{"type": "text", "text": "look it up"}]},
                             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                                                "input": {"who": "EMP-123456"}}]},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                           "content": "found"}, {"type": "text", "text": text}]}])
    with _anthropic(stack, "initech-app") as client:
        if stream:
            with client.messages.stream(**request) as events:
                answer = events.get_final_message().content[0].text
        else:
            answer = client.messages.create(**request).content[0].text
    [sent] = fake_provider.requests_containing(marker)
    assert "jane.doe@example.com" not in str(sent["body"]) and "EMP-123456" not in str(sent["body"])
    assert answer.endswith(text)  # the echo, pseudonyms restored for the client


@pytest.mark.parametrize("body, code", [
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "fallbacks": ["globex-private"]},
     "unsupported_parameter"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "litellm_metadata": {}},
     "unsupported_parameter"),
    ({"max_tokens": 10, "messages": [{"role": "system", "content": "hi"}]}, "invalid_value"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "missing_required_parameter"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "y",
                                                                   "input": "not an object"}]}]}, "invalid_type"),
], ids=["fallbacks", "litellm_metadata", "system-role", "no-max_tokens", "tool-input-string"])
def test_what_a_client_may_not_send_on_messages_is_refused_by_name(stack, fake_provider, body, code):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/messages", json={"model": "fake-chat", **body}, headers=stack.auth, timeout=30)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == code, reply.text
    assert len(fake_provider.log()) == before


def test_another_tenants_model_is_refused_on_messages(stack, fake_provider):
    body = {"model": "globex-private", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{stack.url}/v1/messages", json=body, headers=stack.auth, timeout=30)
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "model_not_allowed"


def test_a_broken_messages_stream_ends_with_anthropics_error_event_and_is_recorded_as_failed(stack):
    request_id = uuid.uuid4().hex
    with httpx.stream("POST", f"{stack.url}/v1/messages", headers={**stack.auth, "x-request-id": request_id},
                      json={"model": "drops", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}, timeout=30) as reply:
        lines = list(reply.iter_lines())
    assert reply.status_code == 200
    data = [orjson.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert data[-1]["type"] == "error" and data[-1]["error"]["message"], lines[-3:]
    assert "event: error" in lines and not any(d["type"] == "message_stop" for d in data)
    record = the_record(stack.database_url, request_id, wait_seconds=5)
    assert record["status"] == 502 and record["stream"] is True


@pytest.mark.parametrize("value", ["2023-06-01" + "x" * 300, "2023-06-01\tbeta", "é-version"],
                         ids=["oversized", "control-character", "non-ascii"])
def test_a_hostile_anthropic_version_header_is_a_400_naming_it(stack, fake_provider, value):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/messages", headers={**stack.auth, "anthropic-version": value.encode()},
                       timeout=30, json={"model": "fake-chat", "max_tokens": 5,
                                         "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "anthropic-version", reply.text
    assert len(fake_provider.log()) == before
