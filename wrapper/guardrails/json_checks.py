"""The `json` output check: an answer asked for as JSON (`response_format` json_object or json_schema; the
Responses API's `text.format`) must be one JSON value, and one that meets the client's JSON Schema.

On a stream the text is followed as it comes (json_prefix.py): the first character after which it can no longer
become JSON ends it. The schema is the client's, so it is read with care: no reference is fetched (an empty
registry: jsonschema's default would fetch a remote `$ref`), its `pattern`s run with a time limit (a crafted
pattern and a crafted answer could otherwise hold the event loop), and a schema that is not one is said so.
"""

from __future__ import annotations

import json

import regex
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable

from wrapper.guardrails.checks import Finding
from wrapper.guardrails.json_prefix import JsonPrefix

PATTERN_SECONDS = 0.05


def wants_json(body: dict) -> dict | None:
    """{} for any JSON, {"schema": ...} for a JSON Schema; None when the request did not ask for JSON."""
    asked = body.get("response_format")
    if not isinstance(asked, dict):
        text = body.get("text")
        asked = text.get("format") if isinstance(text, dict) else None
    if not isinstance(asked, dict) or asked.get("type") not in ("json_object", "json_schema"):
        return None
    if asked["type"] == "json_object":
        return {}
    schema = (asked.get("json_schema") or {}).get("schema") if "json_schema" in asked else asked.get("schema")
    return {"schema": schema} if isinstance(schema, dict) else {}


def _pattern(validator, pattern, instance, schema):
    if isinstance(instance, str):
        try:
            if regex.search(pattern, instance, timeout=PATTERN_SECONDS) is None:
                yield ValidationError(f"{instance!r} does not match {pattern!r}")
        except (regex.error, TimeoutError):
            yield ValidationError("the schema's pattern could not be applied")


_Careful = validators.extend(Draft202012Validator, {"pattern": _pattern})


class JsonFollower:
    """One text that must be JSON: followed as it comes, judged whole at its end."""

    def __init__(self, wanted: dict) -> None:
        self.prefix = JsonPrefix()
        self.schema = wanted.get("schema")
        self.pieces: list[str] = []

    @property
    def failed_at(self) -> int:
        return self.prefix.failed_at or 0

    def feed(self, piece: str) -> bool:
        self.pieces.append(piece)
        return self.prefix.feed(piece)

    def at_end(self) -> list[Finding]:
        text = "".join(self.pieces)
        if self.prefix.failed_at is not None:
            return []  # found already, as it came
        if not self.prefix.complete():
            return [Finding(len(text), len(text), "incomplete_json")]
        if self.schema is None:
            return []
        try:
            # an empty registry: a `$ref` to anywhere but the schema itself is unresolvable, never fetched (the
            # default would fetch it: a client's schema could make the gateway call any URL)
            _Careful.check_schema(self.schema)
            errors = list(_Careful(self.schema, registry=Registry()).iter_errors(json.loads(text)))
        except (SchemaError, RecursionError, ValueError, TypeError, Unresolvable):  # the client's schema: never a 500
            return [Finding(0, len(text), "schema_unusable")]
        return [Finding(0, len(text), "schema_violation")] if errors else []
