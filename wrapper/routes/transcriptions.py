"""Audio transcriptions (`POST /v1/audio/transcriptions`): a multipart upload (wrapper.upload), the allow-list of the
OpenAI API reference for its fields, and where the texts are.

The prompt (words to expect) is text a step reads; the file is audio no text step can read, so it is passed on
as it came. The answer is the transcript: JSON (`json`, `verbose_json`: its text and segments are restored) or,
for `text`, `srt` and `vtt`, plain text, passed as it is.
"""

from __future__ import annotations

from collections.abc import Iterator

from wrapper.routes import Slot, Unstreamed
from wrapper.routes.chat import MODEL, NAME, texts_at
from wrapper.routes.shapes import Array, Number, Object, String

TRANSCRIPTIONS = Object({
    "model": MODEL,
    "language": String(max_length=16),
    "prompt": String(max_length=16_384),
    "response_format": String(choices=("json", "text", "srt", "verbose_json", "vtt")),
    "temperature": Number(0, 1),
    "timestamp_granularities": Array(String(choices=("word", "segment")), max_items=2),
    "include": Array(NAME, max_items=8),
    "stream": String(choices=("false",)),  # a streamed transcript (SSE of text deltas) is not served
    "chunking_strategy": NAME,
}, required=("model",))


class TranscriptionsRoute(Unstreamed):
    name = "transcriptions"
    path = "/v1/audio/transcriptions"
    fields = TRANSCRIPTIONS
    multipart = True

    def user_texts(self, body: dict, extra_fields: frozenset[str], system: bool = True) -> Iterator[Slot]:
        yield from texts_at(body, ("prompt",))

    def answer_texts(self, answer: dict) -> Iterator[Slot]:
        yield from texts_at(answer, ("text",))
        for segment in answer.get("segments") or ():
            if isinstance(segment, dict):
                yield from texts_at(segment, ("text",))

    def usage(self, answer: dict) -> dict | None:
        usage = answer.get("usage")
        if not isinstance(usage, dict) or usage.get("type") != "tokens":
            return None  # {"type": "duration", "seconds": ...}: priced by LiteLLM per second, no tokens
        return {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens")}

    def prompt(self, body: dict) -> dict:
        return {"prompt": body.get("prompt") or ""}
