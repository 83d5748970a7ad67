"""Rerank (Cohere's API) and audio transcriptions (a multipart upload) through the whole stack: the provider's
answer, its usage and price in the record, PII kept from the provider, and what a client may not send."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.audit_db import the_record
from tests.support.stack import PRICE_PER_QUERY, PRICES, TOKENS_IN, TOKENS_OUT

DOCUMENTS = ["The lighthouse keeper", "A recipe for bread", "Keeper of the lighthouse log"]


def test_rerank_ranks_as_the_provider_did_and_is_priced_per_query(stack):
    request_id = uuid.uuid4().hex
    reply = httpx.post(f"{stack.url}/v1/rerank", headers={**stack.auth, "x-request-id": request_id}, timeout=30,
                       json={"model": "fake-rerank", "query": "lighthouse keeper", "documents": DOCUMENTS, "top_n": 2,
                             "return_documents": True})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["index"] for r in results] == [0, 2] and results[0]["document"]["text"] == DOCUMENTS[0]
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["tokens_in"]) == ("/v1/rerank", 200, TOKENS_IN)
    assert record["cost"] == pytest.approx(PRICE_PER_QUERY)


def test_pii_in_a_rerank_query_and_documents_never_reaches_the_provider_and_returned_documents_are_restored(
        stack, fake_provider):
    marker = uuid.uuid4().hex
    documents = [f"{marker} mail jane.doe@example.com", "nothing here"]
    reply = httpx.post(f"{stack.url}/v1/rerank", headers=stack.auth_for("initech-app"), timeout=30,
                       json={"model": "fake-rerank", "query": "who is EMP-123456", "documents": documents,
                             "return_documents": True})
    assert reply.status_code == 200, reply.text
    [sent] = fake_provider.requests_containing(marker)
    assert "jane.doe@example.com" not in str(sent["body"]) and "EMP-123456" not in str(sent["body"])
    assert {r["document"]["text"] for r in reply.json()["results"]} == set(documents)


def test_a_transcription_is_the_providers_with_its_tokens_and_price(stack, openai_client, fake_provider):
    request_id = uuid.uuid4().hex
    spoken = f"Meeting notes {request_id}"
    transcript = openai_client.audio.transcriptions.create(
        model="fake-whisper", file=("notes.mp3", spoken.encode(), "audio/mpeg"), language="en", temperature=0.2,
        extra_headers={"x-request-id": request_id})
    assert transcript.text == spoken  # the fake "transcribes" the bytes it was sent: the file arrived whole
    [sent] = [r for r in fake_provider.log() if r["path"].endswith("/audio/transcriptions")
              and r["body"].get("file_bytes") == len(spoken)]
    assert sent["body"]["language"] == "en" and "gateway_seal" not in str(sent["body"])
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["tokens_in"], record["tokens_out"]) == \
        ("/v1/audio/transcriptions", 200, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(TOKENS_IN * PRICES["input"] + TOKENS_OUT * PRICES["output"])


def test_pii_in_a_transcription_prompt_never_reaches_the_provider(stack, fake_provider):
    from openai import OpenAI

    marker = uuid.uuid4().hex
    with OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["initech-app"], max_retries=0, timeout=30) as client:
        client.audio.transcriptions.create(model="fake-whisper", file=("a.wav", marker.encode(), "audio/wav"),
                                           prompt="Names: jane.doe@example.com, EMP-123456")
    [sent] = [r for r in fake_provider.log() if r["body"].get("file_bytes") == len(marker)
              and "Names" in str(r["body"].get("prompt"))]
    assert "jane.doe@example.com" not in sent["body"]["prompt"] and "EMP-123456" not in sent["body"]["prompt"]


@pytest.mark.parametrize("fields, files, code", [
    ({"model": "fake-whisper", "fallbacks": "globex-private"}, {"file": ("a.mp3", b"x")}, "unsupported_parameter"),
    ({"model": "fake-whisper", "metadata": '{"gateway_tenant_id": "globex"}'}, {"file": ("a.mp3", b"x")},
     "unsupported_parameter"),
    ({}, {"model": (None, "fake-whisper")}, "missing_required_parameter"),  # multipart, no file
    ({"model": "fake-whisper", "temperature": "hot"}, {"file": ("a.mp3", b"x")}, "invalid_type"),
    ({"model": "fake-whisper"}, {"file": ("a.mp3", b"x"), "other": ("b.mp3", b"y")}, None),
    ({"model": "globex-private"}, {"file": ("a.mp3", b"x")}, "model_not_allowed"),
], ids=["fallbacks", "metadata", "no-file", "bad-number", "two-files", "other-tenants-model"])
def test_what_a_client_may_not_send_with_an_upload_is_refused(stack, fake_provider, fields, files, code):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/audio/transcriptions", data=fields, files=files, headers=stack.auth, timeout=30)
    assert reply.status_code in (400, 403), reply.text
    assert code is None or reply.json()["error"]["code"] == code, reply.text
    assert len(fake_provider.log()) == before


def test_an_upload_larger_than_the_limit_is_a_413_and_json_is_a_400(stack):
    reply = httpx.post(f"{stack.url}/v1/audio/transcriptions", json={"model": "fake-whisper"}, headers=stack.auth,
                       timeout=30)
    assert reply.status_code == 400 and "multipart" in reply.json()["error"]["message"]
    big = b"\0" * (20 * 1024 * 1024 + 1)  # GATEWAY_MAX_BODY_BYTES' default, plus one
    reply = httpx.post(f"{stack.url}/v1/audio/transcriptions", data={"model": "fake-whisper"}, timeout=60,
                       files={"file": ("big.wav", big)}, headers=stack.auth)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("body", [
    {"model": "fake-rerank", "query": "q", "documents": []},
    {"model": "fake-rerank", "query": "q", "documents": [{"text": {"nested": "x"}}]},
    {"model": "fake-rerank", "query": "q", "documents": ["a"], "api_base": "http://evil"},
], ids=["no-documents", "nested-document", "api_base"])
def test_rerank_refuses_what_a_client_may_not_send(stack, fake_provider, body):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/rerank", json=body, headers=stack.auth, timeout=30)
    assert reply.status_code == 400, reply.text
    assert len(fake_provider.log()) == before
