"""Unit tests of the wrapper's small pure pieces."""

from __future__ import annotations

import orjson
import pytest

from custom_callbacks.seal import controls_digest, is_sealed, sealed_metadata
from wrapper.context import StreamSummary
from wrapper.observability.request_id import choose_request_id
from wrapper.routes.chat import ChatRoute
from wrapper.upstream.client import LiteLLMClient
from wrapper.upstream.sse import split_events
from wrapper.upstream.stream_usage import StreamUsageCounter

STREAM = (
    b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\r\n\r\n'
    b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
    b"data: [DONE]\n\n"
)
EVENTS = [
    b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
    b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\r\n\r\n',
    b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n',
    b"data: [DONE]\n\n",
]


async def _from(chunks):
    for chunk in chunks:
        yield chunk


async def _collect(chunks) -> list[bytes]:
    return [event async for event in split_events(_from(chunks))]


async def test_split_events_is_exact_for_every_cut_position():
    for cut in range(1, len(STREAM)):
        assert await _collect([STREAM[:cut], STREAM[cut:]]) == EVENTS, cut


async def test_split_events_byte_by_byte_and_all_at_once():
    assert await _collect([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS
    assert await _collect([STREAM]) == EVENTS


async def test_split_events_yields_an_event_as_soon_as_it_is_complete():
    produced = []

    async def source():
        yield EVENTS[0]
        produced.append("second")
        yield EVENTS[1]

    events = split_events(source())
    assert await events.__anext__() == EVENTS[0]
    assert produced == []  # the first event left before the source was asked for more
    await events.aclose()


async def test_split_events_keeps_an_unterminated_tail():
    assert await _collect([b"data: a\n\ndata: b"]) == [b"data: a\n\n", b"data: b"]


def test_stream_summary_reads_usage_text_and_done():
    summary = StreamSummary(ChatRoute())
    for event in EVENTS:
        summary.observe(event)
    assert summary.events == 4 and summary.done
    assert summary.text == ["Hel", "lo"] and summary.model == "m"
    assert summary.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert summary.time_to_first_token_ms is not None and summary.time_to_first_token_ms >= 0


def test_stream_summary_ignores_comments_and_garbage():
    summary = StreamSummary(ChatRoute())
    for event in (b": keep-alive\n\n", b"data: not json\n\n", b"data: [1,2]\n\n"):
        summary.observe(event)
    assert summary.usage is None and summary.first_token_at is None and not summary.done


@pytest.mark.parametrize("value", ["abc-123", "trace.id:7", "A" * 128])
def test_well_formed_request_ids_are_kept(value):
    assert choose_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "has space", "A" * 129, "new\nline", "quote\""])
def test_other_request_ids_are_replaced(value):
    chosen = choose_request_id(value)
    assert chosen != value and len(chosen) == 32


def test_seal_verifies_only_with_the_same_secret_and_fields():
    identity = {"gateway_request_id": "r1", "gateway_tenant_id": "acme", "gateway_credential_id": "key:1",
                "tags": ["tenant:acme"]}
    metadata = sealed_metadata(b"secret", {"model": "m", "messages": []}, identity)
    assert metadata["gateway_model"] == "m" and metadata["gateway_fields"] == "messages,metadata,model"
    assert is_sealed(b"secret", metadata)
    assert is_sealed(b"secret", {**metadata, "endpoint": "set by LiteLLM"})  # unsealed keys are free
    assert not is_sealed(b"other", metadata)
    assert not is_sealed(None, metadata)
    for key, value in (("gateway_tenant_id", "globex"), ("gateway_user_id", "someone"), ("gateway_model", "other"),
                       ("gateway_fields", "messages,metadata,model,fallbacks"), ("gateway_controls", "0" * 64),
                       ("tags", ["tenant:globex"]), ("gateway_release", "{\"keys\": [\"gw:lim:{acme}:x\"], \"id\": \"r2\"}")):
        assert not is_sealed(b"secret", {**metadata, key: value}), key
    assert not is_sealed(b"secret", {k: v for k, v in metadata.items() if k != "gateway_tenant_id"})
    assert not is_sealed(b"secret", "not a dict")


def test_control_fields_are_sealed_by_value():
    assert controls_digest({"model": "m", "messages": []}) == ""
    assert controls_digest({"num_retries": 2}) != controls_digest({"num_retries": 10}) != ""


def test_stream_summary_keeps_what_the_model_produced_text_and_tool_arguments():
    summary = StreamSummary(ChatRoute())
    call = {"index": 0, "function": {"name": "lookup", "arguments": '{"city": '}}
    for event in (_chunk({"content": "Let me check. "}), _chunk({"tool_calls": [call]}),
                  _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]})):
        summary.observe(event)
    assert summary.produced == 'Let me check. {"city": "Oslo"}'


async def test_an_unfinished_streams_usage_is_unknown_when_litellm_cannot_count_it():
    litellm = LiteLLMClient("http://127.0.0.1:9", None, timeout_seconds=1)  # nothing listens on the discard port
    await litellm.start()
    try:
        usage = await StreamUsageCounter(litellm).count({"model": "m", "messages": []}, "partial answer", "m",
                                                        "deployment-1", "request-1")
    finally:
        await litellm.aclose()
    assert usage is None


def _chunk(delta: dict) -> bytes:
    return b"data: " + orjson.dumps({"model": "m", "choices": [{"index": 0, "delta": delta}]}) + b"\n\n"


def test_building_a_record_leaves_the_requests_outcome_as_it_was():
    """The record reads a stream's usage from its summary; the context it was built from stays unchanged."""
    from wrapper.audit.record import Delivery, build_record
    from wrapper.context import RequestContext

    ctx = RequestContext("unit")
    ctx.outcome.stream = summary = StreamSummary(ChatRoute())
    for event in EVENTS:
        summary.observe(event)
    record = build_record(ctx, Delivery("POST", "/v1/chat/completions", status=200, streamed=True))
    assert (record["tokens_in"], record["tokens_out"]) == (3, 2)
    assert (ctx.outcome.tokens_in, ctx.outcome.tokens_out) == (None, None)
