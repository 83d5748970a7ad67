"""Chat completions: the allow-list of the OpenAI API reference, and where the texts are.

Beyond the reference, assistant messages may carry `reasoning_content` and
`thinking_blocks` (LiteLLM's round trip of a reasoning model's thoughts), and
messages and parts `cache_control` (prompt caching, passed to providers that
have it).
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapper.routes import OpenAIShaped, Slot, StreamText, Unreadable
from wrapper.routes.shapes import AnyOf, Array, Boolean, Integer, Json, Map, Number, Object, String, Tagged

# A model name as LiteLLM routes it: printable, no control characters, and never a list ("a,b" makes LiteLLM
# call every model named).
MODEL = String(min_length=1, max_length=256, pattern=r"[^\x00-\x1f\x7f,]+")
TEXT = String()
NAME = String(max_length=256)
JSON_OBJECT = Json(dict)
CACHE_CONTROL = Object({"type": String(max_length=64), "ttl": String(max_length=64)}, required=("type",))

TEXT_PART = {"text": Object({"text": TEXT, "cache_control": CACHE_CONTROL}, required=("text",))}
USER_PARTS = Tagged("type", {
    **TEXT_PART,
    "image_url": Object({
        "image_url": Object({"url": TEXT, "detail": String(choices=("auto", "low", "high")), "format": NAME},
                            required=("url",)),
        "cache_control": CACHE_CONTROL,
    }, required=("image_url",)),
    "input_audio": Object({"input_audio": Object({"data": TEXT, "format": NAME}, required=("data", "format"))},
                          required=("input_audio",)),
    "file": Object({"file": Object({"file_data": TEXT, "file_id": NAME, "filename": NAME, "format": NAME}),
                    "cache_control": CACHE_CONTROL}, required=("file",)),
})
TEXT_PARTS = Tagged("type", TEXT_PART)
ASSISTANT_PARTS = Tagged("type", {**TEXT_PART, "refusal": Object({"refusal": TEXT}, required=("refusal",))})

FUNCTION_CALL = Object({"name": NAME, "arguments": TEXT}, required=("name", "arguments"))
TOOL_CALL = Tagged("type", {
    "function": Object({"id": NAME, "function": FUNCTION_CALL}, required=("id", "function")),
    "custom": Object({"id": NAME, "custom": Object({"name": NAME, "input": TEXT}, required=("name", "input"))},
                     required=("id", "custom")),
})


def _message(content, *, required: tuple[str, ...] = ("content",), **fields) -> Object:
    return Object({"content": content, "name": NAME, "cache_control": CACHE_CONTROL, **fields}, required=required)


MESSAGE = Tagged("role", {
    "system": _message(AnyOf(TEXT, Array(TEXT_PARTS))),
    "developer": _message(AnyOf(TEXT, Array(TEXT_PARTS))),
    "user": _message(AnyOf(TEXT, Array(USER_PARTS))),
    "assistant": _message(
        AnyOf(TEXT, Array(ASSISTANT_PARTS)), required=(),
        refusal=TEXT, tool_calls=Array(TOOL_CALL), function_call=FUNCTION_CALL, audio=Object({"id": NAME}, ("id",)),
        reasoning_content=TEXT, thinking_blocks=Array(JSON_OBJECT),
    ),
    "tool": _message(AnyOf(TEXT, Array(TEXT_PARTS)), required=("content", "tool_call_id"), tool_call_id=NAME),
    "function": _message(TEXT, required=("name",)),
})

FUNCTION = Object({"name": NAME, "description": TEXT, "parameters": JSON_OBJECT, "strict": Boolean()},
                  required=("name",))
TOOL = Tagged("type", {
    "function": Object({"function": FUNCTION, "cache_control": CACHE_CONTROL}, required=("function",)),
    "custom": Object({"custom": Object({"name": NAME, "description": TEXT, "format": JSON_OBJECT},
                                       required=("name",))}, required=("custom",)),
})
TOOL_CHOICE = AnyOf(
    String(choices=("none", "auto", "required")),
    Tagged("type", {
        "function": Object({"function": Object({"name": NAME}, ("name",))}, ("function",)),
        "custom": Object({"custom": Object({"name": NAME}, ("name",))}, ("custom",)),
        "allowed_tools": Object({"allowed_tools": Object({"mode": String(choices=("auto", "required")),
                                                          "tools": Array(JSON_OBJECT)}, ("mode", "tools"))},
                                ("allowed_tools",)),
    }),
)
RESPONSE_FORMAT = Tagged("type", {
    "text": Object({}),
    "json_object": Object({}),
    "json_schema": Object({"json_schema": Object({"name": NAME, "description": TEXT, "schema": JSON_OBJECT,
                                                  "strict": Boolean()}, required=("name",))},
                          required=("json_schema",)),
})
# OpenAI's bounds: 16 pairs, keys of 64 characters, values of 512.
METADATA = Map(String(max_length=512), max_items=16, max_key_length=64)
EFFORT = String(max_length=32)

CHAT = Object({
    "model": MODEL,
    "messages": Array(MESSAGE, min_items=1),
    "stream": Boolean(),
    "stream_options": Object({"include_usage": Boolean(), "include_obfuscation": Boolean()}),
    "temperature": Number(0, 2),
    "top_p": Number(0, 1),
    "n": Integer(1, 128),
    "stop": AnyOf(TEXT, Array(TEXT, max_items=16)),
    "max_tokens": Integer(1, 2**31 - 1),
    "max_completion_tokens": Integer(1, 2**31 - 1),
    "presence_penalty": Number(-2, 2),
    "frequency_penalty": Number(-2, 2),
    "logit_bias": Map(Number(-100, 100), max_items=1024, max_key_length=10, key_pattern=r"[0-9]+"),
    "logprobs": Boolean(),
    "top_logprobs": Integer(0, 20),
    "seed": Integer(-(2**63), 2**63 - 1),
    "tools": Array(TOOL, max_items=512),
    "tool_choice": TOOL_CHOICE,
    "parallel_tool_calls": Boolean(),
    "functions": Array(FUNCTION, max_items=512),
    "function_call": AnyOf(String(choices=("none", "auto")), Object({"name": NAME}, ("name",))),
    "response_format": RESPONSE_FORMAT,
    "user": NAME,
    "safety_identifier": NAME,
    "metadata": METADATA,
    "reasoning_effort": EFFORT,
    "verbosity": String(choices=("low", "medium", "high")),
    "modalities": Array(String(choices=("text", "audio")), max_items=2),
    "audio": Object({"voice": AnyOf(NAME, Object({"id": NAME}, ("id",))), "format": NAME}, required=("voice", "format")),
    "prediction": Object({"type": String(choices=("content",)), "content": AnyOf(TEXT, Array(TEXT_PARTS))},
                         required=("type", "content")),
    "service_tier": NAME,
    "store": Boolean(),
    "prompt_cache_key": NAME,
    "prompt_cache_retention": NAME,
    "web_search_options": Object({
        "search_context_size": String(choices=("low", "medium", "high")),
        "user_location": Object({
            "type": String(choices=("approximate",)),
            "approximate": Object({"city": NAME, "country": NAME, "region": NAME, "timezone": NAME}),
        }, required=("type", "approximate")),
    }),
}, required=("model", "messages"))


SYSTEM_ROLES = frozenset({"system", "developer"})
# JSON Schema keywords whose values are vocabulary or names, not text: changing them would break the schema.
_SCHEMA_WORDS = frozenset({"type", "format", "$ref", "$schema", "$id", "required", "additionalProperties"})


class ChatRoute(OpenAIShaped):
    name = "chat"
    path = "/v1/chat/completions"
    fields = CHAT

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        """Every non-empty string the provider would read.

        Left alone, by design: identifiers (model, roles, ids, tool and schema names, JSON Schema keywords such as
        `type` and property names), image URLs and base64 data (images, audio, files), and reasoning models'
        `thinking_blocks`, whose signature a provider checks.
        """
        for message in body.get("messages") or ():
            if message.get("role") in SYSTEM_ROLES and not system:
                continue
            yield from _content_slots(message)
            yield from texts_at(message, ("name", "refusal", "reasoning_content"))
            for call in message.get("tool_calls") or ():
                yield from texts_at(call.get("function") or {}, ("arguments",))
                yield from texts_at(call.get("custom") or {}, ("input",))
            yield from texts_at(message.get("function_call") or {}, ("arguments",))
        for tool in body.get("tools") or ():
            for definition in (tool.get("function"), tool.get("custom")):
                if definition:
                    yield from texts_at(definition, ("description",))
                    yield from _schema_texts(definition, "parameters")
                    yield from _schema_texts(definition, "format")
        for function in body.get("functions") or ():
            yield from texts_at(function, ("description",))
            yield from _schema_texts(function, "parameters")
        json_schema = (body.get("response_format") or {}).get("json_schema")
        if json_schema:
            yield from texts_at(json_schema, ("description",))
            yield from _schema_texts(json_schema, "schema")
        prediction = body.get("prediction")
        if prediction:
            yield from _content_slots(prediction)
        yield from texts_at(body, ("user",))
        for key in ("stop", "metadata", *extra_fields):
            if key in body:
                yield from leaves(body, key)

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        for choice in answer.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                yield from texts_at(message, ("content",))
                for call in message.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        yield from texts_at(function, ("arguments",))

    def stream_texts(self, chunk: dict) -> Iterator[StreamText]:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or not isinstance(delta := choice.get("delta"), dict):
                continue
            index, final = choice.get("index", 0), choice.get("finish_reason") is not None
            if isinstance(delta.get("content"), str) or final:
                yield StreamText((index, "content"), delta, "content", "content", final)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    yield StreamText((index, "tool", call.get("index", 0)), function, "arguments", "arguments", final)

    def closing_chunks(self, held: dict[tuple, str]) -> list[dict]:
        """A chunk carrying texts still held when the stream ended without a finish reason."""
        choices: dict[int, dict] = {}
        for key, text in sorted(held.items(), key=lambda item: repr(item[0])):
            delta = choices.setdefault(key[0], {"index": key[0], "delta": {}})["delta"]
            if key[1] == "content":
                delta["content"] = text
            else:
                delta.setdefault("tool_calls", []).append({"index": key[2], "function": {"arguments": text}})
        return [{"object": "chat.completion.chunk", "choices": list(choices.values())}] if choices else []

    def started(self, chunk: dict) -> bool:
        return bool(chunk.get("choices"))

    def prompt(self, body: dict) -> dict:
        prompt = {"messages": body.get("messages") or []}
        if body.get("tools"):
            prompt["tools"] = body["tools"]
        return prompt


def _content_slots(message: dict) -> Iterator[Slot]:
    content = message.get("content")
    if _is_text(content):
        yield message, "content"
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                yield from texts_at(part, ("text", "refusal"))


def strings_at(body: dict, key: str) -> Iterator[Slot]:
    """body[key], a string or an array of strings; token ids (or arrays of them) are text nobody here can read."""
    value = body[key]
    if isinstance(value, str):
        yield from texts_at(body, (key,))
        return
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise Unreadable(key)
        if item:
            yield value, index


def joined(value: str | list) -> str:
    """A string, or the strings of an array, as one text (for a token count); token ids are left out."""
    return value if isinstance(value, str) else " ".join(v for v in value if isinstance(v, str))


def texts_at(container: dict, keys: tuple[str, ...]) -> Iterator[Slot]:
    for key in keys:
        if _is_text(container.get(key)):
            yield container, key


def _schema_texts(container: dict, key: str) -> Iterator[Slot]:
    if isinstance(container.get(key), dict | list):
        yield from leaves(container, key, skip=_SCHEMA_WORDS)


def leaves(container, key, skip: frozenset[str] = frozenset()) -> Iterator[Slot]:
    """Every non-empty string inside container[key] (a checked body nests at most MAX_DEPTH levels)."""
    value = container[key]
    if _is_text(value):
        yield container, key
    elif isinstance(value, dict):
        for inner in value:
            if inner not in skip:
                yield from leaves(value, inner, skip)
    elif isinstance(value, list):
        for index in range(len(value)):
            yield from leaves(value, index, skip)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != ""
