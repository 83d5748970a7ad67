"""LiteLLM serves only requests that came through the wrapper, as the wrapper sent them, even to a holder of the master key."""

from __future__ import annotations

import uuid

import httpx
import pytest

from custom_callbacks.seal import SEAL_KEY, seal, sealed_metadata
from tests.support.stack import INTERNAL_SECRET, MASTER_KEY

PROBE = "guard-probe-5d1e"  # in every body these tests send, so the provider's log shows whether one got through
CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": f"hi {PROBE}"}]}
SECRET = INTERNAL_SECRET.encode()
IDENTITY = {"gateway_request_id": "r-1", "gateway_tenant_id": "acme", "gateway_credential_id": "key:0123456789ab",
            "tags": ["tenant:acme"]}


def straight_to_litellm(stack, body, path="/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{stack.litellm_url}{path}", json=body, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30)


def sealed(body: dict, secret: bytes = SECRET, identity: dict = IDENTITY) -> dict:
    """The body as the wrapper would send it."""
    return {**body, "metadata": sealed_metadata(secret, body, identity)}


# Fields LiteLLM's own auth refuses in any body before the guard runs (with a 500 of its own making).
BANNED_BY_LITELLM = {"api_base", "api_key", "user_config"}


def assert_refused(stack, fake_provider, body, path="/v1/chat/completions") -> None:
    before = len(fake_provider.log())
    response = straight_to_litellm(stack, body, path)
    if BANNED_BY_LITELLM & set(body):
        assert response.status_code >= 400, response.text
    else:
        assert response.status_code == 403, response.text
        assert "through the gateway" in response.json()["error"]["message"]
    # Not the log's length: a process of another test (a pair shutting down) was once seen calling the fake meanwhile
    assert [r for r in fake_provider.log()[before:] if PROBE in str(r["body"])] == []


GOOD = sealed(CHAT)["metadata"]
IDENTITY_ONLY = {k: v for k, v in GOOD.items() if k.startswith("gateway_") and k not in ("gateway_model", "gateway_fields")}


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        {k: v for k, v in GOOD.items() if k != SEAL_KEY},
        {**GOOD, SEAL_KEY: "forged"},
        sealed(CHAT, b"a-guessed-secret")["metadata"],
        # A real seal moved onto other metadata (another tenant) does not fit it.
        {**GOOD, "gateway_tenant_id": "globex"},
        # A seal over who is asking, but not over what is asked, is not enough.
        {**IDENTITY_ONLY, SEAL_KEY: seal(SECRET, IDENTITY_ONLY)},
    ],
    ids=["none", "unsealed", "forged", "other-secret", "other-tenant", "identity-only"],
)
def test_master_key_without_the_wrappers_seal_is_refused(stack, fake_provider, metadata):
    assert_refused(stack, fake_provider, CHAT if metadata is None else {**CHAT, "metadata": metadata})


@pytest.mark.parametrize(
    "change",
    [
        {"model": "globex-private"},
        {"fallbacks": ["globex-private"]},
        {"api_base": "http://127.0.0.1:9/v1"},
        {"api_key": "sk-someone-elses"},
        {"num_retries": 10},
        {"deployment_id": "x"},
        {"custom_llm_provider": "anthropic"},
        {"user_config": {"model_list": []}},
        {"metadata_tags_injected": True},
        # (mock_response is stripped by LiteLLM itself before the guard runs: no effect, the provider answers.)
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_sealed_request_changed_afterwards_is_refused(stack, fake_provider, change):
    assert_refused(stack, fake_provider, {**sealed(CHAT), **change})


def test_a_sealed_control_field_with_another_value_is_refused(stack, fake_provider):
    body = sealed({**CHAT, "num_retries": 0})  # a control field the gateway may set from its config
    assert straight_to_litellm(stack, body).status_code == 200
    assert_refused(stack, fake_provider, {**body, "num_retries": 10})


def test_a_field_litellm_acts_on_is_refused_even_when_sealed(stack, fake_provider):
    # Only the gateway's control fields may be sealed: tags (which steer tag routing), say, never; LiteLLM's own
    # list of the fields it acts on decides, so one added in a later release is covered too.
    assert_refused(stack, fake_provider, sealed({**CHAT, "tags": ["tenant:globex"]}))


def test_embeddings_straight_to_litellm_are_refused_too(stack, fake_provider):
    assert_refused(stack, fake_provider, {"model": "fake-embed", "input": f"hi {PROBE}"}, "/v1/embeddings")
    body = sealed({"model": "fake-embed", "input": f"hi {PROBE}"})
    assert straight_to_litellm(stack, body, "/v1/embeddings").status_code == 200
    assert_refused(stack, fake_provider, {**body, "model": "fake-chat"}, "/v1/embeddings")


def test_responses_messages_and_lookups_straight_to_litellm_are_refused(stack, fake_provider):
    """The seal travels in `litellm_metadata` on these routes; an unsealed one, or a seal in the API's own
    `metadata`, is refused like any other, and so is a stored response's lookup."""
    responses = {"model": "fake-chat", "input": f"hi {PROBE}"}
    messages = {"model": "fake-chat", "max_tokens": 5, "messages": [{"role": "user", "content": f"hi {PROBE}"}]}
    for path, body in (("/v1/responses", responses), ("/v1/messages", messages)):
        assert_refused(stack, fake_provider, body, path)
        assert_refused(stack, fake_provider, {**body, "litellm_metadata": {**GOOD, "gateway_tenant_id": "globex"}}, path)
        forged = sealed(body, b"a-guessed-secret")
        assert_refused(stack, fake_provider, {**body, "litellm_metadata": forged["metadata"]}, path)
    before = len([r for r in fake_provider.log() if "/responses/" in r["path"]])
    for method in ("GET", "DELETE"):
        reply = httpx.request(method, f"{stack.litellm_url}/v1/responses/resp_fake00000001", timeout=30,
                              headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert reply.status_code == 403 and "through the gateway" in reply.text, reply.text
    assert len([r for r in fake_provider.log() if "/responses/" in r["path"]]) == before


def test_a_correctly_sealed_request_is_served(stack):
    # The control for the refusals above: the same call with the wrapper's seal passes, streamed too.
    assert straight_to_litellm(stack, sealed(CHAT)).status_code == 200
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    assert straight_to_litellm(stack, sealed(stream)).status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer sk-wrong", f"Bearer {MASTER_KEY}x", f"Bearer {MASTER_KEY[:-1]}",
                                           f"Bearer {MASTER_KEY.upper()}", "Bearer"],
                         ids=["none", "wrong", "longer", "shorter", "other-case", "scheme-only"])
def test_litellm_answers_only_the_master_key_with_401_for_anything_else(stack, fake_provider, authorization):
    """LiteLLM's auth is the gateway's constant-time master-key check (custom_callbacks.master_key_auth)."""
    before = len(fake_provider.log())
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.post(f"{stack.litellm_url}/v1/chat/completions", json=sealed(CHAT), headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert [r for r in fake_provider.log()[before:] if PROBE in str(r["body"])] == []
    answered = straight_to_litellm(stack, sealed(CHAT))
    assert answered.status_code == 200, answered.text


def test_an_image_request_reaches_the_provider_with_the_sealed_prompt_whatever_message_it_carries(stack, fake_provider):
    """LiteLLM turns an image prompt into one user message for guardrails (replacing any message a caller sent), then
    the message back into the prompt; the guard admits exactly that message and nothing else."""
    marker = uuid.uuid4().hex
    image = {"model": "fake-chat", "prompt": f"{marker} a fox"}
    reply = straight_to_litellm(stack, {**sealed(image), "messages": [{"role": "user", "content": "something else"}]},
                                path="/v1/images/generations")
    assert reply.status_code == 200
    [sent] = [r for r in fake_provider.log() if marker in str(r["body"])]
    assert sent["body"]["prompt"] == f"{marker} a fox" and "something else" not in str(sent["body"])
