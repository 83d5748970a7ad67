"""Give a stream's concurrency slots back when LiteLLM has really closed the provider's stream.

When a client hangs up mid-stream, the wrapper's side ends at once, but LiteLLM 1.108.5 notices only when it next
writes to the wrapper (at the provider's next chunk, later still when its event loop is busy) and closes the
provider's stream after that. Were the slot given back when the wrapper's side ended, the next request could reach
the provider while the abandoned stream is still open there: a concurrency limit of 8 would let the provider see 9.

So, for a stream it forwards with limits on Redis, the wrapper seals the slots' keys into the request
(`gateway_release`); if the stream is cut before its end, the wrapper leaves the slots taken (their leases
shortened to a grace period: wrapper/limits), and this wrapper of LiteLLM's stream closes the provider's stream and
then removes the leases on Redis. A stream that ends normally is released by the wrapper as any request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import anyio

logger = logging.getLogger("custom_callbacks.slot_release")

REDIS_ENV = "GATEWAY_REDIS_URL"
_clients: dict = {}  # event loop -> its Redis client (LiteLLM runs one loop; tests run several)


async def release_after_close(response, release: str) -> None:
    """The provider's stream closed (`response`, LiteLLM's stream of it), then the slots `release` names removed.
    Runs where LiteLLM's stream is closed early: on a cancelled task, so shielded."""
    with anyio.CancelScope(shield=True):
        if hasattr(response, "aclose"):
            try:
                await response.aclose()  # the provider's stream first
            except Exception as exc:  # noqa: BLE001 - the slots must be given back all the same
                logger.debug("closing the provider's stream failed (%s)", type(exc).__name__)
        await _release(release)


async def _release(release: str) -> None:
    try:
        slots = json.loads(release)
        keys, request_id = [str(key) for key in slots["keys"]], str(slots["id"])
    except (ValueError, KeyError, TypeError):
        logger.error("a sealed gateway_release could not be read: its slots expire with their grace period")
        return
    url = os.environ.get(REDIS_ENV)
    if not url:
        logger.error("%s is not set for LiteLLM: slots of hung-up streams are held until their grace period ends",
                     REDIS_ENV)
        return
    try:
        async with _client(url).pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrem(key, request_id)
            await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - never breaks LiteLLM; the leases expire with their grace period
        logger.error("could not give back %d concurrency slots on Redis (%s)", len(keys), type(exc).__name__)


def _client(url: str):
    import redis.asyncio

    loop = asyncio.get_running_loop()
    if loop not in _clients:
        _clients.clear()  # a loop that is gone has no use for its client
        _clients[loop] = redis.asyncio.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return _clients[loop]
