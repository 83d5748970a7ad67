"""Parse a request body once and check it enough to give clear 400s.

LiteLLM and the provider validate the rest; this catches what a client most
often gets wrong, with a message that says which field and why.
"""

from __future__ import annotations

import orjson

from wrapper.errors import bad_request

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def parse_json_object(raw: bytes) -> dict:
    if not raw:
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON ({exc.args[0].split(':')[0]}).") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _required(body: dict, name: str):
    value = body.get(name)
    if value is None:
        raise bad_request(f"Missing required field '{name}'.", param=name)
    return value


def _require_model(body: dict) -> None:
    model = _required(body, "model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' must be a non-empty string.", param="model")


def parse_chat_request(raw: bytes) -> dict:
    body = parse_json_object(raw)
    _require_model(body)
    messages = _required(body, "messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"'{where}' must be an object.", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(f"'{where}.role' must be one of {sorted(_ROLES)}.", param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(f"'{where}.content' must be a string or an array of parts.", param=f"{where}.content")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad_request("'stream' must be a boolean.", param="stream")
    if "metadata" in body and body["metadata"] is not None and not isinstance(body["metadata"], dict):
        raise bad_request("'metadata' must be an object.", param="metadata")
    return body


def parse_embeddings_request(raw: bytes) -> dict:
    body = parse_json_object(raw)
    _require_model(body)
    data = _required(body, "input")
    valid = isinstance(data, str) or (
        isinstance(data, list) and data and all(isinstance(x, str | int | list) for x in data)
    )
    if not valid:
        raise bad_request("'input' must be a string or a non-empty array of strings or tokens.", param="input")
    return body
