"""Embeddings: the allow-list of the OpenAI API reference, and where the texts are."""

from __future__ import annotations

from collections.abc import Iterator

from wrapper.routes import Slot, Unstreamed
from wrapper.routes.chat import MODEL, NAME, joined, leaves, strings_at, texts_at
from wrapper.routes.shapes import AnyOf, Array, Integer, Object, String

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


class EmbeddingsRoute(Unstreamed):  # vectors: no text in the answer
    name = "embeddings"
    path = "/v1/embeddings"
    fields = EMBEDDINGS

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        """The input's texts; token ids are text nobody here can read (Unreadable)."""
        yield from strings_at(body, "input")
        yield from texts_at(body, ("user",))
        for key in extra_fields:
            if key in body:
                yield from leaves(body, key)

    def prompt(self, body: dict) -> dict:
        return {"prompt": joined(body["input"])}
