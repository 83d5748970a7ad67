"""The OpenAI Responses API (`POST /v1/responses`): the allow-list of the API reference, and where the texts are.

Input is a string or a list of items: messages (with or without `"type":
"message"`, content a string or parts), function calls and their outputs,
reasoning items, and references to earlier items. A stream is a sequence of
typed events: text arrives in `*.delta` events and comes again, whole, in the
`*.done` events and in the final `response.completed` (`response.incomplete`,
`response.failed`), whose `response.usage` is the stream's usage.

LiteLLM serves it for any model (natively for OpenAI, translated to chat for
the others).
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from wrapper.errors import GatewayError
from wrapper.routes import OpenAIShaped, Slot, StreamText, texts_as_prompt
from wrapper.routes.chat import (
    EFFORT, JSON_OBJECT, METADATA, MODEL, NAME, TEXT, _schema_texts, leaves, texts_at,
)
from wrapper.ownership.ids import ID_PATTERN, MAX_LENGTH
from wrapper.routes.shapes import AnyOf, Array, Boolean, Integer, Number, Object, Shape, String, Tagged, missing

ROLES = ("user", "assistant", "system", "developer")
ID = String(min_length=1, max_length=MAX_LENGTH, pattern=ID_PATTERN)  # sealed for the tenant (wrapper.ownership)
PART = Tagged("type", {
    "input_text": Object({"text": TEXT}, required=("text",)),
    "output_text": Object({"text": TEXT, "annotations": Array(JSON_OBJECT), "logprobs": Array(JSON_OBJECT)},
                          required=("text",)),
    "refusal": Object({"refusal": TEXT}, required=("refusal",)),
    "input_image": Object({"image_url": TEXT, "file_id": NAME, "detail": String(choices=("auto", "low", "high"))}),
    "input_file": Object({"file_id": NAME, "file_data": TEXT, "file_url": TEXT, "filename": NAME}),
    "input_audio": Object({"input_audio": Object({"data": TEXT, "format": NAME}, required=("data", "format"))},
                          required=("input_audio",)),
})
MESSAGE = Object({"type": String(choices=("message",)), "role": String(choices=ROLES),
                  "content": AnyOf(TEXT, Array(PART)), "id": ID, "status": NAME}, required=("role", "content"))
SUMMARY = Array(Tagged("type", {"summary_text": Object({"text": TEXT}, required=("text",))}))
ITEMS = {
    "function_call": Object({"call_id": NAME, "name": NAME, "arguments": TEXT, "id": ID, "status": NAME},
                            required=("call_id", "name", "arguments")),
    "function_call_output": Object({"call_id": NAME, "output": AnyOf(TEXT, Array(PART)), "id": ID, "status": NAME},
                                   required=("call_id", "output")),
    "reasoning": Object({"id": ID, "summary": SUMMARY, "content": Array(JSON_OBJECT), "encrypted_content": TEXT,
                         "status": NAME}, required=("summary",)),
    "item_reference": Object({"id": ID}, required=("id",)),
}


class Item(Shape):
    """An input item: a message (its `type` may be left out), or one of ITEMS, told apart by `type`."""

    kinds = (dict,)
    expected = "an object"

    def __init__(self) -> None:
        self.others = Tagged("type", ITEMS)

    def check(self, value: object, path: str) -> None:
        if type(value) is dict and value.get("type", "message") == "message":
            MESSAGE.check(value, path)
        else:
            self.others.check(value, path)

    def schema(self) -> dict:
        return {"oneOf": [MESSAGE.schema(), *self.others.schema()["oneOf"]]}


TOOL = Tagged("type", {
    "function": Object({"name": NAME, "description": TEXT, "parameters": JSON_OBJECT, "strict": Boolean()},
                       required=("name",)),
    "web_search": Object({"search_context_size": String(choices=("low", "medium", "high")),
                          "user_location": JSON_OBJECT, "filters": JSON_OBJECT}),
    "web_search_preview": Object({"search_context_size": String(choices=("low", "medium", "high")),
                                  "user_location": JSON_OBJECT}),
    "file_search": Object({"vector_store_ids": Array(NAME, max_items=16), "max_num_results": Integer(1, 50),
                           "filters": JSON_OBJECT, "ranking_options": JSON_OBJECT}, required=("vector_store_ids",)),
})
TEXT_FORMAT = Tagged("type", {
    "text": Object({}),
    "json_object": Object({}),
    "json_schema": Object({"name": NAME, "schema": JSON_OBJECT, "description": TEXT, "strict": Boolean()},
                          required=("name", "schema")),
})

RESPONSES = Object({
    "model": MODEL,
    "input": AnyOf(TEXT, Array(Item(), max_items=4096), expected="a string or an array of input items"),
    "instructions": TEXT,
    "stream": Boolean(),
    "stream_options": Object({"include_obfuscation": Boolean()}),
    "previous_response_id": ID,
    "store": Boolean(),
    "metadata": METADATA,
    "temperature": Number(0, 2),
    "top_p": Number(0, 1),
    "top_logprobs": Integer(0, 20),
    "max_output_tokens": Integer(1, 2**31 - 1),
    "max_tool_calls": Integer(1, 2**31 - 1),
    "tools": Array(TOOL, max_items=512),
    "tool_choice": AnyOf(String(choices=("none", "auto", "required")), JSON_OBJECT),
    "parallel_tool_calls": Boolean(),
    "text": Object({"format": TEXT_FORMAT, "verbosity": String(choices=("low", "medium", "high"))}),
    "reasoning": Object({"effort": EFFORT, "summary": NAME, "generate_summary": NAME}),
    "truncation": String(choices=("auto", "disabled")),
    "include": Array(NAME, max_items=32),
    "user": NAME,
    "safety_identifier": NAME,
    "prompt_cache_key": NAME,
    "service_tier": NAME,
}, required=("model",))

# Stream events whose text is a piece (`delta`) of one text: what the piece is.
_DELTAS = {"response.output_text.delta": "content", "response.refusal.delta": "content",
           "response.reasoning_summary_text.delta": "content", "response.function_call_arguments.delta": "arguments"}
# Stream events carrying a text again, whole, at its end: the field it is in, and its deltas' event type.
_WHOLE = {"response.output_text.done": ("text", "response.output_text.delta"),
          "response.refusal.done": ("refusal", "response.refusal.delta"),
          "response.reasoning_summary_text.done": ("text", "response.reasoning_summary_text.delta"),
          "response.function_call_arguments.done": ("arguments", "response.function_call_arguments.delta")}
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesRoute(OpenAIShaped):
    name = "responses"
    path = "/v1/responses"
    fields = RESPONSES
    metadata_field = "litellm_metadata"  # `metadata` is the API's own (stored with the response)
    stream_usage_option = False  # its final event carries the usage
    ends_with_done = False  # `response.completed` (or .incomplete, .failed) ends it

    def check(self, body: dict) -> None:
        if body.get("input") is None and not body.get("previous_response_id"):
            raise missing("input")

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        """Instructions, input (message texts, function-call arguments and outputs), tool descriptions and
        schemas, the text format's schema, user and metadata. Identifiers, image and file data are left alone."""
        if system:
            yield from texts_at(body, ("instructions",))
        value = body.get("input")
        if isinstance(value, str):
            yield from texts_at(body, ("input",))
        for item in value if isinstance(value, list) else ():
            kind = item.get("type", "message")
            if kind == "message" and (system or item.get("role") not in ("system", "developer")):
                yield from _content(item, "content")
            elif kind == "function_call":
                yield from texts_at(item, ("arguments",))
            elif kind == "function_call_output":
                yield from _content(item, "output")
        for tool in body.get("tools") or ():
            yield from texts_at(tool, ("description",))
            yield from _schema_texts(tool, "parameters")
        text_format = (body.get("text") or {}).get("format") or {}
        yield from texts_at(text_format, ("description",))
        yield from _schema_texts(text_format, "schema")
        yield from texts_at(body, ("user",))
        for key in ("metadata", *extra_fields):
            if key in body:
                yield from leaves(body, key)

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        for item in answer.get("output") or ():
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict):
                        yield from texts_at(part, ("text", "refusal"))
            elif item.get("type") == "function_call":
                yield from texts_at(item, ("arguments",))
            elif item.get("type") == "reasoning":
                for part in item.get("summary") or ():
                    if isinstance(part, dict):
                        yield from texts_at(part, ("text",))

    def stream_texts(self, event: dict) -> Iterator[StreamText]:
        """A text's key is (output index, content or summary index, the type of its delta events)."""
        kind = event.get("type")
        where = (event.get("output_index", 0), event.get("content_index", event.get("summary_index", 0)))
        if kind in _DELTAS and isinstance(event.get("delta"), str):
            yield StreamText((*where, kind), event, "delta", _DELTAS[kind], False)
        elif kind in _WHOLE:
            field, deltas = _WHOLE[kind]
            if isinstance(event.get(field), str):
                yield StreamText((*where, deltas), event, field, "whole", True)
        elif kind == "response.content_part.done" and isinstance(event.get("part"), dict):
            yield from _whole(where, texts_at(event["part"], ("text", "refusal")))
        elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            yield from _whole(where, self.answer_texts({"output": [event["item"]]}))
        elif kind in _FINAL and isinstance(event.get("response"), dict):
            yield from _whole(("response",), self.answer_texts(event["response"]))

    def closing_chunks(self, held: dict[tuple, str]) -> list[dict]:
        """Delta events carrying what is still held of each text."""
        return [{"type": key[2], "output_index": key[0], ("content_index" if "summary" not in key[2] else
                 "summary_index"): key[1], "delta": text} for key, text in sorted(held.items(), key=repr)]

    def started(self, event: dict) -> bool:
        return event.get("type") in _DELTAS and bool(event.get("delta"))

    def finished(self, event: dict) -> bool:
        return event.get("type") in _FINAL

    def usage(self, answer: dict) -> dict | None:
        """The usage of an answer or of a stream's final event, in chat's terms (LiteLLM adds `cost`)."""
        if answer.get("type") in _FINAL:
            answer = answer.get("response") or {}
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if not isinstance(usage, dict):
            return None
        return {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens"),
                "cost": usage.get("cost")}

    def stream_error(self, event: dict) -> dict | None:
        """An `error` event (its fields at the top), or `response.failed` (the response's `error`)."""
        if event.get("type") == "error":
            return {"message": event.get("message"), "code": event.get("code")}
        if event.get("type") == "response.failed":
            error = (event.get("response") or {}).get("error")
            return error if isinstance(error, dict) and error else {"message": "The response failed."}
        return None

    def served_model(self, event: dict) -> object:
        return (event.get("response") or {}).get("model") if event.get("type") in _FINAL else event.get("model")

    def error_event(self, error: GatewayError) -> bytes:
        body = error.envelope()["error"]
        event = {"type": "error", "code": body.get("code"), "message": body.get("message"), "param": body.get("param")}
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def sse(self, event: dict) -> bytes:
        return b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"

    def prompt(self, body: dict) -> dict:
        return texts_as_prompt(self, body)


def _content(container: dict, key: str) -> Iterator[Slot]:
    value = container.get(key)
    if isinstance(value, str):
        yield from texts_at(container, (key,))
    for part in value if isinstance(value, list) else ():
        yield from texts_at(part, ("text", "refusal"))


def _whole(key: tuple, slots: Iterator[Slot]) -> Iterator[StreamText]:
    for container, field in slots:
        yield StreamText(key, container, field, "whole", True)
