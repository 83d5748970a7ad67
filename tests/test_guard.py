"""LiteLLM serves only requests that came through the wrapper, even to a holder of the master key."""

from __future__ import annotations

import httpx
import pytest

from custom_callbacks.seal import seal
from tests.conftest import INTERNAL_SECRET, MASTER_KEY

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


def straight_to_litellm(stack, body, path="/v1/chat/completions") -> httpx.Response:
    return httpx.post(f"{stack.litellm_url}{path}", json=body, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30)


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        {"request_id": "r-1"},
        {"request_id": "r-1", "gateway_seal": "forged"},
        {"request_id": "r-1", "gateway_seal": seal(b"a-guessed-secret", {"request_id": "r-1"})},
        # A real seal moved onto other metadata does not fit it.
        {"request_id": "r-2", "gateway_seal": seal(INTERNAL_SECRET.encode(), {"request_id": "r-1"})},
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
    metadata = {"request_id": "r-3"}
    metadata["gateway_seal"] = seal(INTERNAL_SECRET.encode(), metadata)
    assert straight_to_litellm(stack, {**CHAT, "metadata": metadata}).status_code == 200
