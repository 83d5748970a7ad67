"""PII protection on every route beyond chat: corpus prompts (tests/data/pii_corpus.yaml) covering every entity type,
placed in each text field of each route for `initech` (pseudonymize). No raw value reaches the provider, and where the
model repeats the text (the echoing fake), the client reads every value back, whole answers and streams alike."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.stack.test_pii import leaked
from tests.stack.test_pii_fields import CASES


def _said(text: str, marker: str) -> str:
    return f"{marker}\n{text}"


# route -> place -> the request body for a value and a marker (the marker is what finds the provider's request).
PLACES = {
    "/v1/completions": {
        "prompt": lambda v, m: {"model": "fake-echo", "prompt": _said(v, m)},
        "prompt list": lambda v, m: {"model": "fake-echo", "prompt": [m, v]},
        "suffix": lambda v, m: {"model": "fake-echo", "prompt": m, "suffix": v},
    },
    "/v1/responses": {
        "input": lambda v, m: {"model": "fake-echo", "input": _said(v, m)},
        "input parts": lambda v, m: {"model": "fake-echo", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": _said(v, m)}]}]},
        "instructions": lambda v, m: {"model": "fake-echo", "input": m, "instructions": v},
        "function call and output": lambda v, m: {"model": "fake-echo", "input": [
            {"type": "function_call", "call_id": "c1", "name": "note", "arguments": orjson.dumps({"t": v}).decode()},
            {"type": "function_call_output", "call_id": "c1", "output": v}, {"role": "user", "content": m}]},
        "tool description and schema": lambda v, m: {"model": "fake-echo", "input": m, "tools": [
            {"type": "function", "name": "note", "description": v,
             "parameters": {"type": "object", "properties": {"t": {"type": "string", "description": v}}}}]},
        "text format schema": lambda v, m: {"model": "fake-echo", "input": m, "text": {"format": {
            "type": "json_schema", "name": "r", "description": v, "schema": {"type": "object", "description": v}}}},
    },
    "/v1/messages": {
        "user text": lambda v, m: {"model": "fake-echo", "max_tokens": 50, "messages": [
            {"role": "user", "content": _said(v, m)}]},
        "system": lambda v, m: {"model": "fake-echo", "max_tokens": 50, "system": v,
                                "messages": [{"role": "user", "content": m}]},
        "system blocks": lambda v, m: {"model": "fake-echo", "max_tokens": 50, "system": [{"type": "text", "text": v}],
                                       "messages": [{"role": "user", "content": m}]},
        "tool use and result": lambda v, m: {"model": "fake-echo", "max_tokens": 50, "messages": [
            {"role": "user", "content": "look"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "note", "input": {"t": v}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": v},
                                         {"type": "text", "text": m}]}]},
        "tool description": lambda v, m: {"model": "fake-echo", "max_tokens": 50, "messages": [
            {"role": "user", "content": m}], "tools": [{"name": "note", "description": v,
                                                        "input_schema": {"type": "object", "description": v}}]},
    },
    "/v1/rerank": {
        "query and documents": lambda v, m: {"model": "fake-rerank", "query": v, "documents": [m, v]},
    },
    "/v1/embeddings": {
        "input": lambda v, m: {"model": "fake-embed", "input": _said(v, m)},
        "input list": lambda v, m: {"model": "fake-embed", "input": [m, v]},
    },
    "/v1/moderations": {
        "input": lambda v, m: {"model": "fake-echo", "input": [m, v]},
    },
    "/v1/images/generations": {
        "prompt": lambda v, m: {"model": "fake-echo", "prompt": _said(v, m)[:32000]},
    },
    # Pseudonymized speech speaks the placeholders (audio cannot be restored), but no value reaches the provider.
    # The fake answers speech for any model name: fake-chat is one initech may use.
    "/v1/audio/speech": {
        "input": lambda v, m: {"model": "fake-chat", "voice": "alloy", "input": _said(v, m)},
        "instructions": lambda v, m: {"model": "fake-chat", "voice": "alloy", "input": m, "instructions": v},
    },
}
CASES_BY_PLACE = [(route, place) for route, places in PLACES.items() for place in places]


@pytest.mark.parametrize("route, place", CASES_BY_PLACE, ids=[f"{r[4:]}:{p}" for r, p in CASES_BY_PLACE])
def test_no_raw_value_reaches_the_provider_from_any_field_of_any_route(stack, fake_provider, route, place):
    sent = {}
    for case in CASES:
        marker = f"field-{uuid.uuid4().hex}"
        response = httpx.post(f"{stack.url}{route}", json=PLACES[route][place](case["text"], marker), timeout=30,
                              headers=stack.auth_for("initech-app"))
        assert response.status_code == 200, response.text
        [received] = fake_provider.requests_containing(marker)
        sent[case["id"]] = orjson.dumps(received["body"]).decode()
    assert {case["id"]: leaked(sent[case["id"]], case) for case in CASES if leaked(sent[case["id"]], case)} == {}
    assert any("_1>" in text for text in sent.values())  # placeholders took the values' place


def test_no_raw_value_reaches_the_provider_from_a_transcription_prompt(stack, fake_provider):
    sent = {}
    for case in CASES:
        marker = f"field-{uuid.uuid4().hex}"
        response = httpx.post(f"{stack.url}/v1/audio/transcriptions", headers=stack.auth_for("initech-app"),
                              timeout=30, data={"model": "fake-whisper", "prompt": _said(case["text"], marker)},
                              files={"file": ("a.wav", b"audio")})
        assert response.status_code == 200, response.text
        [received] = fake_provider.requests_containing(marker)
        sent[case["id"]] = orjson.dumps(received["body"]).decode()
    assert {case["id"]: leaked(sent[case["id"]], case) for case in CASES if leaked(sent[case["id"]], case)} == {}


def _echoed(client_kind: str, stream: bool, text: str, client) -> str:
    """What the echoing model said back to the client, as the client reads it."""
    if client_kind == "completions":
        answer = client.completions.create(model="fake-echo", prompt=text, stream=stream)
        return "".join(c.choices[0].text or "" for c in answer if c.choices) if stream else answer.choices[0].text
    if client_kind == "responses":
        if stream:
            with client.responses.stream(model="fake-echo-chars", input=text) as events:
                deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
                assert deltas == events.get_final_response().output_text  # the deltas and the whole copy agree
                return deltas
        return client.responses.create(model="fake-echo", input=text).output_text
    request = dict(model="fake-echo-chars" if stream else "fake-echo", max_tokens=50,
                   messages=[{"role": "user", "content": text}])
    if stream:
        with client.messages.stream(**request) as events:
            return "".join(events.text_stream)
    return client.messages.create(**request).content[0].text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["completions", "responses", "messages"])
def test_every_value_the_model_repeats_is_restored_for_the_client(stack, kind, stream):
    """Streams of fake-echo-chars come one character per event: every placeholder is cut across events."""
    from anthropic import Anthropic
    from openai import OpenAI

    key = stack.keys["initech-app"]
    client = (Anthropic(base_url=stack.url, api_key=key, max_retries=0, timeout=60) if kind == "messages" else
              OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=60))
    with client:
        for case in CASES:
            text = _said(case["text"], uuid.uuid4().hex)
            assert _echoed(kind, stream, text, client) == text, case["id"]
