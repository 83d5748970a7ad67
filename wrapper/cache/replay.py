"""A stored stream, replayed as LiteLLM's would arrive: its events in order, then LiteLLM's `[DONE]` (the forward
step's event loop drops it for protocols that end with their own event, as it does for LiteLLM's)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from wrapper.upstream.client import UpstreamStream


def replayed(events: list[str]) -> UpstreamStream:
    async def chunks() -> AsyncIterator[bytes]:
        for event in events:
            yield event.encode()
        yield b"data: [DONE]\n\n"

    return UpstreamStream(headers={}, waited_seconds=0.0, chunks=chunks(), close=lambda: None)
