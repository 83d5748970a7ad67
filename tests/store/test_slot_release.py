"""LiteLLM's side of a cut stream's concurrency slots (custom_callbacks/slot_release.py, through the guard's stream
hook): given back on real Redis only once the provider's stream is closed, and only for a stream cut before its end."""

from __future__ import annotations

import json
import uuid

import pytest
from redis.asyncio import Redis

from custom_callbacks.guard import WrapperOnlyGuard

REDIS_URL = "redis://127.0.0.1:6379/0"


class ProviderStream:
    """LiteLLM's stream of the provider's: `chunks` chunks, then its end; notes when it is closed."""

    def __init__(self, chunks: int, on_close) -> None:
        self.left, self.on_close = chunks, on_close

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        if not self.left:
            raise StopAsyncIteration
        self.left -= 1
        return "chunk"

    async def aclose(self) -> None:
        await self.on_close()


@pytest.fixture
async def slot(monkeypatch):
    monkeypatch.setenv("GATEWAY_REDIS_URL", REDIS_URL)
    redis = Redis.from_url(REDIS_URL)
    key, request_id = f"gw:lim:{{t-{uuid.uuid4().hex[:8]}}}:endpoint:e:concurrency", uuid.uuid4().hex
    await redis.zadd(key, {request_id: 10**13})
    yield redis, key, {"keys": [key], "id": request_id}
    await redis.delete(key)
    await redis.aclose()


def _hook(release: dict | None, response):
    metadata = {"gateway_release": json.dumps(release)} if release else {}
    return WrapperOnlyGuard().async_post_call_streaming_iterator_hook(None, response, {"metadata": metadata})


async def test_a_cut_streams_slot_is_given_back_after_the_providers_stream_is_closed(slot):
    redis, key, release = slot
    seen_at_close = []

    async def closing() -> None:
        seen_at_close.append(await redis.zcard(key))

    stream = _hook(release, ProviderStream(5, closing))
    assert await stream.__anext__() == "chunk"
    await stream.aclose()  # the wrapper hung up: LiteLLM closes its layers
    assert seen_at_close == [1]  # the slot was still taken while the provider's stream was being closed
    assert await redis.zcard(key) == 0


async def test_a_stream_that_ends_is_left_for_the_wrapper_to_release_and_no_release_means_no_change(slot):
    redis, key, release = slot

    async def closing() -> None:
        pass

    assert [chunk async for chunk in _hook(release, ProviderStream(3, closing))] == ["chunk"] * 3
    assert await redis.zcard(key) == 1  # ended normally: the wrapper gives it back with its settlement
    stream = _hook(None, ProviderStream(3, closing))
    await stream.__anext__()
    await stream.aclose()
    assert await redis.zcard(key) == 1


async def test_an_unreadable_release_or_a_redis_that_is_down_never_breaks_litellms_stream(slot, monkeypatch):
    redis, key, release = slot

    async def closing() -> None:
        pass

    stream = WrapperOnlyGuard().async_post_call_streaming_iterator_hook(
        None, ProviderStream(3, closing), {"metadata": {"gateway_release": "{not json"}})
    await stream.__anext__()
    await stream.aclose()
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    import custom_callbacks.slot_release as slot_release

    slot_release._clients.clear()
    stream = _hook(release, ProviderStream(3, closing))
    await stream.__anext__()
    await stream.aclose()
    assert await redis.zcard(key) == 1  # kept: its lease expires with the wrapper's grace period
