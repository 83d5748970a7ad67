"""Calling the stack as a client does: the few request helpers every stack test shares."""

from __future__ import annotations

import httpx


def chat_body(text: str = "hi", model: str = "fake-chat", **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


def credentials(stack, key: str | None) -> dict[str, str]:
    """`key` names one of the stack's keys, or is a credential itself (a token, a bad key), or None: none sent."""
    if not key:
        return {}
    return {"authorization": f"Bearer {stack.keys.get(key, key)}"}


def post(stack, key: str | None, body: dict | bytes, path: str = "/v1/chat/completions", **headers) -> httpx.Response:
    payload = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(f"{stack.url}{path}", headers={**credentials(stack, key), **headers}, timeout=30, **payload)


def chat(stack, key: str | None = "acme-app", body: dict | None = None, *, text: str = "hi", model: str = "fake-chat",
         **headers) -> httpx.Response:
    """A chat completion: `body`, or one user message of `text` to `model`. Headers as keywords:
    `**{"x-request-id": rid}`."""
    return post(stack, key, body if body is not None else chat_body(text, model), **headers)


def get(stack, key: str | None, path: str, **params) -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", params=params, headers=credentials(stack, key), timeout=30)
