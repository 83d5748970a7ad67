"""LiteLLM serves only requests that came through the wrapper, even to a holder of the master key."""

from __future__ import annotations

import httpx
import pytest

from custom_callbacks.seal import seal
from tests.conftest import INTERNAL_SECRET, MASTER_KEY

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


def straight_to_litellm(stack, body, path="/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{stack.litellm_url}{path}", json=body, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30)


GOOD = {"gateway_request_id": "r-1", "gateway_tenant_id": "acme", "gateway_credential_id": "key:0123456789ab"}
OTHER_TENANT = {**GOOD, "gateway_tenant_id": "globex"}


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        GOOD,
        {**GOOD, "gateway_seal": "forged"},
        {**GOOD, "gateway_seal": seal(b"a-guessed-secret", GOOD)},
        # A real seal moved onto other metadata (another tenant) does not fit it.
        {**OTHER_TENANT, "gateway_seal": seal(INTERNAL_SECRET.encode(), GOOD)},
        # A seal over metadata without a tenant is not enough.
        {"gateway_request_id": "r-1", "gateway_seal": seal(INTERNAL_SECRET.encode(), {"gateway_request_id": "r-1"})},
    ],
)
def test_master_key_without_the_wrappers_seal_is_refused(stack, fake_provider, metadata):
    before = len(fake_provider.log())
    body = CHAT if metadata is None else {**CHAT, "metadata": metadata}
    response = straight_to_litellm(stack, body)
    assert response.status_code == 403
    assert "through the gateway" in response.json()["error"]["message"]
    assert len(fake_provider.log()) == before


def test_embeddings_straight_to_litellm_are_refused_too(stack):
    response = straight_to_litellm(stack, {"model": "fake-embed", "input": "hi"}, "/v1/embeddings")
    assert response.status_code == 403


def test_a_correctly_sealed_request_is_served(stack):
    # The control for the refusals above: the same call with the wrapper's seal passes.
    metadata = {**GOOD, "gateway_seal": seal(INTERNAL_SECRET.encode(), GOOD)}
    assert straight_to_litellm(stack, {**CHAT, "metadata": metadata}).status_code == 200
