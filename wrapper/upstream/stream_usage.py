"""The usage and cost of a stream that ended before its usage chunk: the client left, or the stream broke.

The provider billed what it produced, but a stream cut short never reports it.
LiteLLM can still tell: it counts tokens with the deployment's own tokenizer
(`/utils/token_counter`, offline) and knows each deployment's prices, custom
ones included (`/model/info`). The gateway asks it once the stream is over, so
nobody waits on the answer; a count that fails or takes too long leaves the
usage unknown, and never the record unwritten.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from wrapper.errors import GatewayError
from wrapper.upstream.client import LiteLLMClient

logger = logging.getLogger("wrapper.upstream.stream_usage")

COUNT_TIMEOUT_SECONDS = 5.0
_PRICES_REFRESH_SECONDS = 30.0  # an unknown deployment re-reads the price list at most this often


class StreamUsageCounter:
    def __init__(self, litellm: LiteLLMClient) -> None:
        self._litellm = litellm
        self._prices: dict[str, tuple[float, float]] = {}  # deployment id -> (input, output) per token
        self._per_character: dict[str, float] = {}  # deployment id -> per input character (speech)
        self._group_prices: dict[str, tuple[float, float]] = {}  # model group -> its dearest deployment's prices
        self._prices_read_at = float("-inf")
        self._reading: asyncio.Task | None = None  # the read in flight, which every caller waits for

    async def count(self, prompt: dict, produced: str, model_group: str, deployment_id: str | None,
                    request_id: str) -> dict | None:
        """Usage in the shape of OpenAI's (plus `cost` and `estimated`), or None when it cannot be counted.

        `prompt` is what the route says a count of the request's tokens reads (wrapper.routes: `prompt`)."""
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_SECONDS):
                tokens_in, tokens_out, prices = await asyncio.gather(
                    self._tokens({"model": model_group, **prompt}, request_id),
                    self._tokens({"model": model_group, "prompt": produced}, request_id) if produced else _zero(),
                    self._prices_of(deployment_id),
                )
        except (GatewayError, TimeoutError, ValueError, TypeError, KeyError) as exc:
            logger.warning("could not count the usage of an unfinished stream (%s)", type(exc).__name__)
            return None
        usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                 "total_tokens": tokens_in + tokens_out, "estimated": True}
        if prices is not None:
            usage["cost"] = tokens_in * prices[0] + tokens_out * prices[1]
        return usage

    async def cost_of(self, tokens_in: object, tokens_out: object, deployment_id: str | None) -> float | None:
        """What these tokens cost at the deployment's prices, for usage LiteLLM left unpriced (Anthropic's stream
        events carry tokens only); None when the prices or the tokens are unknown."""
        if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
            return None
        if deployment_id not in self._prices:
            await self._bounded_refresh()
        prices = self._prices.get(deployment_id or "")
        return tokens_in * prices[0] + tokens_out * prices[1] if prices else None

    async def speech_cost(self, text: str, deployment_id: str | None) -> float | None:
        """What saying `text` costs at the deployment's price per character (LiteLLM gives no cost for speech)."""
        if deployment_id not in self._per_character:
            await self._bounded_refresh()
        price = self._per_character.get(deployment_id or "")
        return len(text) * price if price is not None else None

    async def _tokens(self, body: dict, request_id: str) -> int:
        reply = await self._litellm.post("/utils/token_counter", orjson.dumps(body), request_id)
        total = orjson.loads(reply.body)["total_tokens"]
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ValueError("token_counter answered without a count")
        return total

    async def _prices_of(self, deployment_id: str | None) -> tuple[float, float] | None:
        if deployment_id is None:
            return None
        if deployment_id not in self._prices:
            await self._refresh()
        return self._prices.get(deployment_id)

    async def group_prices(self, group: str | None) -> tuple[float, float] | None:
        """A model group's prices per token: its dearest deployment's (what a budget reserves before knowing which
        deployment will answer). None when LiteLLM knows none."""
        if group is None:
            return None
        if group not in self._group_prices:
            await self._bounded_refresh()
        return self._group_prices.get(group)

    async def _bounded_refresh(self) -> None:
        """The price list read again, within COUNT_TIMEOUT_SECONDS; a failure leaves the prices as they were."""
        try:
            async with asyncio.timeout(COUNT_TIMEOUT_SECONDS):
                await self._refresh()
        except (GatewayError, TimeoutError, ValueError, TypeError, KeyError) as exc:
            logger.warning("could not read model prices (%s)", type(exc).__name__)

    async def _refresh(self) -> None:
        """/model/info, read again at most every _PRICES_REFRESH_SECONDS. Callers that come while it is being read
        wait for that read: sixty-four concurrent first requests must not find no prices (a budget reserved at $0)."""
        if self._reading is None:
            if time.monotonic() - self._prices_read_at <= _PRICES_REFRESH_SECONDS:
                return
            self._prices_read_at = time.monotonic()
            self._reading = asyncio.ensure_future(self._read())
            self._reading.add_done_callback(self._read_ended)
        await asyncio.shield(self._reading)

    def _read_ended(self, task: asyncio.Task) -> None:
        self._reading = None
        if not task.cancelled():
            task.exception()  # retrieved here: its waiters may all have given up

    async def _read(self) -> None:
        status, content = await self._litellm.get("/model/info")
        if status == 200:
            info = orjson.loads(content)
            self._prices, self._per_character = _prices_by_deployment(info), _per_character(info)
            self._group_prices = _prices_by_group(info, self._prices)


def _prices_by_deployment(model_info: dict) -> dict[str, tuple[float, float]]:
    prices = {}
    for deployment in model_info.get("data") or ():
        info = deployment.get("model_info") or {}
        price_in, price_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if info.get("id") and isinstance(price_in, int | float) and isinstance(price_out, int | float):
            prices[info["id"]] = (float(price_in), float(price_out))
    return prices


def _prices_by_group(model_info: dict, by_deployment: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    groups: dict[str, tuple[float, float]] = {}
    for deployment in model_info.get("data") or ():
        prices = by_deployment.get((deployment.get("model_info") or {}).get("id"))
        name = deployment.get("model_name")
        if prices and isinstance(name, str):
            old = groups.get(name, (0.0, 0.0))
            groups[name] = (max(old[0], prices[0]), max(old[1], prices[1]))
    return groups


def _per_character(model_info: dict) -> dict[str, float]:
    prices = {}
    for deployment in model_info.get("data") or ():
        info = deployment.get("model_info") or {}
        price = info.get("input_cost_per_character")
        if info.get("id") and isinstance(price, int | float) and not isinstance(price, bool):
            prices[info["id"]] = float(price)
    return prices


async def _zero() -> int:
    return 0
