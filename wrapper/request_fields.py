"""The request fields each model route accepts: an explicit allow-list, from the OpenAI API reference.

Anything not named here is refused with 400 `unsupported_parameter` before any
other step reads the body. That is how the gateway owns every field LiteLLM acts
on: fallbacks, retries, timeouts, deployment and provider choice, credentials,
cache controls and mocks are not OpenAI request fields, so a client can never
send them; the gateway sets them itself from its config. A tenant or endpoint
may let named provider-specific fields through (gateway.yaml `fields.allow`),
never one of LITELLM_OWNED below.

Beyond the reference, assistant messages may carry `reasoning_content` and
`thinking_blocks` (LiteLLM's round trip of a reasoning model's thoughts), and
messages and parts `cache_control` (prompt caching, passed to providers that
have it).
"""

from __future__ import annotations

from wrapper.shapes import AnyOf, Array, Boolean, Integer, Json, Map, Number, Object, String, Tagged

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

TOKENS = Array(Integer(0, 2**32), min_items=1)
EMBEDDINGS = Object({
    "model": MODEL,
    "input": AnyOf(
        String(min_length=1),
        Array(String(min_length=1), min_items=1, max_items=2048),
        TOKENS,
        Array(TOKENS, min_items=1, max_items=2048),
        expected="a non-empty string, or a non-empty array of strings, of token ids or of token-id arrays",
    ),
    "dimensions": Integer(1, 65536),
    "encoding_format": String(choices=("float", "base64")),
    "user": NAME,
}, required=("model", "input"))

# Fields LiteLLM acts on (a few of its several hundred; custom_callbacks.guard holds LiteLLM's own list and refuses
# any of them that the wrapper did not seal). No tenant may let one of these through as a provider-specific field.
LITELLM_OWNED = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "organization", "custom_llm_provider",
    "deployment_id", "specific_deployment", "model_list", "user_config", "fallbacks", "context_window_fallbacks",
    "content_policy_fallbacks", "disable_fallbacks", "max_fallbacks", "num_retries", "max_retries", "retry_policy",
    "model_group_retry_policy", "timeout", "request_timeout", "stream_timeout", "mock_response", "mock_timeout",
    "mock_testing_fallbacks", "mock_testing_context_fallbacks", "mock_testing_rate_limit_error", "cache", "caching",
    "no-cache", "ttl", "s-maxage", "namespace", "cache_key", "guardrails", "tags", "litellm_metadata",
    "success_callback", "failure_callback", "callbacks", "input_cost_per_token", "output_cost_per_token",
    "extra_headers", "extra_body", "extra_query", "headers", "proxy_server_request", "secret_fields", "litellm_call_id",
    "litellm_logging_obj", "fastest_response", "router_settings_override", "model_info",
})
