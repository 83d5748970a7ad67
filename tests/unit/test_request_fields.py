"""The request allow-lists and the model catalog, in process: what a client may send, and which model it reaches."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from wrapper.config import Tenant
from wrapper.errors import GatewayError
from wrapper.request import parse
from wrapper.routes import LITELLM_OWNED
from wrapper.routes.chat import CHAT
from wrapper.routes.embeddings import EMBEDDINGS
from wrapper.routing.catalog import ModelCatalog

MESSAGES = [{"role": "user", "content": "hi"}]


def parse_chat_request(raw: bytes, extra: frozenset[str] = frozenset()) -> dict:
    return parse(raw, CHAT, extra)


def parse_embeddings_request(raw: bytes, extra: frozenset[str] = frozenset()) -> dict:
    return parse(raw, EMBEDDINGS, extra)


def refusal(parse, body, extra=frozenset()) -> tuple:
    try:
        parse(body if isinstance(body, bytes) else orjson.dumps(body), extra)
    except GatewayError as error:
        return error.status, error.code, error.param
    return None


def test_every_openai_chat_parameter_passes_as_sent():
    body = {
        "model": "m", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "top_p": 1,
        "n": 2, "stop": ["\n\n", "END"], "max_tokens": 100, "max_completion_tokens": 100, "presence_penalty": -1.5,
        "frequency_penalty": 0.5, "logit_bias": {"50256": -100}, "logprobs": True, "top_logprobs": 3, "seed": 7,
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find an order.", "strict": True,
                                                    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}}, "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}, "strict": True}},
        "user": "u-1", "safety_identifier": "s-1", "metadata": {"app": "support"}, "reasoning_effort": "low",
        "verbosity": "low", "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"},
        "prediction": {"type": "content", "content": "draft"}, "service_tier": "auto", "store": False,
        "prompt_cache_key": "k", "web_search_options": {"search_context_size": "low"},
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}}]},
            {"role": "assistant", "content": None, "refusal": None, "reasoning_content": "thinking",
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        ],
    }
    raw = orjson.dumps(body)
    assert parse_chat_request(raw) == body


@pytest.mark.parametrize("body, expected", [
    ({"model": "m", "messages": MESSAGES, "fallbacks": ["x"]}, (400, "unsupported_parameter", "fallbacks")),
    ({"model": "m", "messages": [{"role": "user", "content": "hi", "api_base": "x"}]},
     (400, "unsupported_parameter", "messages[0].api_base")),
    ({"model": "m", "messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f", "x": 1}}]},
     (400, "unsupported_parameter", "tools[0].function.x")),
    ({"model": "m", "messages": MESSAGES, "temperature": None}, None),  # null: the field is absent
    ({"model": "m", "messages": MESSAGES, "n": True}, (400, "invalid_type", "n")),
    ({"model": "m", "messages": MESSAGES, "max_tokens": 1.5}, (400, "invalid_type", "max_tokens")),
    ({"model": "m", "messages": MESSAGES, "logit_bias": {"token": 1}}, (400, "invalid_value", "logit_bias")),
    ({"model": "m", "messages": MESSAGES, "metadata": {str(i): "v" for i in range(17)}}, (400, "invalid_value", "metadata")),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]},
     (400, "missing_required_parameter", "messages[0].tool_call_id")),
    ({"model": "m", "messages": [{"content": "x"}]}, (400, "missing_required_parameter", "messages[0].role")),
    ({"model": "m\x00", "messages": MESSAGES}, (400, "invalid_value", "model")),
    ({"model": "m" * 257, "messages": MESSAGES}, (400, "invalid_value", "model")),
])
def test_chat_fields_are_refused_by_name(body, expected):
    assert refusal(parse_chat_request, body) == expected


def test_a_tenants_extra_field_passes_only_for_it_and_only_as_deep_as_any():
    body = {"model": "m", "messages": MESSAGES, "top_k": 3}
    assert refusal(parse_chat_request, body) == (400, "unsupported_parameter", "top_k")
    assert refusal(parse_chat_request, body, frozenset({"top_k"})) is None
    deep: object = 1
    for _ in range(65):
        deep = [deep]
    assert refusal(parse_chat_request, {**body, "top_k": deep}, frozenset({"top_k"})) == (400, "invalid_value", "top_k")


def test_no_allowed_field_is_one_litellm_acts_on():
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm.types.utils import is_litellm_owned_kwarg

    assert {name for name in CHAT.fields if is_litellm_owned_kwarg(name)} == {"metadata"}  # which travels nested
    assert not set(CHAT.fields) & LITELLM_OWNED


@pytest.mark.parametrize("data, ok", [("x", True), (["a", "b"], True), ([1, 2], True), ([[1], [2, 3]], True),
                                      ("", False), ([], False), ([[]], False), (["a", 1], False), ([True], False),
                                      ([-1], False), ([1.5], False), ([["a"]], False), (None, False)])
def test_embeddings_input_shapes(data, ok):
    assert (refusal(parse_embeddings_request, {"model": "e", "input": data}) is None) is ok


def test_nesting_is_refused_fast_at_any_depth():
    for depth in (65, 300, 1000, 10_000, 100_000):
        raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":' \
              b'{"name":"f","parameters":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}}]}"
        started = time.perf_counter()
        assert refusal(parse_chat_request, raw)[0] == 400
        assert time.perf_counter() - started < 0.5
    assert refusal(parse_chat_request, {"model": "m", "messages": MESSAGES, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": _nest(63)}}]}) is None


def _nest(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_the_published_schema_describes_the_allow_list():
    schema = CHAT.schema()
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"model", "messages"}
    assert set(schema["properties"]) == set(CHAT.fields)


CATALOG_YAML = """
model_list:
  - {model_name: cheap, litellm_params: {model: openai/gpt-4o-mini}}
  - {model_name: frontier, litellm_params: {model: anthropic/claude}}
  - {model_name: "openai/*", litellm_params: {model: "openai/*"}}
litellm_settings:
  model_alias_map: {gpt-3.5-turbo: cheap}
router_settings:
  model_group_alias: {gpt-4: frontier, smart: {model: frontier, hidden: true}}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> ModelCatalog:
    path = tmp_path / "litellm_config.yaml"
    path.write_text(CATALOG_YAML)
    return ModelCatalog.from_litellm_config(path)


def route(catalog: ModelCatalog, models: list[str], model: str) -> str | int:
    try:
        return catalog.route(Tenant(models=models), model)
    except GatewayError as error:
        return error.status


def test_aliases_resolve_before_the_allow_list(catalog):
    assert route(catalog, ["cheap"], "gpt-3.5-turbo") == "cheap"  # LiteLLM is asked for the group itself
    assert route(catalog, ["cheap"], "gpt-4") == 403  # an alias of a group the tenant may not use
    assert route(catalog, ["gpt-4"], "frontier") == "frontier"  # listing an alias lists its group
    assert route(catalog, ["frontier"], "smart") == "frontier"


def test_star_means_the_catalog_and_never_a_wildcard_route(catalog):
    assert route(catalog, ["*"], "cheap") == "cheap" and route(catalog, ["*"], "gpt-4") == "frontier"
    assert route(catalog, ["*"], "openai/gpt-4o") == 403  # the platform's OpenAI key, for any model: not by "*"
    assert route(catalog, ["openai/*"], "openai/gpt-4o") == "openai/gpt-4o"  # only when the route is named
    assert route(catalog, ["*"], "anthropic/claude") == 404  # a deployment's own string is not a name
    assert route(catalog, ["*"], "unknown") == 404
