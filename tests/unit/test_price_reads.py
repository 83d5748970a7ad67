"""Model prices for budgets (wrapper/upstream/stream_usage.py): concurrent first requests all get them."""

from __future__ import annotations

import asyncio

import orjson

from wrapper.upstream.stream_usage import StreamUsageCounter

INFO = {"data": [{"model_name": "dear", "model_info": {"id": "d1", "input_cost_per_token": 0.0001,
                                                        "output_cost_per_token": 0.0002}}]}


class SlowLiteLLM:
    def __init__(self) -> None:
        self.reads = 0

    async def get(self, path: str) -> tuple[int, bytes]:
        self.reads += 1
        await asyncio.sleep(0.05)
        return 200, orjson.dumps(INFO)


async def test_concurrent_first_requests_wait_for_the_one_price_read():
    litellm = SlowLiteLLM()
    counter = StreamUsageCounter(litellm)
    prices = await asyncio.gather(*(counter.group_prices("dear") for _ in range(64)))
    # Before, the first read's callers had the prices and the 63 others None: a budget reserved at $0 for them.
    assert prices == [(0.0001, 0.0002)] * 64 and litellm.reads == 1
