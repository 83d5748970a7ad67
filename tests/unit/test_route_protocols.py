"""The Responses and Anthropic Messages stream protocols as the steps read them: placeholders restored however the
text is cut across events (and in the whole copies that follow), usage read from each protocol's own events, sealed
ids that open only for their tenant, multipart uploads read and refused as they should be, upstream errors that
never carry a traceback."""

from __future__ import annotations

import itertools
import random

import orjson
import pytest
from starlette.datastructures import Headers

from wrapper.context import StreamSummary
from wrapper.errors import GatewayError
from wrapper.ownership.ids import ObjectIds
from wrapper.pii import Restorer
from wrapper.routes.messages import MessagesRoute
from wrapper.routes.responses import ResponsesRoute
from wrapper.routes.transcriptions import TRANSCRIPTIONS
from wrapper.upload import multipart_body, read_form, Upload
from wrapper.upstream.client import upstream_error

ORIGINALS = {"<EMAIL_ADDRESS_1>": "jane.doe@example.com", "<PERSON_2>": "Ann Lee"}
ANSWER = "Mail <EMAIL_ADDRESS_1> and ask <PERSON_2>; <b>x</b> stays, so does <EMAIL_ADDRESS_9>. Ends <PERSON_"
RESTORED = "Mail jane.doe@example.com and ask Ann Lee; <b>x</b> stays, so does <EMAIL_ADDRESS_9>. Ends <PERSON_"


def _sse(event: dict, named: bool) -> bytes:
    head = b"event: " + event["type"].encode() + b"\n" if named else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def _responses_events(pieces: list[str]) -> list[dict]:
    deltas = [{"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": p} for p in pieces]
    whole = {"type": "output_text", "text": ANSWER}
    return [{"type": "response.created", "response": {"id": "resp_1", "output": []}}, *deltas,
            {"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": ANSWER},
            {"type": "response.content_part.done", "output_index": 0, "content_index": 0, "part": whole},
            {"type": "response.completed", "response": {"id": "resp_1", "model": "m", "output": [
                {"type": "message", "id": "msg_1", "content": [whole]}],
                "usage": {"input_tokens": 5, "output_tokens": 9, "cost": 0.5}}}]


def _messages_events(pieces: list[str]) -> list[dict]:
    deltas = [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in pieces]
    return [{"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 5, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}, *deltas,
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
            {"type": "message_stop"}]


def _read_back(route, events: list[dict], named: bool) -> tuple[str, list[dict]]:
    """The text a client reads from the deltas, and every event it got (as the forward path sends them)."""
    restoring = Restorer(ORIGINALS, route)
    sent = b"".join(restoring.event(_sse(event, named)) for event in events) + restoring.end()
    got = [orjson.loads(part.split(b"data: ", 1)[1]) for part in sent.split(b"\n\n") if b"data: " in part]
    text = "".join(e["delta"] if isinstance(e.get("delta"), str) else (e.get("delta") or {}).get("text", "")
                   for e in got if e["type"] in ("response.output_text.delta", "content_block_delta"))
    return text, got


def _cuts(rng: random.Random) -> list[list[str]]:
    cuts = [[ANSWER[:i], ANSWER[i:]] for i in range(1, len(ANSWER))]
    cuts.append(list(ANSWER))
    for _ in range(100):
        points = sorted(rng.sample(range(1, len(ANSWER)), rng.randint(1, 10)))
        cuts.append([ANSWER[a:b] for a, b in itertools.pairwise([0, *points, len(ANSWER)])])
    return cuts


@pytest.mark.parametrize("named", [False, True], ids=["data-only", "named-events"])
def test_a_responses_stream_cut_anywhere_reads_restored_in_its_deltas_and_its_whole_copies(named):
    for pieces in _cuts(random.Random(3)):
        text, got = _read_back(ResponsesRoute(), _responses_events(pieces), named)
        assert text == RESTORED, pieces
        done = next(e for e in got if e["type"] == "response.output_text.done")
        final = next(e for e in got if e["type"] == "response.completed")
        assert done["text"] == RESTORED and final["response"]["output"][0]["content"][0]["text"] == RESTORED
        # what was held back goes out before the text's end, never after it
        assert [e["type"] for e in got].index("response.output_text.done") > max(
            i for i, e in enumerate(got) if e["type"] == "response.output_text.delta")


def test_an_anthropic_stream_cut_anywhere_reads_restored_before_its_block_ends():
    for pieces in _cuts(random.Random(5)):
        text, got = _read_back(MessagesRoute(), _messages_events(pieces), True)
        assert text == RESTORED, pieces
        kinds = [e["type"] for e in got]
        assert max(i for i, k in enumerate(kinds) if k == "content_block_delta") < kinds.index("content_block_stop")


def test_usage_model_and_end_are_read_from_each_protocols_own_events():
    responses = StreamSummary(ResponsesRoute())
    for event in _responses_events(["Hel", "lo"]):
        responses.observe(_sse(event, False))
    assert responses.done and responses.model == "m" and responses.text == ["Hel", "lo"]  # whole copies not counted
    assert responses.usage == {"prompt_tokens": 5, "completion_tokens": 9, "cost": 0.5}
    messages = StreamSummary(MessagesRoute())
    for event in _messages_events(["Hel", "lo"]):
        messages.observe(_sse(event, True))
    assert messages.done and messages.model == "m" and messages.text == ["Hel", "lo"]
    assert messages.usage == {"prompt_tokens": 5, "completion_tokens": 9}  # input from the start, output at the end
    assert messages.time_to_first_token_ms is not None


def test_error_events_speak_each_protocol():
    error = GatewayError(502, "The model provider returned an error.", code="upstream_error")
    head, data = MessagesRoute().error_event(error).split(b"\n", 1)
    assert head == b"event: error" and orjson.loads(data[6:])["error"]["message"] == error.message
    head, data = ResponsesRoute().error_event(error).split(b"\n", 1)
    assert head == b"event: error" and orjson.loads(data[6:])["code"] == "upstream_error"


def test_a_sealed_id_opens_only_for_its_tenant_and_only_unchanged():
    ids = ObjectIds(b"k" * 32)
    sealed = ids.seal("acme", "resp_abc123==")
    assert sealed.startswith("resp_") and ids.open("acme", sealed) == "resp_abc123=="
    assert ids.open("globex", sealed) is None
    assert ObjectIds(b"j" * 32).open("acme", sealed) is None  # another gateway's key
    for i in range(len("resp_"), len(sealed)):  # any one character changed
        changed = sealed[:i] + ("A" if sealed[i] != "A" else "B") + sealed[i + 1:]
        assert ids.open("acme", changed) is None, i
    for hostile in ("resp_", "resp_!!", "x" * 5000, "resp_abc123==", None, 7, "a_" + "=" * 10):
        assert ids.open("acme", hostile) is None
    item = ids.seal("acme", "msg_42")
    assert item.startswith("msg_") and ids.open("acme", item) == "msg_42"


async def test_an_upload_is_read_with_typed_fields_and_sent_on_whole():
    body, content_type = multipart_body({"model": "m", "temperature": "0.5", "timestamp_granularities": ["word"]},
                                        Upload("a.wav", "audio/wav", b"\x00\x01RIFF"))
    fields, upload = await read_form(Headers({"content-type": content_type}), body, TRANSCRIPTIONS, frozenset())
    assert fields == {"model": "m", "temperature": 0.5, "timestamp_granularities": ["word"]}
    assert upload == Upload("a.wav", "audio/wav", b"\x00\x01RIFF")


@pytest.mark.parametrize("fields, filename, code", [
    ({"model": "m", "temperature": "nan"}, "a.wav", "invalid_type"),
    ({"model": "m", "api_base": "http://evil"}, "a.wav", "unsupported_parameter"),
    ({"model": "m", "stream": "true"}, "a.wav", "invalid_value"),
    ({"temperature": "0"}, "a.wav", "missing_required_parameter"),
], ids=["nan", "api_base", "stream", "no-model"])
async def test_an_upload_with_fields_it_may_not_have_is_refused_by_name(fields, filename, code):
    body, content_type = multipart_body(fields, Upload(filename, "audio/wav", b"x"))
    with pytest.raises(GatewayError) as refused:
        await read_form(Headers({"content-type": content_type}), body, TRANSCRIPTIONS, frozenset())
    assert refused.value.status == 400 and refused.value.code == code


async def test_a_hostile_file_name_is_made_plain_and_a_broken_body_is_a_400():
    body, content_type = multipart_body({"model": "m"}, Upload("../../etc/pass;wd'$(x).wav", "audio/wav", b"x"))
    _, upload = await read_form(Headers({"content-type": content_type}), body, TRANSCRIPTIONS, frozenset())
    assert upload.filename == "pass_wd___x_.wav"  # no path, quote or shell character reaches the header to LiteLLM
    with pytest.raises(GatewayError) as refused:
        await read_form(Headers({"content-type": content_type}), body[: len(body) // 2], TRANSCRIPTIONS, frozenset())
    assert refused.value.status == 400


def test_an_upstream_error_never_carries_litellms_traceback():
    content = orjson.dumps({"error": {"message": "APIConnectionError: Invalid response Traceback (most recent call "
                                                 "last):\n  File \"/x/litellm/y.py\", line 9\nValueError: z"}})
    error = upstream_error(500, content, {})
    assert "Traceback" not in error.message and "litellm/y.py" not in error.message
    assert error.message.startswith("APIConnectionError")


def test_an_image_answers_tokens_are_read_in_its_own_terms():
    from wrapper.routes.single_shot import ImagesRoute

    answer = {"created": 1, "data": [{"b64_json": "..."}],
              "usage": {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210,
                        "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}}}
    assert ImagesRoute().usage(answer) == {"prompt_tokens": 50, "completion_tokens": 4160}
    assert ImagesRoute().usage({"created": 1, "data": []}) is None  # priced per image: no tokens
