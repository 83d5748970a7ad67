"""The OpenAI Responses API through the whole stack, with the official openai SDK and langchain-openai unchanged:
create (whole and streamed), retrieve, input items, delete, `previous_response_id`; response and item ids belong
to the tenant that created them; PII pseudonymized and restored; usage and cost from the route's own shape."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest

from tests.support.audit_db import the_record
from tests.support.fake_provider import DEFAULT_REPLY
from tests.support.stack import COST_EACH, TOKENS_IN, TOKENS_OUT


def _client(stack, key: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys[key], max_retries=0, timeout=30)


def test_a_response_whole_is_the_providers_with_its_tokens_and_price(stack, openai_client):
    request_id = uuid.uuid4().hex
    response = openai_client.responses.create(model="fake-chat", input="Say something.", instructions="Be brief.",
                                              metadata={"ticket": "T-1"}, extra_headers={"x-request-id": request_id})
    assert response.output_text == DEFAULT_REPLY and response.status == "completed"
    assert response.metadata == {"ticket": "T-1"}  # the API's own metadata reaches the provider and comes back
    assert (response.usage.input_tokens, response.usage.output_tokens) == (TOKENS_IN, TOKENS_OUT)
    record = the_record(stack.database_url, request_id)
    assert (record["path"], record["status"], record["tokens_in"], record["tokens_out"]) == \
        ("/v1/responses", 200, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH)


def test_a_streamed_response_has_its_events_text_usage_and_price(stack, openai_client):
    request_id = uuid.uuid4().hex
    with openai_client.responses.stream(model="paced", input="Say something.",
                                        extra_headers={"x-request-id": request_id}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 5  # paced: five pieces, each passed on as it came
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == DEFAULT_REPLY
    assert final.output_text == DEFAULT_REPLY and final.id == events[0].response.id
    record = the_record(stack.database_url, request_id, wait_seconds=5)
    assert (record["stream"], record["status"], record["tokens_in"], record["tokens_out"]) == \
        (True, 200, TOKENS_IN, TOKENS_OUT)
    assert record["cost"] == pytest.approx(COST_EACH) and record["ttft_ms"] is not None


def test_a_stored_response_is_retrieved_listed_continued_and_deleted_by_its_tenant(stack, openai_client, fake_provider):
    import openai

    first = openai_client.responses.create(model="fake-echo", input="Remember the word lighthouse.")
    assert first.id.startswith("resp_")
    again = openai_client.responses.retrieve(first.id)
    assert again.output_text == first.output_text == "Remember the word lighthouse."
    assert again.output[0].id == first.output[0].id  # item ids, sealed, are stable too
    items = openai_client.responses.input_items.list(first.id)
    assert [item.content[0].text for item in items.data] == ["Remember the word lighthouse."]

    follow_up = openai_client.responses.create(model="fake-echo", input="Which word?", previous_response_id=first.id)
    assert follow_up.previous_response_id == first.id  # the client sees its own ids, never the provider's
    [sent] = [r for r in fake_provider.log() if r["body"].get("input") == "Which word?"]
    assert sent["body"]["previous_response_id"].startswith("resp_fake")  # the provider sees its own

    deleted = httpx.delete(f"{stack.url}/v1/responses/{first.id}", headers=stack.auth, timeout=30)
    # The provider's answer to the delete, with the id the client knows the response by (never the provider's)
    assert (deleted.status_code, deleted.json()) == (200, {"id": first.id, "object": "response", "deleted": True})
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(first.id)
    for method in ("GET", "DELETE"):  # gone at the provider; said with the client's id, not the provider's
        gone = httpx.request(method, f"{stack.url}/v1/responses/{first.id}", headers=stack.auth, timeout=30)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found", gone.text
        assert "resp_fake" not in gone.text and first.id[:200] in gone.json()["error"]["message"]
    # Continuing it: the provider's 404, in the client's terms. A model of its own, and once: LiteLLM 1.108.5 puts a
    # deployment in cooldown (5 s, for every tenant) on a provider's 404
    follow = httpx.post(f"{stack.url}/v1/responses", headers=stack.auth, timeout=30,
                        json={"model": "fake-echo-continues", "input": "And now?", "previous_response_id": first.id})
    assert follow.status_code == 404, follow.text
    error = follow.json()["error"]
    assert (error["code"], error["param"]) == ("previous_response_not_found", "previous_response_id")
    assert "resp_fake" not in follow.text and first.id[:200] in error["message"]


def test_another_tenants_response_does_not_exist_for_a_tenant(stack, openai_client, fake_provider):
    """Whatever the provider would do with the id (it holds both tenants' responses under one account)."""
    import openai

    theirs = openai_client.responses.create(model="fake-chat", input="acme's secret plan")
    before = len(fake_provider.log())
    with _client(stack, "globex-app") as globex:
        for attempt in (lambda: globex.responses.retrieve(theirs.id),
                        lambda: globex.responses.input_items.list(theirs.id),
                        lambda: globex.responses.delete(theirs.id),
                        lambda: globex.responses.create(model="fake-chat", input="and then?",
                                                        previous_response_id=theirs.id)):
            with pytest.raises(openai.NotFoundError):
                attempt()
    assert len(fake_provider.log()) == before  # refused before any call upstream
    assert openai_client.responses.retrieve(theirs.id).output_text == DEFAULT_REPLY  # still there for acme


@pytest.mark.parametrize("forged", [
    "resp_fake00000001",  # the provider's own form of an id: never accepted as is
    "resp_" + "A" * 60,  # looks sealed, is not
    "resp_" + "x" * 5000,  # oversized
    "resp_..%2F..%2Fmodels",  # a path where an id should be
])
def test_a_forged_response_id_is_a_404_and_nothing_reaches_the_provider(stack, fake_provider, forged):
    before = len(fake_provider.log())
    for method, path in (("GET", f"/v1/responses/{forged}"), ("DELETE", f"/v1/responses/{forged}"),
                         ("GET", f"/v1/responses/{forged}/input_items")):
        reply = httpx.request(method, f"{stack.url}{path}", headers=stack.auth, timeout=30)
        assert reply.status_code == 404 and "error" in reply.json(), (method, path, reply.text)
    reply = httpx.post(f"{stack.url}/v1/responses", headers=stack.auth, timeout=30,
                       json={"model": "fake-chat", "input": "hi", "previous_response_id": forged})
    assert reply.status_code in (400, 404) and reply.json()["error"]["param"] == "previous_response_id", reply.text
    assert len(fake_provider.log()) == before


def test_a_tampered_item_id_in_the_input_is_refused(stack, openai_client, fake_provider):
    first = openai_client.responses.create(model="fake-chat", input="hello")
    item = first.output[0].model_dump(exclude_none=True)
    with _client(stack, "globex-app") as globex:  # acme's item, replayed by globex
        reply = httpx.post(f"{stack.url}/v1/responses", headers=stack.auth_for("globex-app"), timeout=30,
                           json={"model": "fake-chat", "input": [item, {"role": "user", "content": "go on"}]})
    assert reply.status_code == 404 and reply.json()["error"]["param"] == "input[0].id", reply.text
    own = openai_client.responses.create(model="fake-chat", input=[item, {"role": "user", "content": "go on"}])
    assert own.output_text == DEFAULT_REPLY  # acme may pass its own item back


@pytest.mark.parametrize("body, code", [
    ({"model": "fake-chat", "input": "hi", "fallbacks": ["globex-private"]}, "unsupported_parameter"),
    ({"model": "fake-chat", "input": "hi", "litellm_metadata": {"gateway_tenant_id": "globex"}}, "unsupported_parameter"),
    ({"model": "fake-chat", "input": "hi", "mock_response": "free"}, "unsupported_parameter"),
    ({"model": "globex-private", "input": "hi"}, "model_not_allowed"),
    ({"model": "fake-chat", "input": [{"type": "nonsense"}]}, "invalid_value"),
    ({"model": "fake-chat"}, "missing_required_parameter"),
    ({"model": "fake-chat", "input": "hi", "metadata": {"k": {"nested": 1}}}, "invalid_type"),
], ids=["fallbacks", "litellm_metadata", "mock_response", "other-tenants-model", "bad-item", "no-input",
        "nested-metadata"])
def test_what_a_client_may_not_send_on_responses_is_refused_by_name(stack, fake_provider, body, code):
    before = len(fake_provider.log())
    reply = httpx.post(f"{stack.url}/v1/responses", json=body, headers=stack.auth, timeout=30)
    assert reply.status_code in (400, 403) and reply.json()["error"]["code"] == code, reply.text
    assert len(fake_provider.log()) == before


def test_a_body_litellm_refuses_with_a_null_metadata_is_its_400_not_a_500(stack):
    """LiteLLM's error path fails on `"metadata": null` (found by the fuzz test): null is sent on as absent."""
    reply = httpx.post(f"{stack.url}/v1/responses", headers=stack.auth, timeout=30, json={
        "model": "fake-chat", "input": "hi", "metadata": None,
        "tools": [{"type": "file_search", "vector_store_ids": [""]}]})
    assert reply.status_code == 400 and "vector_store_ids" in reply.json()["error"]["message"], reply.text


@pytest.mark.parametrize("stream", [False, True])
def test_pii_in_input_and_instructions_never_reaches_the_provider_and_is_restored(stack, fake_provider, stream):
    marker = uuid.uuid4().hex
    text = f"{marker}: write to jane.doe@example.com about EMP-123456"
    with _client(stack, "initech-app") as client:
        request = dict(model="fake-echo", instructions="Reply to jane.doe@example.com only.",
                       input=[{"role": "user", "content": [{"type": "input_text", "text": text}]}])
        if stream:
            with client.responses.stream(**request) as events:
                deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
                answer = events.get_final_response().output_text
            assert deltas == answer
        else:
            answer = client.responses.create(**request).output_text
    [sent] = fake_provider.requests_containing(marker)
    assert "jane.doe@example.com" not in str(sent["body"]) and "EMP-123456" not in str(sent["body"])
    assert answer == text  # the echo, pseudonyms restored for the client


def test_langchain_with_the_responses_api_works_unchanged(stack):
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="fake-echo", base_url=f"{stack.url}/v1", api_key=stack.keys["acme-app"],
                       use_responses_api=True, max_retries=0, timeout=30)
    answer = model.invoke("Hello through langchain.")
    text = answer.text if isinstance(answer.text, str) else answer.text()  # a property in langchain-core 1.x
    assert text == "Hello through langchain."
    assert answer.response_metadata.get("id", "").startswith("resp_")  # it went the Responses way


def test_a_broken_responses_stream_ends_with_an_error_event_and_is_recorded_as_failed(stack):
    request_id = uuid.uuid4().hex
    with httpx.stream("POST", f"{stack.url}/v1/responses", headers={**stack.auth, "x-request-id": request_id},
                      json={"model": "drops", "input": "hi", "stream": True}, timeout=30) as reply:
        events = [line for line in reply.iter_lines() if line.startswith("data:")]
    assert reply.status_code == 200
    last = orjson.loads(events[-1][5:])
    # The Responses API's own ends of a failure: LiteLLM sends `response.failed` (with the error); the wrapper,
    # when the break is on its side of LiteLLM, an `error` event
    assert last["type"] in ("response.failed", "error"), events[-1]
    assert (last.get("response") or last).get("error") or last.get("message")
    assert not any('"response.completed"' in event for event in events)
    record = the_record(stack.database_url, request_id, wait_seconds=5)
    assert record["status"] == 502 and record["stream"] is True


@pytest.mark.parametrize("query, status", [
    ({"limit": "abc"}, 400), ({"limit": "1000"}, 400), ({"limit": "-1"}, 400), ({"order": "sideways"}, 400),
    ({"after": "msg_forged"}, 404), ({"before": "x" * 5000}, 404),
], ids=["limit-text", "limit-huge", "limit-negative", "order", "after-forged", "before-huge"])
def test_hostile_input_items_paging_is_refused_and_the_listing_still_works(stack, openai_client, query, status):
    first = openai_client.responses.create(model="fake-chat", input="page me")
    reply = httpx.get(f"{stack.url}/v1/responses/{first.id}/input_items", params=query, headers=stack.auth, timeout=30)
    assert reply.status_code == status and "error" in reply.json(), reply.text
    assert len(openai_client.responses.input_items.list(first.id).data) == 1


def test_continuing_deleted_responses_does_not_take_the_model_away_from_anyone(stack, openai_client):
    """The provider's 404 for a response it no longer has is the caller's error, not the deployment's: LiteLLM 1.108.5
    cooled a deployment down for every tenant on one (a tenant could take a model away from the others at will).
    The LiteLLM configs the gateway ships (and the stack's) allow 404s without cooldown."""
    gone = openai_client.responses.create(model="fake-echo", input="soon deleted")
    assert httpx.delete(f"{stack.url}/v1/responses/{gone.id}", headers=stack.auth, timeout=30).status_code == 200
    for _ in range(5):
        follow = httpx.post(f"{stack.url}/v1/responses", headers=stack.auth, timeout=30,
                            json={"model": "fake-echo-continues", "input": "again?", "previous_response_id": gone.id})
        assert follow.status_code == 404, follow.text
    after = httpx.post(f"{stack.url}/v1/chat/completions", headers=stack.auth, timeout=30,
                       json={"model": "fake-echo-continues", "messages": [{"role": "user", "content": "still there?"}]})
    assert after.status_code == 200, after.text  # the deployment serves every tenant still
