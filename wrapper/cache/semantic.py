"""The semantic layer: a stored answer whose question means the same, found among the entries that can be equal.

Similarity alone cannot tell "refund order #48213" from "#48214" (cosine 0.994 with MiniLM) nor "enable 2FA" from
"disable 2FA". So entries are grouped in buckets, and a request is compared only with the entries of its bucket:
same tenant, endpoint, route, model and parameters; the same earlier messages (system prompt included) exactly;
the same slot values in its last message (numbers, dates, ids ...: keys.py); the same polarity cues (negations
and words that have an opposite: enable/disable, before/after ...) and the same names (capitalised words inside a
sentence). Within a bucket, the nearest stored question (cosine of MiniLM embeddings of the templates) is a hit at
or above the endpoint's `semantic_threshold`. A bucket keeps at most BUCKET_SIZE entries.
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
_CUES = frozenset("""
not no never none nothing nobody neither nor without cannot can't don't doesn't didn't won't wouldn't shouldn't isn't
aren't wasn't weren't haven't hasn't hadn't mustn't n't stop start enable disable enabled disabled allow deny block
unblock allowed blocked increase decrease raise lower add remove added removed include exclude before after above
below over under more less most least max min maximum minimum buy sell import export upload download accept reject
approve decline lock unlock encrypt decrypt connect disconnect install uninstall subscribe unsubscribe activate
deactivate true false yes on off open close opened closed up down in out first last highest lowest cheapest best
worst upgrade downgrade cancel keep join leave send receive win lose increase reduce higher lower faster slower
""".split())
_WORD = re.compile(r"[\w']+")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+\b")  # capitalised, not where a sentence starts


def cues(text: str) -> list[str]:
    """The polarity words and names of a text: a request is compared only with entries that have the same."""
    words = {w.casefold() for w in _WORD.findall(text)}
    found = sorted(w for w in words if w in _CUES or w.endswith("n't"))
    return found + sorted(set(_NAME.findall(text.strip())))


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


def nearest(vectors: dict[str, bytes], query: np.ndarray, threshold: float) -> tuple[str, float] | None:
    """The entry whose vector is nearest the query, if its cosine reaches the threshold."""
    if not vectors:
        return None
    digests = list(vectors)
    matrix = np.frombuffer(b"".join(vectors[d] for d in digests), dtype=np.float32).reshape(len(digests), -1)
    scores = matrix @ query
    best = int(np.argmax(scores))
    return (digests[best], float(scores[best])) if scores[best] >= threshold else None


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
