"""Hypothesis strategies for hostile request bodies and audit/cost queries (tests/test_fuzz.py, bench/fuzz.py).

Bodies start from the published request schema (the allow-lists' `schema()`, wrapper/routes), read by
`from_schema` (the subset of JSON Schema the shapes publish), and are then made hostile: a field set to any JSON
value, an unknown or LiteLLM-owned field added, a field dropped, nesting, or bytes that are not JSON at all.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import orjson
from hypothesis import strategies as st

# Printable text, no lone surrogates (those cannot be sent as UTF-8 at all).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=12)
MODELS = st.sampled_from(["fake-chat", "fake-chat", "fake-embed", "globex-private", "openai/fake-chat", "nope"])
# Fields a client must never steer LiteLLM with, and a few invented ones.
FOREIGN_FIELDS = st.sampled_from(["fallbacks", "num_retries", "deployment_id", "custom_llm_provider", "api_base",
                                  "mock_response", "cache", "timeout", "user_config", "extra_body", "tags",
                                  "litellm_metadata", "guardrails", "x_unknown", ""]) | TEXT


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values that (mostly) fit a JSON Schema of the shapes' subset."""
    if "oneOf" in schema or "anyOf" in schema:
        return st.one_of([from_schema(option) for option in schema.get("oneOf") or schema["anyOf"]])
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if kind == "integer":
            return st.integers(None if low is None else int(low), None if high is None else int(high))
        return st.floats(low, high, allow_nan=False, allow_infinity=False)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= schema.get("maxLength", 256))
        return st.text(st.characters(blacklist_categories=("Cs",)), min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 60), 60))
    if kind == "array" and "items" in schema:
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" and "properties" in schema:
        required = {name: from_schema(schema["properties"][name]) for name in schema["required"]}
        optional = {name: from_schema(sub) for name, sub in schema["properties"].items() if name not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return st.dictionaries(TEXT, from_schema(schema["additionalProperties"]), max_size=3)
    if kind == "array":
        return st.lists(JSON, max_size=3)
    if kind == "object":
        return st.dictionaries(TEXT, JSON, max_size=3)
    return JSON


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def hostile_bodies(schema: dict) -> st.SearchStrategy[bytes]:
    """Request bodies: from the schema, then perhaps made hostile; sometimes not JSON at all."""
    return _hostile(from_schema(schema), sorted(schema["properties"]))


NOT_JSON = st.binary(max_size=200) | TEXT.map(str.encode) | st.sampled_from([b"", b"[]", b"null", b"{", b'{"a":'])


@st.composite
def _hostile(draw, valid: st.SearchStrategy, fields: list[str]) -> bytes:
    if draw(st.integers(0, 19)) == 0:
        return draw(NOT_JSON)
    body = draw(valid)
    if draw(st.booleans()):
        body["model"] = draw(MODELS)
    mutation = draw(st.integers(0, 5))
    if mutation == 1:
        body[draw(st.sampled_from(fields))] = draw(JSON)
    elif mutation == 2:
        body[draw(FOREIGN_FIELDS)] = draw(JSON)
    elif mutation == 3 and body:
        del body[draw(st.sampled_from(sorted(body)))]
    elif mutation == 4:
        body[draw(st.sampled_from(fields))] = nested(draw(st.sampled_from([63, 64, 65, 300, 1000])))
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:  # nested beyond what orjson writes: the parser's own limit, as bytes
        return b'{"model":"fake-chat","messages":' + b"[" * 2000 + b"]" * 2000 + b"}"


QUERY_NAMES = st.sampled_from(["limit", "status", "since", "until", "user", "endpoint", "model", "request_id",
                               "tenant", "cursor", "group_by", "granularity"]) | TEXT
TIMES = st.datetimes().map(lambda t: t.isoformat()) | st.sampled_from(
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2025-01-01", "2025-13-01", "yesterday", "0"])
NUMBERS = st.integers(-(2**80), 2**80).map(str) | st.sampled_from(["1e3", "0x10", "٣", "1_000", " 5", ""])
CURSORS = (st.tuples(TEXT, st.integers(-(2**80), 2**80)).map(lambda c: json.dumps(list(c)).encode())
           | st.binary(max_size=30)).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("="))
VALUES = TEXT | TIMES | NUMBERS | CURSORS | st.sampled_from(["acme", "globex", "hooli", "tenant,user", "day", "\x00"])


@st.composite
def hostile_queries(draw) -> tuple[str, list[tuple[str, str]]]:
    """A path of the audit or cost API and its query parameters (repeated names included)."""
    # Verify and export read a tenant's whole log (100,000s of records after a long run): drawn about once in 50
    # queries, so the run measures the breadth of inputs rather than the time of one large read.
    path = draw(st.sampled_from(["/v1/audit/events", "/v1/costs"] * 50 + ["/v1/audit/verify", "/v1/audit/export"])
                | TEXT.map(lambda text: "/v1/audit/events/" + (quote(text, safe="") or "x")))
    return path, draw(st.lists(st.tuples(QUERY_NAMES, VALUES), max_size=5))
