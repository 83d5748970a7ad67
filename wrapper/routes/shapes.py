"""Checks of JSON values against a declared shape, with errors that name the field, in OpenAI's words.

A shape only reads: it never coerces or rewrites the value it checks, so what
passes is forwarded exactly as the client sent it. Every shape also describes
itself as JSON Schema (`schema()`), which is the published request schema the
fuzz tests generate bodies from.

`None` stands for an absent optional field (clients send `"temperature": null`);
anywhere else a null is a wrong type.

Depth is bounded: declared shapes nest a few levels by construction, and a
free-form value (`Json`: a tool's parameter schema, a provider's own field)
may nest at most MAX_DEPTH levels, so every later reader (the PII scan, the
audit record's canonical form, LiteLLM itself) can walk a checked body safely.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from wrapper.errors import GatewayError

MAX_DEPTH = 64
_CONTAINERS = frozenset({dict, list})


def unsupported(path: str) -> GatewayError:
    path = path[:200]  # a client's own key, echoed back: bounded
    return GatewayError(400, f"Unrecognized request argument supplied: {path}", code="unsupported_parameter", param=path)


def invalid_type(path: str, expected: str, value: object) -> GatewayError:
    return GatewayError(400, f"Invalid type for '{path}': expected {expected}, but got {kind_of(value)} instead.",
                        code="invalid_type", param=path)


def invalid_value(path: str, why: str) -> GatewayError:
    return GatewayError(400, f"Invalid value for '{path}': {why}", code="invalid_value", param=path)


def missing(path: str) -> GatewayError:
    return GatewayError(400, f"Missing required parameter: '{path}'.", code="missing_required_parameter", param=path)


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


class Shape:
    kinds: tuple[type, ...] = ()  # the Python types of the JSON values this shape accepts at all
    expected = "a value"

    def check(self, value: object, path: str) -> None:
        raise NotImplementedError

    def schema(self) -> dict:
        raise NotImplementedError


class String(Shape):
    kinds = (str,)
    expected = "a string"

    def __init__(self, *, min_length: int = 0, max_length: int | None = None, choices: tuple[str, ...] = (),
                 pattern: str | None = None) -> None:
        self.min_length, self.max_length, self.choices = min_length, max_length, choices
        self.pattern = re.compile(pattern) if pattern else None

    def check(self, value: object, path: str) -> None:
        if type(value) is not str:
            raise invalid_type(path, self.expected, value)
        if self.choices and value not in self.choices:
            raise invalid_value(path, f"must be one of {list(self.choices)}.")
        if len(value) < self.min_length:
            raise invalid_value(path, "must not be empty." if self.min_length == 1 else
                                f"must be at least {self.min_length} characters long.")
        if self.max_length is not None and len(value) > self.max_length:
            raise invalid_value(path, f"must be at most {self.max_length} characters long.")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise invalid_value(path, "contains characters that are not allowed here.")

    def schema(self) -> dict:
        schema: dict = {"type": "string"}
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern.pattern
        return schema


class Boolean(Shape):
    kinds = (bool,)
    expected = "a boolean"

    def check(self, value: object, path: str) -> None:
        if type(value) is not bool:
            raise invalid_type(path, self.expected, value)

    def schema(self) -> dict:
        return {"type": "boolean"}


class Number(Shape):
    """A JSON number within [minimum, maximum]; `integer` refuses fractions (and a boolean is never a number)."""

    kinds = (int, float)

    def __init__(self, minimum: float | None = None, maximum: float | None = None, *, integer: bool = False) -> None:
        self.minimum, self.maximum, self.integer = minimum, maximum, integer
        self.expected = "an integer" if integer else "a number"

    def check(self, value: object, path: str) -> None:
        if type(value) is not int and (self.integer or type(value) is not float or not math.isfinite(value)):
            raise invalid_type(path, self.expected, value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise invalid_value(path, f"must be between {self.minimum} and {self.maximum}." if self.maximum is not None
                                else f"must be at least {self.minimum}.")

    def schema(self) -> dict:
        schema: dict = {"type": "integer" if self.integer else "number"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


def Integer(minimum: int | None = None, maximum: int | None = None) -> Number:  # noqa: N802 - reads as a shape
    return Number(minimum, maximum, integer=True)


class Array(Shape):
    kinds = (list,)

    def __init__(self, items: Shape, *, min_items: int = 0, max_items: int | None = None) -> None:
        self.items, self.min_items, self.max_items = items, min_items, max_items
        self.expected = f"an array of {_plural(items.expected)}"

    def check(self, value: object, path: str) -> None:
        if type(value) is not list:
            raise invalid_type(path, self.expected, value)
        if len(value) < self.min_items:
            raise invalid_value(path, "must not be empty." if self.min_items == 1 else
                                f"must have at least {self.min_items} items.")
        if self.max_items is not None and len(value) > self.max_items:
            raise invalid_value(path, f"must have at most {self.max_items} items.")
        items = self.items
        if isinstance(items, Number) and items.integer and _all_ints_within(value, items.minimum, items.maximum):
            return  # token ids: checked at C speed; any bad one is found by the loop below, with its index
        for index, item in enumerate(value):
            items.check(item, f"{path}[{index}]")

    def schema(self) -> dict:
        schema: dict = {"type": "array", "items": self.items.schema()}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        return schema


class Object(Shape):
    """An object with named fields only: any other key is an unsupported parameter."""

    kinds = (dict,)
    expected = "an object"

    def __init__(self, fields: Mapping[str, Shape], required: tuple[str, ...] = ()) -> None:
        self.fields, self.required = dict(fields), required

    def check(self, value: object, path: str, also_allowed: frozenset[str] = frozenset()) -> None:
        if type(value) is not dict:
            raise invalid_type(path, self.expected, value)
        fields = self.fields
        for key, item in value.items():
            shape = fields.get(key)
            if shape is None:
                if key not in also_allowed:
                    raise unsupported(_join(path, key))
                shape = _ANY  # a field the tenant lets through as sent: only its depth is checked
            if item is not None:
                shape.check(item, _join(path, key))
        for key in self.required:
            if value.get(key) is None:
                raise missing(_join(path, key))

    def schema(self) -> dict:
        properties = {key: shape.schema() if key in self.required else {"anyOf": [shape.schema(), {"type": "null"}]}
                      for key, shape in self.fields.items()}
        return {"type": "object", "properties": properties, "required": list(self.required),
                "additionalProperties": False}


class Tagged(Shape):
    """One of several objects told apart by a tag field (`role` of a message, `type` of a content part)."""

    kinds = (dict,)

    def __init__(self, tag: str, variants: Mapping[str, Object]) -> None:
        self.tag = tag
        self.variants = {name: Object({tag: String(choices=(name,)), **shape.fields}, (tag, *shape.required))
                         for name, shape in variants.items()}
        self.expected = "an object"

    def check(self, value: object, path: str) -> None:
        if type(value) is not dict:
            raise invalid_type(path, self.expected, value)
        name = value.get(self.tag)
        variant = self.variants.get(name) if type(name) is str else None
        if variant is None:
            where = _join(path, self.tag)
            if name is None:
                raise missing(where)
            raise invalid_value(where, f"must be one of {list(self.variants)}.")
        variant.check(value, path)

    def schema(self) -> dict:
        return {"oneOf": [variant.schema() for variant in self.variants.values()]}


class Map(Shape):
    """An object used as a dictionary: bounded keys, every value of one shape."""

    kinds = (dict,)
    expected = "an object"

    def __init__(self, values: Shape, *, max_items: int, max_key_length: int, key_pattern: str | None = None) -> None:
        self.values, self.max_items, self.max_key_length = values, max_items, max_key_length
        self.key_pattern = re.compile(key_pattern) if key_pattern else None

    def check(self, value: object, path: str) -> None:
        if type(value) is not dict:
            raise invalid_type(path, self.expected, value)
        if len(value) > self.max_items:
            raise invalid_value(path, f"must have at most {self.max_items} entries.")
        for key, item in value.items():
            if len(key) > self.max_key_length or (self.key_pattern is not None and not self.key_pattern.fullmatch(key)):
                raise invalid_value(path, f"has a key that is not allowed ({self.max_key_length} characters at most"
                                    + (f", matching {self.key_pattern.pattern})." if self.key_pattern else ")."))
            self.values.check(item, _join(path, key))

    def schema(self) -> dict:
        keys: dict = {"maxLength": self.max_key_length}
        if self.key_pattern is not None:
            keys["pattern"] = self.key_pattern.pattern
        return {"type": "object", "additionalProperties": self.values.schema(), "maxProperties": self.max_items,
                "propertyNames": keys}


class AnyOf(Shape):
    """The first of several shapes that accepts the value; the error names them all."""

    def __init__(self, *options: Shape, expected: str | None = None) -> None:
        self.options = options
        self.kinds = tuple({kind for option in options for kind in option.kinds})
        self.expected = expected or " or ".join(option.expected for option in options)

    def check(self, value: object, path: str) -> None:
        fitting = [option for option in self.options if type(value) in option.kinds]
        if len(fitting) == 1:
            fitting[0].check(value, path)  # one candidate: its own, precise error
            return
        for option in fitting:
            try:
                option.check(value, path)
                return
            except GatewayError:
                continue
        raise invalid_type(path, self.expected, value)

    def schema(self) -> dict:
        return {"anyOf": [option.schema() for option in self.options]}


class Json(Shape):
    """Any JSON value (of one kind, if given): a schema the client writes, or a provider's own object,
    nested at most MAX_DEPTH levels."""

    def __init__(self, kind: type | None = None) -> None:
        self.kind = kind
        self.kinds = (kind,) if kind else (str, int, float, bool, list, dict)
        self.expected = {dict: "an object", list: "an array", None: "a JSON value"}.get(kind, "a JSON value")

    def check(self, value: object, path: str) -> None:
        if self.kind is not None and type(value) is not self.kind:
            raise invalid_type(path, self.expected, value)
        if type(value) in _CONTAINERS and not within_depth(value):
            raise invalid_value(path, f"is nested more than {MAX_DEPTH} levels deep.")

    def schema(self) -> dict:
        return {"type": "object"} if self.kind is dict else {"type": "array"} if self.kind is list else {}


_ANY = Json()


def within_depth(value: dict | list, limit: int = MAX_DEPTH) -> bool:
    """Whether a container nests at most `limit` levels (itself being the first). Iterative: no recursion to exhaust."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        children = node.values() if type(node) is dict else node
        if _CONTAINERS.isdisjoint(set(map(type, children))):
            continue  # a leaf container (a list of numbers, say), told at C speed
        for child in children:
            if type(child) in _CONTAINERS:
                stack.append((child, depth + 1))
    return True


def _all_ints_within(values: list, minimum: float | None, maximum: float | None) -> bool:
    if not values or set(map(type, values)) != {int}:
        return not values
    return (minimum is None or min(values) >= minimum) and (maximum is None or max(values) <= maximum)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _plural(expected: str) -> str:
    words = expected.split(" ", 1)
    return words[1] + "s" if len(words) == 2 and words[0] in ("a", "an") else expected
