"""PII protection covers every field a provider reads, not only message contents (issue 12, item 7).

Corpus prompts (tests/data/pii_corpus.yaml) covering every entity type are placed, one field at a time, in each
field of a chat request of `initech` (pseudonymize); no raw value may reach the provider or the audit record.
"""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.stack.test_pii import WITH_PII, leaked


def covering_cases() -> list[dict]:
    """A few corpus prompts that hold, between them, a value of every entity type in the corpus."""
    wanted = {entity for case in WITH_PII for entity in case["values"]}
    chosen = []
    for case in sorted(WITH_PII, key=lambda c: -len(c["values"])):
        if wanted & set(case["values"]):
            chosen.append(case)
            wanted -= set(case["values"])
    return chosen


CASES = covering_cases()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# Where a value may sit, as the body fields that carry it (the marker stays in a plain user message).
PLACES = {
    "message name": lambda v: {"messages": [{"role": "user", "name": line, "content": "hi"} for line in _lines(v)]},
    "text part": lambda v: {"messages": [{"role": "user", "content": [{"type": "text", "text": v}]}]},
    "assistant refusal": lambda v: {"messages": [user("hi"), {"role": "assistant", "content": None, "refusal": v},
                                                 user("and now?")]},
    "refusal part": lambda v: {"messages": [user("hi"), {"role": "assistant", "content": [{"type": "refusal", "refusal": v}]},
                                            user("and now?")]},
    "reasoning": lambda v: {"messages": [user("hi"), {"role": "assistant", "content": "ok", "reasoning_content": v},
                                         user("and now?")]},
    "tool call arguments and result": lambda v: {"messages": [
        user("hi"), {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "note", "arguments": orjson.dumps({"text": v}).decode()}}]},
        {"role": "tool", "tool_call_id": "c1", "content": v}]},
    "tool description": lambda v: {"tools": [{"type": "function", "function": {"name": "note", "description": v}}]},
    "tool parameter schema": lambda v: {"tools": [{"type": "function", "function": {"name": "note", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "description": v, "enum": [v], "default": v}}}}}]},
    "legacy function": lambda v: {"functions": [{"name": "note", "description": v, "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "examples": [v]}}}}]},
    "response_format schema": lambda v: {"response_format": {"type": "json_schema", "json_schema": {
        "name": "reply", "description": v, "schema": {"type": "object", "description": v,
                                                     "properties": {"text": {"type": "string", "const": v}}}}}},
    "stop": lambda v: {"stop": [v, "END"]},
    "prediction": lambda v: {"prediction": {"type": "content", "content": v}},
    "prediction parts": lambda v: {"prediction": {"type": "content", "content": [{"type": "text", "text": v}]}},
    "user": lambda v: [{"user": line} for line in _lines(v)],  # a field of one short value: a request per line
    "metadata": lambda v: {"metadata": {f"note{i}": chunk for i, chunk in enumerate(_chunks(v))}},
    "the tenant's own field": lambda v: {"vendor_options": {"hints": [v]}},
}


def _lines(text: str) -> list[str]:
    """The prompt's lines, cut to what fields of a short value hold (256 characters). A value longer than that
    (a PEM key, a long token) is never whole in one of them, so it can neither leak from these places nor be found."""
    return [line[start:start + 256] for line in text.splitlines() if line.strip() for start in range(0, len(line), 256)]


def _chunks(text: str, size: int = 500) -> list[str]:
    """Whole lines, in pieces a metadata value may hold (512 characters)."""
    chunks = [""]
    for line in text.splitlines(keepends=True):
        if len(chunks[-1]) + len(line) > size:
            chunks.append("")
        chunks[-1] += line[:size]
    return chunks[:16]


@pytest.mark.parametrize("place", PLACES)
def test_no_raw_value_reaches_the_provider_from_any_field(stack, fake_provider, place):
    sent, records = {}, {}
    for case in CASES:
        placed = PLACES[place](case["text"])
        sent[case["id"]] = records[case["id"]] = ""
        for fields in placed if isinstance(placed, list) else [placed]:
            marker = f"field-{uuid.uuid4().hex}"
            body = {"model": "fake-chat", **fields}
            body["messages"] = [user(marker), *body.get("messages", [])]
            response = httpx.post(f"{stack.url}/v1/chat/completions", json=body, timeout=30,
                                  headers={**stack.auth_for("initech-app"), "x-request-id": marker})
            assert response.status_code == 200, response.text
            [received] = fake_provider.requests_containing(marker)
            sent[case["id"]] += orjson.dumps(received["body"]).decode()
            audit = httpx.get(f"{stack.url}/v1/audit/events/{marker}", headers=stack.auth_for("initech-auditor"),
                              timeout=30)
            records[case["id"]] += orjson.dumps(audit.json()["data"][0]["record"]).decode()
    assert {case["id"]: leaked(sent[case["id"]], case) for case in CASES if leaked(sent[case["id"]], case)} == {}
    assert {case["id"]: leaked(records[case["id"]], case) for case in CASES if leaked(records[case["id"]], case)} == {}
    # Placeholders took the values' place (metadata and `user` are LiteLLM's own: the provider is not sent them).
    assert any("_1>" in text for text in sent.values()) or place in ("metadata", "user")
    assert any("_1>" in text for text in records.values())
