"""Server-sent events, forwarded as they arrive and read on the side.

`split_events` cuts the upstream byte stream into whole SSE events without
waiting for more than the rest of the current event. `StreamSummary` notes
what later steps need (usage, finish reason, time to first token) without
touching what is forwarded. `EventStreamResponse` sends each event at once and
closes the upstream stream the moment the client goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
from starlette.responses import Response

_SEPARATORS = (b"\n\n", b"\r\n\r\n")


async def split_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each complete SSE event (with its blank-line terminator) as soon as it is complete."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        while True:
            cut = _first_separator(pending)
            if cut < 0:
                break
            yield pending[:cut]
            pending = pending[cut:]
    if pending.strip():
        yield pending  # an unterminated last event is still the client's to see


def _first_separator(data: bytes) -> int:
    ends = [i + len(sep) for sep in _SEPARATORS if (i := data.find(sep)) >= 0]
    return min(ends) if ends else -1


@dataclass
class StreamSummary:
    """What the stream said, for the response path (cost, audit, metrics)."""

    started_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    events: int = 0
    finish_reason: str | None = None
    usage: dict | None = None
    model: str | None = None
    error: dict | None = None
    done: bool = False
    text: list[str] = field(default_factory=list)  # the answer's text deltas (audit content `full`, usage counts)
    tool_arguments: list[str] = field(default_factory=list)  # tool calls' argument deltas: produced tokens too

    def observe(self, event: bytes) -> None:
        self.events += 1
        for line in event.splitlines():
            if line.startswith(b"data:"):
                self._observe_data(line[5:].strip())

    def _observe_data(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        if self.first_token_at is None and payload.get("choices"):
            self.first_token_at = time.perf_counter()
        self.model = payload.get("model") or self.model
        self.usage = payload.get("usage") or self.usage
        self.error = payload.get("error") or self.error
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if isinstance(delta := choice.get("delta"), dict):
                if isinstance(delta.get("content"), str):
                    self.text.append(delta["content"])
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        self.tool_arguments.append(function["arguments"])

    @property
    def produced(self) -> str:
        """Everything the model generated so far, as text: what a count of its output tokens reads."""
        return "".join(self.text) + "".join(self.tool_arguments)

    @property
    def time_to_first_token_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started_at) * 1000


class EventStreamResponse(Response):
    """An ASGI response that pumps SSE events and stops the pump on client disconnect.

    Stopping means cancelling the pump, so the event source's `finally` runs at once
    and closes the upstream connection, instead of whenever the next event would
    have failed to send.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **headers})
        self.client_disconnected = False

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():
                self.client_disconnected = True
                pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        finally:
            watcher.cancel()
            await self.events.aclose()

    async def _pump(self, send) -> None:
        async for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
