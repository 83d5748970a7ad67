"""The model routes' own ASGI layer (wrapper/model_routes.py): what FastAPI did for them, it still does."""

from __future__ import annotations

import uuid

import pytest

import wrapper.upstream.forward

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


async def record_of(gateway, request_id: str) -> dict:
    reply = await gateway.client.get(f"/v1/audit/events/{request_id}", headers=gateway.auth("auditor"))
    [event] = reply.json()["data"]
    return event["record"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
async def test_a_model_route_called_with_another_method_is_a_405_in_the_envelope(gateway, path):
    request_id = uuid.uuid4().hex
    reply = await gateway.client.get(path, headers={**gateway.auth("acme"), "x-request-id": request_id})
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert reply.json()["error"]["code"] == "method_not_allowed"
    assert reply.headers["x-request-id"] == request_id  # it passed the layers every request passes (its record too)


async def test_a_bug_on_the_hot_path_is_a_500_in_the_envelope_recorded_and_the_next_request_is_answered(gateway, monkeypatch):
    def broken(ctx, secret):
        raise RuntimeError("a bug with a secret in its message: sk-do-not-leak")

    monkeypatch.setattr(wrapper.upstream.forward, "sealed_body", broken)
    request_id = uuid.uuid4().hex
    reply = await gateway.client.post("/v1/chat/completions", json=CHAT,
                                      headers={**gateway.auth("acme"), "x-request-id": request_id})
    assert reply.status_code == 500
    assert reply.json()["error"] == {"message": "internal gateway error", "type": "api_error", "param": None, "code": None}
    assert "sk-do-not-leak" not in reply.text
    assert (await record_of(gateway, request_id))["status"] == 500
    monkeypatch.undo()
    assert (await gateway.client.post("/v1/chat/completions", json=CHAT, headers=gateway.auth("acme"))).status_code == 200


async def test_an_unknown_path_still_gets_the_envelope(gateway):
    reply = await gateway.client.post("/v1/chat/completion", json=CHAT, headers=gateway.auth("acme"))
    assert reply.status_code == 404 and "error" in reply.json()
