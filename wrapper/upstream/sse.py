"""Server-sent events, forwarded as they arrive and read on the side.

`split_events` cuts the upstream byte stream into whole SSE events without
waiting for more than the rest of the current event (what each says is noted
on the side by wrapper.context.StreamSummary). `EventStreamResponse` sends each
event at once and closes the upstream stream the moment the client goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

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


def json_object(raw: bytes) -> dict | None:
    """The JSON object `raw` holds; None when it is not JSON or not an object (the answer passes as it came)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def event_data(event: bytes) -> tuple[bytes, dict] | None:
    """An event whose data is one JSON object: (the lines before its data, e.g. `event: ...`, and the object)."""
    start = 0 if event.startswith(b"data:") else event.find(b"\ndata:") + 1
    if start < 0 or (start == 0 and not event.startswith(b"data:")):
        return None
    payload = json_object(event[start + 5:])
    return None if payload is None else (event[:start], payload)


def _first_separator(data: bytes) -> int:
    ends = [i + len(sep) for sep in _SEPARATORS if (i := data.find(sep)) >= 0]
    return min(ends) if ends else -1


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
