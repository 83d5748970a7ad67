"""Moderations, image generation, speech and rerank: one JSON request, one answer, no text a step rewrites in the answer
(speech answers in audio, passed through as it arrives).

The allow-lists are the OpenAI API reference's. The texts a step reads are the input (moderations) and the
prompt (images); the answers hold scores, and images with the prompt as the model revised it.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapper.routes import Slot, Unreadable, Unstreamed, texts_as_prompt
from wrapper.routes.chat import MODEL, NAME, TEXT, texts_at
from wrapper.routes.shapes import AnyOf, Array, Boolean, Integer, Number, Object, String, Tagged

MODERATION_PARTS = Tagged("type", {
    "text": Object({"text": TEXT}, required=("text",)),
    "image_url": Object({"image_url": Object({"url": TEXT}, required=("url",))}, required=("image_url",)),
})
MODERATIONS = Object({
    "model": MODEL,
    "input": AnyOf(TEXT, Array(TEXT, min_items=1, max_items=2048), Array(MODERATION_PARTS, min_items=1, max_items=2048),
                   expected="a string, an array of strings, or an array of text and image_url parts"),
}, required=("model", "input"))

IMAGES = Object({
    "model": MODEL,
    "prompt": String(min_length=1, max_length=32000),
    "n": Integer(1, 10),
    "size": NAME,
    "quality": NAME,
    "style": NAME,
    "response_format": String(choices=("url", "b64_json")),
    "background": NAME,
    "moderation": NAME,
    "output_format": NAME,
    "output_compression": Integer(0, 100),
    "user": NAME,
}, required=("model", "prompt"))


SPEECH = Object({
    "model": MODEL,
    "input": String(min_length=1, max_length=4096),
    "voice": AnyOf(NAME, Object({"id": NAME}, required=("id",)), expected="a voice name or {\"id\": ...}"),
    "instructions": String(max_length=4096),
    "response_format": String(choices=("mp3", "opus", "aac", "flac", "wav", "pcm")),
    "speed": Number(0.25, 4),
    "stream_format": String(choices=("audio",)),  # "sse" would need an SSE reader of audio deltas: not served
}, required=("model", "input", "voice"))


class ModerationsRoute(Unstreamed):
    name = "moderations"
    path = "/v1/moderations"
    fields = MODERATIONS

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        value = body["input"]
        if isinstance(value, str):
            yield from texts_at(body, ("input",))
            return
        for index, item in enumerate(value):
            if isinstance(item, str):
                if item:
                    yield value, index
            elif item.get("type") == "text":
                yield from texts_at(item, ("text",))
            else:
                raise Unreadable("input")  # an image: no text step can read it

    def prompt(self, body: dict) -> dict:
        value = body["input"]
        if isinstance(value, str):
            return {"prompt": value}
        return {"prompt": " ".join(v if isinstance(v, str) else v.get("text", "") for v in value)}


class ImagesRoute(Unstreamed):
    name = "images"
    path = "/v1/images/generations"
    fields = IMAGES

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        """The prompt as the model revised it: text the model wrote, which may repeat the client's."""
        for image in answer.get("data") or ():
            if isinstance(image, dict):
                yield from texts_at(image, ("revised_prompt",))

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        yield from texts_at(body, ("prompt", "user"))

    def usage(self, answer: dict) -> dict | None:
        """Token-billed image models (gpt-image-1) count `input_tokens` and `output_tokens`; per-image ones none."""
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return None
        return {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")}

    def prompt(self, body: dict) -> dict:
        return {"prompt": body["prompt"]}


class SpeechRoute(Unstreamed):
    """Text to speech: the answer is audio, passed through as it arrives (its content type kept).

    A text step changes what is spoken: with PII pseudonymized the audio says the placeholders (an answer in audio
    cannot be restored), so redact is the sensible action on this route.
    """

    name = "speech"
    path = "/v1/audio/speech"
    fields = SPEECH
    binary_answer = True

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        yield from texts_at(body, ("input", "instructions"))

    def prompt(self, body: dict) -> dict:
        return {"prompt": body["input"]}


RERANK = Object({
    "model": MODEL,
    "query": String(min_length=1),
    "documents": Array(AnyOf(TEXT, Object({"text": TEXT}, required=("text",)), expected="a string or {\"text\": ...}"),
                       min_items=1, max_items=10_000),
    "top_n": Integer(1, 10_000),
    "return_documents": Boolean(),
    "rank_fields": Array(NAME, max_items=64),
    "max_chunks_per_doc": Integer(1, 10_000),
    "max_tokens_per_doc": Integer(1, 2**31 - 1),
}, required=("model", "query", "documents"))


class RerankRoute(Unstreamed):
    """Rerank (Cohere's API, as LiteLLM serves it for Cohere, Jina, Voyage ... deployments): the query and the
    documents are texts a step reads; the answer repeats the documents when asked to (restored there too)."""

    name = "rerank"
    path = "/v1/rerank"
    fields = RERANK

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        yield from texts_at(body, ("query",))
        for index, document in enumerate(body["documents"]):
            if isinstance(document, str):
                if document:
                    yield body["documents"], index
            else:
                yield from texts_at(document, ("text",))

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        for result in answer.get("results") or ():
            if isinstance(result, dict) and isinstance(result.get("document"), dict):
                yield from texts_at(result["document"], ("text",))

    def usage(self, answer: dict) -> dict | None:
        tokens = ((answer.get("meta") or {}).get("tokens") or {}) if isinstance(answer.get("meta"), dict) else {}
        if not isinstance(tokens, dict) or not tokens:
            return None
        return {"prompt_tokens": tokens.get("input_tokens"), "completion_tokens": tokens.get("output_tokens")}

    def prompt(self, body: dict) -> dict:
        return texts_as_prompt(self, body)
