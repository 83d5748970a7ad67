"""Putting pseudonymised values back into the answer, whole or streamed: the PII step's response half.

The provider saw `<EMAIL_ADDRESS_1>`; the client gets the address. Where the
texts are is the route's to say (wrapper/routes: `answer_texts`,
`stream_texts`). In a stream a placeholder may be split across events
(`<EMAIL_AD` + `DRESS_1>`): the tail of a piece that could still become a known
placeholder is held back until the next piece decides it, and nothing else is
held; what is still held when the stream ends comes in one more event (`end`).
"""

from __future__ import annotations

import re

import orjson

from wrapper.routes import Route
from wrapper.upstream.sse import event_data, json_object

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class Restorer:
    """One request's originals, restored in its one answer (a whole answer, or the events of a stream)."""

    def __init__(self, originals: dict[str, str], route: Route) -> None:
        self.originals = originals
        self.route = route
        self._prefixes = {placeholder[:i] for placeholder in originals for i in range(1, len(placeholder))}
        self.held: dict[tuple, str] = {}  # a streamed text's key -> its tail held back

    def text(self, text: str) -> str:
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)

    def held_from(self, text: str) -> int:
        """Where the tail that may be the start of a known placeholder begins (len(text) when there is none)."""
        start = text.rfind("<")
        return start if start >= 0 and text[start:] in self._prefixes else len(text)

    def answer(self, body: bytes) -> bytes:
        """A whole answer with its placeholders restored (a body that is not a JSON object passes as it is)."""
        reply = json_object(body)
        if reply is None:
            return body
        for container, key in self.route.answer_texts(reply):
            container[key] = self.text(container[key])
        return orjson.dumps(reply)

    def event(self, event: bytes) -> bytes:
        """One SSE event with its texts restored, less any tail that may still become a placeholder.

        A text that comes again whole (Responses' `*.done` events) is restored as one; what was held of its
        pieces goes out first, as one more piece."""
        parsed = event_data(event)
        if parsed is None:
            return event
        head, chunk = parsed
        before = b""
        for piece in self.route.stream_texts(chunk):
            if piece.kind in ("whole", "end"):  # the text ends here: what is held of it goes out first
                if piece.key in self.held:
                    before += self._release({piece.key: self.held.pop(piece.key)})
                if piece.kind == "whole":
                    piece.container[piece.field] = self.text(piece.container[piece.field])
                continue
            text = self._feed(piece.key, piece.container.get(piece.field) or "", piece.final)
            if text or piece.field in piece.container:
                piece.container[piece.field] = text
        return before + head + b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self) -> bytes:
        """Events with whatever is still held, for a stream that ends without a finish reason (b"" if nothing)."""
        held, self.held = self.held, {}
        return self._release(held)

    def _release(self, held: dict[tuple, str]) -> bytes:
        chunks = self.route.closing_chunks({key: self.text(text) for key, text in held.items()}) if held else []
        return b"".join(self.route.sse(chunk) for chunk in chunks)

    def _feed(self, key: tuple, piece: str, final: bool) -> str:
        text = self.held.pop(key, "") + piece
        cut = len(text) if final else self.held_from(text)
        if cut < len(text):
            self.held[key] = text[cut:]
        return self.text(text[:cut])

