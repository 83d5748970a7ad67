"""The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`): the allow-list of Anthropic's
API reference, and where the texts are.

Content is a string or a list of blocks (text, image, document, tool_use,
tool_result, thinking). A stream is a sequence of named events: `message_start`
(the model and the input tokens), per content block `content_block_start`,
`content_block_delta` (`text_delta`, `input_json_delta`) and
`content_block_stop`, then `message_delta` (the stop reason and the output
tokens) and `message_stop`, which ends it. LiteLLM serves it for any model
(natively for Anthropic, translated to chat for the others).

Left alone, by design: thinking blocks (a provider checks their signature),
image and document data, ids and names.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from wrapper.errors import GatewayError
from wrapper.routes import OpenAIShaped, Slot, StreamText, Unstreamed, texts_as_prompt
from wrapper.routes.chat import JSON_OBJECT, MODEL, NAME, TEXT, _schema_texts, leaves, texts_at
from wrapper.routes.shapes import AnyOf, Array, Boolean, Integer, Number, Object, String, Tagged

CACHE_CONTROL = Object({"type": String(choices=("ephemeral",)), "ttl": String(choices=("5m", "1h"))},
                       required=("type",))
SOURCE = Tagged("type", {
    "base64": Object({"media_type": NAME, "data": TEXT}, required=("media_type", "data")),
    "url": Object({"url": TEXT}, required=("url",)),
    "text": Object({"media_type": NAME, "data": TEXT}, required=("data",)),
    "file": Object({"file_id": NAME}, required=("file_id",)),
})
TEXT_BLOCK = Object({"text": TEXT, "cache_control": CACHE_CONTROL, "citations": Array(JSON_OBJECT)}, required=("text",))
IMAGE_BLOCK = Object({"source": SOURCE, "cache_control": CACHE_CONTROL}, required=("source",))
RESULT_CONTENT = AnyOf(TEXT, Array(Tagged("type", {"text": TEXT_BLOCK, "image": IMAGE_BLOCK})))
BLOCK = Tagged("type", {
    "text": TEXT_BLOCK,
    "image": IMAGE_BLOCK,
    "document": Object({"source": SOURCE, "title": NAME, "context": TEXT, "citations": JSON_OBJECT,
                        "cache_control": CACHE_CONTROL}, required=("source",)),
    "tool_use": Object({"id": NAME, "name": NAME, "input": JSON_OBJECT, "cache_control": CACHE_CONTROL},
                       required=("id", "name", "input")),
    "tool_result": Object({"tool_use_id": NAME, "content": RESULT_CONTENT, "is_error": Boolean(),
                           "cache_control": CACHE_CONTROL}, required=("tool_use_id",)),
    "thinking": Object({"thinking": TEXT, "signature": TEXT}, required=("thinking", "signature")),
    "redacted_thinking": Object({"data": TEXT}, required=("data",)),
})
MESSAGE = Object({"role": String(choices=("user", "assistant")), "content": AnyOf(TEXT, Array(BLOCK))},
                 required=("role", "content"))
TOOL = Object({"name": NAME, "description": TEXT, "input_schema": JSON_OBJECT, "cache_control": CACHE_CONTROL,
               "type": NAME}, required=("name",))
TOOL_CHOICE = Tagged("type", {
    "auto": Object({"disable_parallel_tool_use": Boolean()}),
    "any": Object({"disable_parallel_tool_use": Boolean()}),
    "tool": Object({"name": NAME, "disable_parallel_tool_use": Boolean()}, required=("name",)),
    "none": Object({}),
})
THINKING = Tagged("type", {"enabled": Object({"budget_tokens": Integer(1024, 2**31 - 1)}, required=("budget_tokens",)),
                           "disabled": Object({})})
PROMPT_FIELDS = {
    "model": MODEL,
    "messages": Array(MESSAGE, min_items=1, max_items=100_000),
    "system": AnyOf(TEXT, Array(Tagged("type", {"text": TEXT_BLOCK}))),
    "tools": Array(TOOL, max_items=512),
    "tool_choice": TOOL_CHOICE,
    "thinking": THINKING,
}
MESSAGES = Object({
    **PROMPT_FIELDS,
    "max_tokens": Integer(1, 2**31 - 1),
    "metadata": Object({"user_id": NAME}),
    "stop_sequences": Array(TEXT, max_items=8191),
    "stream": Boolean(),
    "temperature": Number(0, 1),
    "top_p": Number(0, 1),
    "top_k": Integer(0, 2**31 - 1),
    "service_tier": String(choices=("auto", "standard_only")),
}, required=("model", "messages", "max_tokens"))
COUNT_TOKENS = Object(PROMPT_FIELDS, required=("model", "messages"))


def _prompt_texts(body: dict, extra_fields: frozenset[str], system: bool) -> Iterator[Slot]:
    if system:
        yield from _blocks(body, "system")
    for message in body.get("messages") or ():
        yield from _blocks(message, "content")
    for tool in body.get("tools") or ():
        yield from texts_at(tool, ("description",))
        yield from _schema_texts(tool, "input_schema")
    for key in ("stop_sequences", *extra_fields):
        if key in body:
            yield from leaves(body, key)


def _blocks(container: dict, key: str) -> Iterator[Slot]:
    """A string, or the texts of a list of blocks: text, tool inputs (every string in them), tool results."""
    value = container.get(key)
    if isinstance(value, str):
        yield from texts_at(container, (key,))
    for block in value if isinstance(value, list) else ():
        kind = block.get("type")
        if kind == "text":
            yield from texts_at(block, ("text",))
        elif kind == "tool_use" and isinstance(block.get("input"), dict):
            yield from leaves(block, "input")
        elif kind == "tool_result":
            yield from _blocks(block, "content")
        elif kind == "document":
            yield from texts_at(block, ("context",))
            if (block.get("source") or {}).get("type") == "text":
                yield from texts_at(block["source"], ("data",))


class MessagesRoute(OpenAIShaped):
    name = "messages"
    path = "/v1/messages"
    fields = MESSAGES
    metadata_field = "litellm_metadata"  # `metadata` is the API's own ({"user_id": ...})
    stream_usage_option = False  # message_start and message_delta carry the usage
    ends_with_done = False  # `message_stop` ends it
    passed_headers = ("anthropic-version", "anthropic-beta")

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        yield from _prompt_texts(body, extra_fields, system)

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        for block in answer.get("content") or ():
            if isinstance(block, dict):
                if block.get("type") == "text":
                    yield from texts_at(block, ("text",))
                elif block.get("type") == "tool_use" and isinstance(block.get("input"), dict):
                    yield from leaves(block, "input")

    def stream_texts(self, event: dict) -> Iterator[StreamText]:
        kind, index = event.get("type"), event.get("index", 0)
        if kind == "content_block_delta" and isinstance(delta := event.get("delta"), dict):
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                yield StreamText(("block", index, "text"), delta, "text", "content", False)
            elif delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                yield StreamText(("block", index, "json"), delta, "partial_json", "arguments", False)
        elif kind == "content_block_stop":  # the block's text ends: what is held of it goes out before this event
            for part in ("text", "json"):
                yield StreamText(("block", index, part), event, "", "end", True)

    def closing_chunks(self, held: dict[tuple, str]) -> list[dict]:
        return [{"type": "content_block_delta", "index": key[1],
                 "delta": {"type": "text_delta", "text": text} if key[2] == "text" else
                 {"type": "input_json_delta", "partial_json": text}}
                for key, text in sorted(held.items(), key=repr)]

    def started(self, event: dict) -> bool:
        delta = event.get("delta") if event.get("type") == "content_block_delta" else None
        return isinstance(delta, dict) and bool(delta.get("text") or delta.get("partial_json"))

    def finished(self, event: dict) -> bool:
        return event.get("type") == "message_stop"

    def usage(self, answer: dict) -> dict | None:
        """A whole answer's usage, or what an event says of it: message_start (input), message_delta (output)."""
        if answer.get("type") == "message_start":
            answer = answer.get("message") or {}
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if not isinstance(usage, dict):
            return None
        tokens_in = usage.get("input_tokens")
        if isinstance(tokens_in, int):  # Anthropic counts cached prompt tokens apart; chat's prompt_tokens holds all
            tokens_in += sum(usage.get(k) or 0 for k in ("cache_creation_input_tokens", "cache_read_input_tokens"))
        return {"prompt_tokens": tokens_in, "completion_tokens": usage.get("output_tokens")}

    def served_model(self, event: dict) -> object:
        return (event.get("message") or {}).get("model") if event.get("type") == "message_start" else event.get("model")

    def error_event(self, error: GatewayError) -> bytes:
        body = {"type": "error", "error": {"type": error.type, "message": error.message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"

    def sse(self, event: dict) -> bytes:
        return b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"

    def prompt(self, body: dict) -> dict:
        return texts_as_prompt(self, body)


class CountTokensRoute(Unstreamed):
    """What a Messages request's prompt would count, without running it: no output, no cost."""

    name = "messages.count_tokens"
    path = "/v1/messages/count_tokens"
    fields = COUNT_TOKENS
    metadata_field = "litellm_metadata"
    passed_headers = ("anthropic-version", "anthropic-beta")

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        yield from _prompt_texts(body, extra_fields, system)

    def usage(self, answer: dict) -> dict | None:
        return None

    def prompt(self, body: dict) -> dict:
        return texts_as_prompt(self, body)
