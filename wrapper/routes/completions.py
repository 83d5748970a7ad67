"""Legacy completions (`POST /v1/completions`): the allow-list of the OpenAI API reference, and where the texts are.

LiteLLM serves it for any model: a provider with a completions API gets the prompt as is, any other gets
it as one user message, and the answer comes back in the completions shape either way.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapper.routes import OpenAIShaped, Slot, StreamText
from wrapper.routes.chat import MODEL, NAME, TEXT, joined, leaves, strings_at, texts_at
from wrapper.routes.embeddings import TOKENS
from wrapper.routes.shapes import AnyOf, Array, Boolean, Integer, Map, Number, Object

COMPLETIONS = Object({
    "model": MODEL,
    "prompt": AnyOf(
        TEXT,
        Array(TEXT, min_items=1, max_items=2048),
        TOKENS,
        Array(TOKENS, min_items=1, max_items=2048),
        expected="a string, or an array of strings, of token ids or of token-id arrays",
    ),
    "suffix": TEXT,
    "max_tokens": Integer(0, 2**31 - 1),
    "temperature": Number(0, 2),
    "top_p": Number(0, 1),
    "n": Integer(1, 128),
    "best_of": Integer(1, 20),
    "stream": Boolean(),
    "stream_options": Object({"include_usage": Boolean(), "include_obfuscation": Boolean()}),
    "logprobs": Integer(0, 5),
    "echo": Boolean(),
    "stop": AnyOf(TEXT, Array(TEXT, max_items=4)),
    "presence_penalty": Number(-2, 2),
    "frequency_penalty": Number(-2, 2),
    "logit_bias": Map(Number(-100, 100), max_items=1024, max_key_length=10, key_pattern=r"[0-9]+"),
    "seed": Integer(-(2**63), 2**63 - 1),
    "user": NAME,
}, required=("model", "prompt"))


class CompletionsRoute(OpenAIShaped):
    name = "completions"
    path = "/v1/completions"
    fields = COMPLETIONS

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        """The prompt's texts (token ids are text nobody here can read: Unreadable), the suffix, stops, user."""
        yield from strings_at(body, "prompt")
        yield from texts_at(body, ("suffix", "user"))
        for key in ("stop", *extra_fields):
            if key in body:
                yield from leaves(body, key)

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        for choice in answer.get("choices") or ():
            if isinstance(choice, dict):
                yield from texts_at(choice, ("text",))

    def stream_texts(self, chunk: dict) -> Iterator[StreamText]:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            final = choice.get("finish_reason") is not None
            if isinstance(choice.get("text"), str) or final:
                yield StreamText((choice.get("index", 0), "text"), choice, "text", "content", final)

    def closing_chunks(self, held: dict[tuple, str]) -> list[dict]:
        choices = [{"index": key[0], "text": text} for key, text in sorted(held.items())]
        return [{"object": "text_completion", "choices": choices}] if choices else []

    def started(self, chunk: dict) -> bool:
        return any(isinstance(choice, dict) and choice.get("text") for choice in chunk.get("choices") or ())

    def prompt(self, body: dict) -> dict:
        return {"prompt": joined(body["prompt"])}
