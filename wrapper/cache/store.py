"""Where cached answers live: Redis when GATEWAY_REDIS_URL is set (shared by replicas), else this process.

An entry is bytes under a key that starts with its tenant's hash tag (`gw:cache:{tenant}:...`): a Redis Cluster keeps
a tenant's entries together, and an operator can drop one tenant's cache with one SCAN. Entries expire after their
endpoint's TTL; in process, the least recently used go first once `max_entries` is reached; on Redis, its own
`maxmemory-policy` decides (allkeys-lru recommended, documented).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from redis.exceptions import RedisError

from wrapper.redis_link import RedisLink

logger = logging.getLogger("wrapper.cache")

TIMEOUT_SECONDS = 0.05  # a cache that does not answer by then is a miss: a cache must never slow a request down


def entry_key(tenant: str, layer: str, digest: str) -> str:
    return f"gw:cache:{{{tenant}}}:{layer}:{digest}"


class LocalCache:
    shared = False

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._entries[key] = (time.monotonic() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class RedisCache:
    shared = True

    def __init__(self, redis: RedisLink) -> None:
        self.redis = redis

    async def get(self, key: str) -> bytes | None:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                value = await self.redis.call("GET", key)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("cache lookup failed (%s): a miss", type(exc).__name__)
            return None
        return value if isinstance(value, bytes) else None

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Every key's entry in one round trip (MGET: a tenant's keys share its hash tag, so a Cluster allows it)."""
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                values = await self.redis.call("MGET", *keys)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("cache lookup failed (%s): a miss", type(exc).__name__)
            return [None] * len(keys)
        return [value if isinstance(value, bytes) else None for value in values]

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self.redis.call("SET", key, value, "EX", ttl_seconds)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("could not store an answer in the cache (%s)", type(exc).__name__)
