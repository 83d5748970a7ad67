"""Putting pseudonymised values back into the answer, whole or streamed.

The provider saw `<EMAIL_ADDRESS_1>`; the client gets the address. In a stream
a placeholder may be split across events (`<EMAIL_AD` + `DRESS_1>`): the tail
of a piece that could still become a known placeholder is held back until the
next piece decides it, and nothing else is held.
"""

from __future__ import annotations

import re

import orjson

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


class Restorer:
    def __init__(self, originals: dict[str, str]) -> None:
        self.originals = originals
        self._prefixes = {placeholder[:i] for placeholder in originals for i in range(1, len(placeholder))}

    def text(self, text: str) -> str:
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)

    def held_from(self, text: str) -> int:
        """Where the tail that may be the start of a known placeholder begins (len(text) when there is none)."""
        start = text.rfind("<")
        return start if start >= 0 and text[start:] in self._prefixes else len(text)

    def answer(self, raw: bytes) -> bytes:
        """A whole chat completion with its placeholders restored (any other body is passed as it is)."""
        reply = _with_choices(raw)
        if reply is None:
            return raw
        for choice in reply["choices"]:
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                self._restore_message(choice["message"])
        return orjson.dumps(reply)

    def _restore_message(self, message: dict) -> None:
        if isinstance(message.get("content"), str):
            message["content"] = self.text(message["content"])
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = self.text(function["arguments"])

    def stream(self) -> StreamRestorer:
        return StreamRestorer(self)


class StreamRestorer:
    """Restores the SSE events of one stream, holding back partial placeholders per choice and tool call."""

    def __init__(self, restorer: Restorer) -> None:
        self.restorer = restorer
        self.held: dict[tuple, str] = {}  # (choice, "content") or (choice, "tool", index) -> held text

    def event(self, event: bytes) -> bytes:
        """One SSE event with its text restored; `data: [DONE]` is preceded by whatever is still held."""
        if not event.startswith(b"data:"):
            return event
        payload = event[5:].strip()
        if payload == b"[DONE]":
            rest = self._rest_event()
            return rest + event if rest else event
        chunk = _with_choices(payload)
        if chunk is None:
            return event
        for choice in chunk["choices"]:
            if isinstance(choice, dict):
                self._restore_choice(choice)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _restore_choice(self, choice: dict) -> None:
        index = choice.get("index", 0)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        ends = choice.get("finish_reason") is not None
        if isinstance(delta.get("content"), str) or (ends and (index, "content") in self.held):
            delta["content"] = self._feed((index, "content"), delta.get("content") or "", ends)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = self._feed((index, "tool", call.get("index", 0)), function["arguments"], ends)

    def _feed(self, key: tuple, piece: str, ends: bool) -> str:
        text = self.held.pop(key, "") + piece
        cut = len(text) if ends else self.restorer.held_from(text)
        if cut < len(text):
            self.held[key] = text[cut:]
        return self.restorer.text(text[:cut])

    def _rest_event(self) -> bytes:
        """An event carrying text still held when the stream ended without a finish reason."""
        choices: dict[int, dict] = {}
        for key, text in sorted(self.held.items(), key=lambda item: repr(item[0])):
            delta = choices.setdefault(key[0], {"index": key[0], "delta": {}})["delta"]
            if key[1] == "content":
                delta["content"] = self.restorer.text(text)
            else:
                delta.setdefault("tool_calls", []).append({"index": key[2], "function": {"arguments": self.restorer.text(text)}})
        self.held.clear()
        if not choices:
            return b""
        return b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": list(choices.values())}) + b"\n\n"


def _with_choices(raw: bytes) -> dict | None:
    """A completion or chunk with a list of choices; None for anything else (passed on untouched)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("choices"), list) else None
