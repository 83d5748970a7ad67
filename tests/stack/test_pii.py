"""PII protection through the real stack: what the provider receives, what the client gets back, what is kept.

Tenant `initech` of the test stack (tests/conftest.py) pseudonymizes by default,
redacts for its `notes` endpoint and blocks for `intake`. The prompts come from
tests/data/pii_corpus.yaml: each lists the raw values it holds, by type.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.support.http import chat_body, post

CORPUS = yaml.safe_load((Path(__file__).parents[1] / "data" / "pii_corpus.yaml").read_text())
WITH_PII, CLEAN = CORPUS["with_pii"], CORPUS["clean"]
KEY_OF_MODE = {"pseudonymize": "initech-app", "redact": "initech-notes"}


def received(fake_provider, marker: str) -> str:
    """Everything the provider received in the requests that carry this marker, as one JSON text."""
    records = fake_provider.requests_containing(marker)
    assert records, f"the provider never received {marker}"
    return orjson.dumps([r["body"] for r in records]).decode()


def raw_values(case: dict) -> list[tuple[str, str]]:
    return [(entity, value) for entity, values in case["values"].items() for value in values]


def leaked(text: str, case: dict) -> list[str]:
    # The provider's side is JSON, where a private key's newlines are escaped: compare like with like.
    return [entity for entity, value in raw_values(case) if value in text or orjson.dumps(value).decode()[1:-1] in text]


@pytest.mark.parametrize("mode", ["pseudonymize", "redact"])
def test_no_raw_value_of_any_type_reaches_the_provider(stack, fake_provider, mode):
    markers = {}
    for case in WITH_PII:
        marker = f"case-{uuid.uuid4().hex}"
        response = post(stack, KEY_OF_MODE[mode], chat_body(f"{marker}\n{case['text']}"))
        assert response.status_code == 200, response.text
        markers[case["id"]] = marker
    sent = [orjson.dumps(record["body"]).decode() for record in fake_provider.log()]  # one fetch of the log
    bodies = {marker: text for marker in markers.values() for text in sent if marker in text}
    assert set(bodies) == set(markers.values()), "the provider never received some of the prompts"
    leaks = {case["id"]: leaked(bodies[markers[case["id"]]], case) for case in WITH_PII}
    assert {case_id: types for case_id, types in leaks.items() if types} == {}
    placeholder = "<EMAIL_ADDRESS_1>" if mode == "pseudonymize" else "<EMAIL_ADDRESS>"
    with_email = [case for case in WITH_PII if "EMAIL_ADDRESS" in case["values"]]
    assert all(placeholder in bodies[markers[case["id"]]] for case in with_email)


def test_prompts_without_personal_data_reach_the_provider_unchanged(stack, fake_provider):
    altered = []
    for case in CLEAN:
        marker = f"clean-{uuid.uuid4().hex}"
        text = f"{marker}\n{case['text']}"
        assert post(stack, "initech-app", chat_body(text)).status_code == 200
        sent = fake_provider.requests_containing(marker)[0]["body"]["messages"][0]["content"]
        if sent != text:
            altered.append(case["id"])
    # The false-positive rate on this corpus (bench/results/pii.md reports it per prompt set).
    assert altered == [], f"{len(altered)}/{len(CLEAN)} clean prompts were altered: {altered}"


def test_pseudonymized_values_come_back_in_a_whole_answer(stack, fake_provider):
    case = next(c for c in WITH_PII if len(c["values"]) >= 3)
    marker = f"echo-{uuid.uuid4().hex}"
    text = f"{marker}\n{case['text']}"
    response = post(stack, "initech-app", chat_body(text, "fake-echo"))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == text  # the echo, with the values restored
    assert leaked(received(fake_provider, marker), case) == []


@pytest.mark.parametrize("model", ["fake-echo", "fake-echo-chars"])
def test_pseudonymized_values_come_back_in_a_stream_split_anywhere(stack, fake_provider, model):
    """`fake-echo-chars` streams one character per event: every placeholder is split at every position."""
    case = next(c for c in WITH_PII if len(c["values"]) >= 3)
    marker = f"stream-{uuid.uuid4().hex}"
    text = f"{marker}\n{case['text']}"
    deltas = []
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=chat_body(text, model, stream=True),
                      headers=stack.auth_for("initech-app"), timeout=30) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        for choice in orjson.loads(event[6:])["choices"]:
            deltas.append(choice["delta"].get("content") or "")
    assert "".join(deltas) == text
    sent = received(fake_provider, marker)
    assert leaked(sent, case) == []
    if model == "fake-echo-chars":
        # LiteLLM passed the provider's one-character events on, so the split really happened.
        assert len([d for d in deltas if d]) > len(text) // 2


def test_block_refuses_with_the_types_found_and_forwards_nothing(stack, fake_provider):
    marker = f"block-{uuid.uuid4().hex}"
    response = post(stack, "initech-intake", chat_body(f"{marker} mail jane.roe@example.org or call +44 20 7946 0958"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "pii_detected"
    assert "EMAIL_ADDRESS" in error["message"] and "PHONE_NUMBER" in error["message"]
    assert "jane.roe" not in response.text and "7946" not in response.text
    # No wait needed: a forwarded request reaches the provider before the wrapper answers its client.
    assert fake_provider.requests_containing(marker) == []
    # The same endpoint forwards a prompt that holds nothing to block.
    assert post(stack, "initech-intake", chat_body("Summarise release 3.11.7 of 2024-05-06.")).status_code == 200


def test_every_text_the_provider_reads_is_covered(stack, fake_provider):
    """System prompt, content parts, tool-call arguments, tool results, and a tenant's own pattern."""
    marker = f"cover-{uuid.uuid4().hex}"
    body = {
        "model": "fake-chat",
        "messages": [
            {"role": "system", "content": f"{marker} Escalations go to lead.person@example.com."},
            {"role": "user", "content": [{"type": "text", "text": "Employee EMP-204518 asked about card 4111 1111 1111 1111."}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "lookup", "arguments": orjson.dumps({"phone": "+1-415-555-2671"}).decode()}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Found IBAN GB82 WEST 1234 5698 7654 32 on file."},
        ],
    }
    assert post(stack, "initech-app", body).status_code == 200
    sent = received(fake_provider, marker)
    for value in ("lead.person@example.com", "EMP-204518", "4111 1111 1111 1111", "415-555-2671", "GB82 WEST"):
        assert value not in sent
    for placeholder in ("<EMAIL_ADDRESS_1>", "<EMPLOYEE_ID_1>", "<CREDIT_CARD_1>", "<PHONE_NUMBER_1>", "<IBAN_CODE_1>"):
        assert placeholder in sent


def test_embeddings_input_is_redacted(stack, fake_provider):
    marker = f"embed-{uuid.uuid4().hex}"
    body = {"model": "fake-embed", "input": [f"{marker} contact ops@example.net", "nothing personal here"]}
    response = post(stack, "initech-app", body, path="/v1/embeddings")
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    sent = received(fake_provider, marker)
    assert "ops@example.net" not in sent and "<EMAIL_ADDRESS_1>" in sent
    tokens = post(stack, "initech-app", {"model": "fake-embed", "input": [[101, 2023, 102]]}, path="/v1/embeddings")
    assert tokens.status_code == 400 and tokens.json()["error"]["code"] == "pii_unscannable_input"


def test_the_audit_record_has_types_and_counts_and_never_a_value(stack):
    case = next(c for c in WITH_PII if len(c["values"]) >= 3 and "EMAIL_ADDRESS" in c["values"])
    email = case["values"]["EMAIL_ADDRESS"][0]
    request_id = f"pii-{uuid.uuid4().hex[:16]}"
    text = f"{case['text']}\nAgain: {email}"
    response = post(stack, "initech-app", chat_body(text, "fake-echo"), **{"x-request-id": request_id})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == text  # the client got the values back
    audit = httpx.get(f"{stack.url}/v1/audit/events/{request_id}", headers=stack.auth_for("initech-auditor"), timeout=30)
    assert audit.status_code == 200, audit.text
    record = audit.json()["data"][0]["record"]
    assert record["pii"]["action"] == "pseudonymize"
    found = record["pii"]["found"]
    assert set(case["values"]) <= set(found)
    assert found["EMAIL_ADDRESS"] == sum(text.count(v) for v in set(case["values"]["EMAIL_ADDRESS"]))  # each occurrence
    # The tenant keeps full content: the redacted request and the answer as the provider gave it.
    assert record["content"]["policy"] == "full"
    assert "<EMAIL_ADDRESS_1>" in orjson.dumps(record["content"]).decode()
    assert leaked(orjson.dumps(record).decode(), case) == []
