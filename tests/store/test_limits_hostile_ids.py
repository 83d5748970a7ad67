"""A client chooses its x-request-id: admission must not count it as the request's entry.

Were the counters keyed by it, a tenant sending the same id every time would be one entry in its window and one
lease, whatever it sent: its requests per minute and its concurrency would mean nothing. Through the app in
process, on both stores.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.support.inprocess import MODELS, TENANT, in_process_gateway

REDIS_URL = "redis://127.0.0.1:6379/0"
CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _flush() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    if keys := client.keys("gw:lim:{acme}:*"):
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("where", ["in process", "Redis"])
async def test_one_request_id_sent_every_time_still_meets_the_rate_and_the_concurrency(tmp_path, where):
    _flush()
    overrides = {"redis_url": REDIS_URL} if where == "Redis" else {}
    tenant = {**TENANT, "limits": {"mode": "enforce", "requests_per_minute": 3, "tokens_per_minute": 10**6}}
    models = {**MODELS, "slow": {"latency_ms": 300}}
    async with in_process_gateway(tmp_path, tenant, {**models}, **overrides) as gateway:
        headers = {**gateway.auth("acme"), "x-request-id": "always-the-same"}
        statuses = [(await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)).status_code
                    for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]

        tenant["limits"] = {"mode": "enforce", "concurrency": 1}
        tenant["models"] = [*TENANT["models"], "slow"]
        await asyncio.sleep(0)
        _rewrite(gateway, tenant)
        replies = await asyncio.gather(*(gateway.client.post("/v1/chat/completions", json={**CHAT, "model": "slow"},
                                                             headers=headers) for _ in range(3)))
        assert sorted(r.status_code for r in replies) == [200, 429, 429]
        assert {r.json()["error"]["code"] for r in replies if r.status_code == 429} == {"concurrency"}
        # and the slot comes back: the next one is served
        assert (await gateway.client.post("/v1/chat/completions", json={**CHAT, "model": "slow"},
                                          headers=headers)).status_code == 200
    _flush()


def _rewrite(gateway, tenant: dict) -> None:
    import yaml

    data = yaml.safe_load(gateway.config.read_text())
    data["tenants"]["acme"].update({"limits": tenant["limits"], "models": tenant["models"]})
    gateway.config.write_text(yaml.safe_dump(data, sort_keys=False))
