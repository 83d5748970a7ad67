"""The semantic layer: a stored answer whose question means the same, found among the entries that can be equal.

Similarity alone cannot tell "refund order #48213" from "#48214" (cosine 0.994 with MiniLM) nor "enable 2FA" from
"disable 2FA". So entries are grouped in buckets, and a request is compared only with the entries of its bucket:
same tenant, endpoint, route, model and parameters; the same earlier messages (system prompt included) exactly;
the same slot values in its last message, in order (numbers, dates, ids ...: keys.py). Within a bucket, the
nearest stored question (cosine of MiniLM embeddings of the templates) at or above the endpoint's
`semantic_threshold` is a hit unless meaning.differs tells the two apart (names, counts and dates in words,
negation, opposites, or the same sentence with a content word changed). A bucket keeps at most BUCKET_SIZE
entries.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from redis.exceptions import RedisError

from wrapper.redis_link import RedisLink

logger = logging.getLogger("wrapper.cache")

BUCKET_SIZE = 128
NEAREST = 8  # candidates above the threshold asked whether they differ (meaning.py), nearest first


def readable(template: str) -> str:
    """A template as the model reads it: each slot as a bracketed type (`refund order [id]`)."""
    return re.sub("\x00(\\w+)\x00", lambda m: f"[{m.group(1).lower()}]", template)


class Embedder:
    """MiniLM (embedding.py) on one thread of its own: ~10 ms of numpy that must not stop the event loop."""

    def __init__(self) -> None:
        self._model = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed")

    async def embed(self, text: str) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._embed, text)

    def _embed(self, text: str) -> np.ndarray:
        if self._model is None:
            from wrapper.cache.embedding import MiniLM

            self._model = MiniLM()
        return self._model.embed(text)


def entry_value(vector: np.ndarray, said: str) -> bytes:
    """What the index keeps of a stored question: its vector, then its text (for meaning.differs)."""
    return vector.astype(np.float32).tobytes() + said.encode()


def nearest(vectors: dict[str, bytes], query: np.ndarray, threshold: float) -> list[tuple[str, float, str]]:
    """The entries whose cosine with the query reaches the threshold, nearest first (at most NEAREST): each with its
    digest, cosine and text."""
    if not vectors:
        return []
    size = query.astype(np.float32).nbytes
    digests = [d for d, value in vectors.items() if len(value) >= size]
    if not digests:
        return []
    matrix = np.frombuffer(b"".join(vectors[d][:size] for d in digests), dtype=np.float32).reshape(len(digests), -1)
    scores = matrix @ query
    order = [int(i) for i in np.argsort(-scores)[:NEAREST] if scores[i] >= threshold]
    return [(digests[i], float(scores[i]), vectors[digests[i]][size:].decode(errors="replace")) for i in order]


class LocalIndex:
    def __init__(self, max_buckets: int = 10_000) -> None:
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, dict[str, bytes]]] = OrderedDict()

    async def vectors(self, bucket: str) -> dict[str, bytes]:
        found = self._buckets.get(bucket)
        if found is None or found[0] <= time.monotonic():
            return {}
        return found[1]

    async def add(self, bucket: str, digest: str, vector: bytes, ttl_seconds: int) -> None:
        _, entries = self._buckets.get(bucket, (0.0, {}))
        if len(entries) < BUCKET_SIZE:
            entries[digest] = vector
        self._buckets[bucket] = (time.monotonic() + ttl_seconds, entries)
        self._buckets.move_to_end(bucket)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)


class RedisIndex:
    def __init__(self, redis: RedisLink) -> None:
        self.redis = redis

    async def vectors(self, bucket: str) -> dict[str, bytes]:
        try:
            async with asyncio.timeout(0.05):
                flat = await self.redis.call("HGETALL", bucket)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("semantic lookup failed (%s): a miss", type(exc).__name__)
            return {}
        return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}

    async def add(self, bucket: str, digest: str, vector: bytes, ttl_seconds: int) -> None:
        try:
            async with asyncio.timeout(1.0):
                if int(await self.redis.call("HLEN", bucket)) < BUCKET_SIZE:
                    await self.redis.call("HSET", bucket, digest, vector)
                await self.redis.call("EXPIRE", bucket, ttl_seconds)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("could not index an answer for the semantic layer (%s)", type(exc).__name__)
