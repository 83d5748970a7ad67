"""Routes beyond chat and embeddings through the whole stack, with the official openai SDK: legacy completions,
one model's lookup, and what a wrong path gets."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.audit_db import the_record
from tests.support.contract import contract_routes, routes_named
from tests.support.fake_provider import DEFAULT_REPLY, image_url, moderation_result
from tests.support.stack import COST_EACH, PRICE_PER_CHARACTER, PRICE_PER_IMAGE, TOKENS_IN, TOKENS_OUT


def test_a_completion_whole_and_streamed_is_the_providers_answer_with_its_tokens_and_price(stack, openai_client):
    request_id = uuid.uuid4().hex
    answer = openai_client.completions.create(model="fake-chat", prompt="Say something.",
                                              extra_headers={"x-request-id": request_id})
    assert answer.choices[0].text == DEFAULT_REPLY and answer.object == "text_completion"
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["tokens_in"], record["tokens_out"]) == \
        ("/v1/completions", 200, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH)

    request_id = uuid.uuid4().hex
    chunks = list(openai_client.completions.create(model="fake-chat", prompt="Say something.", stream=True,
                                                   extra_headers={"x-request-id": request_id}))
    assert "".join(c.choices[0].text or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage: the gateway's request is its own
    record = the_record(stack.database_url, request_id, wait_seconds=5)
    assert (record["stream"], record["tokens_in"], record["tokens_out"]) == (True, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH)


@pytest.mark.parametrize("stream", [False, True])
def test_pii_in_the_prompt_never_reaches_the_provider_and_comes_back_restored(stack, fake_provider, stream):
    from openai import OpenAI

    marker = uuid.uuid4().hex  # 8 hex characters can be all digits: a number PII may replace
    prompt = f"{marker}: write to jane.doe@example.com about EMP-123456"
    with OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["initech-app"], max_retries=0, timeout=30) as client:
        answer = client.completions.create(model="fake-echo", prompt=prompt, stream=stream)
        text = "".join(c.choices[0].text or "" for c in answer if c.choices) if stream else answer.choices[0].text
    [sent] = [r for r in fake_provider.log() if marker in str(r["body"])]
    assert "jane.doe@example.com" not in str(sent["body"]) and "EMP-123456" not in str(sent["body"])
    assert "jane.doe@example.com" in text and "EMP-123456" in text  # pseudonyms restored for the client


@pytest.mark.parametrize("body, code", [
    ({"model": "fake-chat", "prompt": "hi", "fallbacks": ["globex-private"]}, "unsupported_parameter"),
    ({"model": "fake-chat", "prompt": "hi", "mock_response": "free"}, "unsupported_parameter"),
    ({"model": "globex-private", "prompt": "hi"}, "model_not_allowed"),
    ({"model": "fake-chat", "prompt": {"nested": "x"}}, "invalid_type"),
    ({"model": "fake-chat"}, "missing_required_parameter"),
], ids=["fallbacks", "mock_response", "other-tenants-model", "prompt-object", "no-prompt"])
def test_what_a_client_may_not_send_on_completions_is_refused_by_name(stack, fake_provider, body, code):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/completions", json=body, headers=stack.auth, timeout=30)
    assert reply.status_code in (400, 403) and reply.json()["error"]["code"] == code, reply.text
    assert len(fake_provider.log()) == before


def test_token_id_prompts_are_refused_where_pii_must_read_them(stack):
    reply = httpx.post(f"{stack.url}/v1/completions", json={"model": "fake-echo", "prompt": [1, 2, 3]}, timeout=30,
                       headers={"authorization": f"Bearer {stack.keys['initech-app']}"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"


def test_one_model_is_found_when_the_tenant_may_use_it_and_does_not_exist_otherwise(stack, openai_client):
    import openai

    assert openai_client.models.retrieve("fake-chat").id == "fake-chat"
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.models.retrieve("globex-private")  # globex's: for acme it does not exist
    assert missing.value.body["code"] == "model_not_found"
    globex = httpx.get(f"{stack.url}/v1/models/globex-private", timeout=10, headers=stack.auth_for("globex-app"))
    assert globex.status_code == 200 and globex.json()["id"] == "globex-private"
    assert httpx.get(f"{stack.url}/v1/models/fake-chat", timeout=10).status_code == 401


@pytest.mark.parametrize("model", ["x" * 5000, "..%2F..%2Fv1%2Fcosts", "fake-chat%2F..%2Fglobex-private", "%00", "*", "fake-chat,globex-private"],
                         ids=["huge", "traversal", "dotdot-other-tenant", "nul", "star", "comma-list"])
def test_a_hostile_model_lookup_is_a_404_and_nothing_else(stack, model):
    reply = httpx.get(f"{stack.url}/v1/models/{model}", timeout=10, headers=stack.auth)
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] in ("model_not_found", "route_not_found")
    assert httpx.get(f"{stack.url}/v1/models/fake-chat", timeout=10, headers=stack.auth).status_code == 200


def test_a_wrong_path_is_a_404_that_names_the_routes_there_are(stack):
    reply = httpx.post(f"{stack.url}/v1/chat/completion", json={}, headers=stack.auth, timeout=10)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "route_not_found"
    # Every route the gateway serves, each once: those of the README's Contract table, which the unit tier checks
    # against the app's own routes (tests/unit/test_layout.py).
    named = routes_named(reply.json()["error"]["message"])
    assert sorted(named) == sorted(contract_routes())


def _without_nulls(value):
    """A JSON value less its null members, at any depth."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def test_a_moderation_is_the_providers_verdict_whole_and_is_recorded_free(stack, fake_provider):
    request_id, marker = uuid.uuid4().hex, uuid.uuid4().hex
    inputs = [f"hello there {marker}", f"attack at dawn {marker}"]
    reply = httpx.post(f"{stack.url}/v1/moderations", headers={**stack.auth, "x-request-id": request_id}, timeout=30,
                       json={"model": "fake-chat", "input": inputs})
    assert reply.status_code == 200, reply.text
    [sent] = fake_provider.requests_containing(marker)
    answer = reply.json()
    assert (answer["id"], answer["model"]) == (f"modr-fake-{sent['id']}", "fake-chat")
    # Each result is the provider's: flags, categories and scores. LiteLLM 1.108.5 lists every OpenAI category in
    # its answer, null where the provider said nothing (and `category_applied_input_types: null`): those aside.
    assert _without_nulls(answer["results"]) == [moderation_result(text) for text in inputs]
    assert [result["flagged"] for result in answer["results"]] == [False, True]
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["model"]) == ("/v1/moderations", 200, "fake-chat")
    # fake-chat has per-token prices, yet a moderation is billed nothing: LiteLLM 1.108.5 counts no usage for it (its
    # callbacks get 0 tokens and cost 0.0; OpenAI's moderations are free) and sends no x-litellm-response-cost, and
    # the provider's answer has no usage. So the record has no tokens and no cost, and /v1/costs counts the request
    # at 0 (tests/stack/test_costs.py).
    assert "x-litellm-response-cost" not in reply.headers
    assert (record["tokens_in"], record["tokens_out"], record["cost"]) == (None, None, None)


def test_images_are_the_providers_urls_and_revised_prompts_and_are_priced_per_image(stack, openai_client, fake_provider):
    request_id, prompt = uuid.uuid4().hex, f"a quick brown fox {uuid.uuid4().hex}"
    images = openai_client.images.generate(model="fake-image", prompt=prompt, n=2,
                                           extra_headers={"x-request-id": request_id})
    [sent] = fake_provider.requests_containing(prompt)
    assert [(image.url, image.revised_prompt) for image in images.data] == \
        [(image_url(sent["id"], 0), prompt), (image_url(sent["id"], 1), prompt)]
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"]) == ("/v1/images/generations", 200)
    assert record["cost"] == pytest.approx(2 * PRICE_PER_IMAGE)  # priced per image


def test_pii_in_moderation_inputs_and_image_prompts_never_reaches_the_provider(stack, fake_provider):
    from openai import OpenAI

    marker = uuid.uuid4().hex  # 8 hex characters can be all digits: a number PII may replace
    with OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["initech-app"], max_retries=0, timeout=30) as client:
        client.moderations.create(model="fake-chat", input=[f"{marker} call jane.doe@example.com"])
        images = client.images.generate(model="fake-chat", prompt=f"{marker} a portrait of EMP-123456")
    sent = [r["body"] for r in fake_provider.log() if marker in str(r["body"])]
    assert len(sent) == 2 and "jane.doe@example.com" not in str(sent) and "EMP-123456" not in str(sent)
    assert "EMP-123456" in images.data[0].revised_prompt  # the model's echo of the prompt, restored for the client


@pytest.mark.parametrize("path, body", [
    ("/v1/moderations", {"model": "fake-chat", "input": "x", "fallbacks": ["globex-private"]}),
    ("/v1/images/generations", {"model": "fake-chat", "prompt": "x", "api_base": "http://evil.test"}),
    ("/v1/images/generations", {"model": "globex-private", "prompt": "x"}),
], ids=["moderation-fallbacks", "images-api-base", "images-other-tenants-model"])
def test_moderations_and_images_refuse_what_a_client_may_not_send(stack, fake_provider, path, body):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}{path}", json=body, headers=stack.auth, timeout=30)
    assert reply.status_code in (400, 403) and "error" in reply.json()
    assert len(fake_provider.log()) == before


def test_speech_flows_through_as_audio_with_its_content_type_and_is_recorded(stack, openai_client):
    from tests.support.fake_provider import SPEECH_HEADER

    request_id = uuid.uuid4().hex
    audio = openai_client.audio.speech.create(model="fake-tts", voice="alloy", input="hello there",
                                              extra_headers={"x-request-id": request_id})
    assert audio.content == SPEECH_HEADER + b"hello there"
    assert audio.response.headers["content-type"].startswith("audio/")
    record = the_record(stack.database_url, request_id, wait_seconds=5)
    assert (record["path"], record["status"], record["outcome"]) == ("/v1/audio/speech", 200, "ok")
    assert record["cost"] == pytest.approx(len("hello there") * PRICE_PER_CHARACTER)  # priced per character


def test_pii_is_redacted_before_it_is_spoken(stack, fake_provider):
    from openai import OpenAI

    marker = uuid.uuid4().hex  # 8 hex characters can be all digits: a number PII may replace
    with OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["initech-notes"], max_retries=0, timeout=30) as client:
        audio = client.audio.speech.create(model="fake-chat", voice="alloy", input=f"{marker} call jane.doe@example.com")
    [sent] = [r["body"] for r in fake_provider.log() if marker in str(r["body"])]
    assert "jane.doe@example.com" not in str(sent) and b"jane.doe@example.com" not in audio.content


@pytest.mark.parametrize("body", [
    {"model": "fake-chat", "voice": "alloy", "input": "x", "stream_format": "sse"},
    {"model": "fake-chat", "voice": "alloy", "input": "x" * 4097},
    {"model": "fake-chat", "voice": "alloy", "input": "x", "mock_response": "free"},
    {"model": "globex-private", "voice": "alloy", "input": "x"},
], ids=["sse", "too-long", "mock_response", "other-tenants-model"])
def test_speech_refuses_what_a_client_may_not_send(stack, fake_provider, body):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/audio/speech", json=body, headers=stack.auth, timeout=30)
    assert reply.status_code in (400, 403) and "error" in reply.json()
    assert len(fake_provider.log()) == before
