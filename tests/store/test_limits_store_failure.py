"""Admission when Redis goes away and comes back, through the app itself (in process, a Redis server of its own):
closed policies refuse at once (503), open ones answer, both say so in the record; back, limits hold again."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.inprocess import TENANT, in_process_gateway

BODY = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
LIMITS = {"mode": "enforce", "requests_per_minute": 3}


async def _decision(app, request_id: str) -> dict:
    reply = await app.client.get(f"/v1/audit/events/{request_id}", headers=app.auth("auditor"))
    return next(d for d in reply.json()["data"][0]["record"]["decisions"] if d["step"] == "admit")


@pytest.mark.parametrize("on_failure", ["closed", "open"])
async def test_redis_down_then_back(tmp_path, redis_server, on_failure):
    tenant = {**TENANT, "limits": {**LIMITS, "on_store_failure": on_failure}}
    async with in_process_gateway(tmp_path, tenant, redis_url=redis_server["url"]) as app:
        assert (await app.client.post("/v1/chat/completions", json=BODY, headers=app.auth("acme"))).status_code == 200
        redis_server["process"].terminate()
        redis_server["process"].wait()
        started = time.monotonic()
        reply = await app.client.post("/v1/chat/completions", json=BODY,
                                      headers={**app.auth("acme"), "x-request-id": "while-down"})
        took = time.monotonic() - started
        if on_failure == "closed":
            assert reply.status_code == 503 and reply.json()["error"]["code"] == "limits_unavailable"
        else:
            assert reply.status_code == 200
        assert took < 1.0  # decided within the store's deadline (0.25 s), not a hang
        decision = await _decision(app, "while-down")
        assert decision["decision"] == ("store_unavailable" if on_failure == "closed" else "store_unavailable_open")

        redis_server["process"] = redis_server["start"]()  # back, empty: limits resume without a restart
        statuses = [(await app.client.post("/v1/chat/completions", json=BODY, headers=app.auth("acme"))).status_code
                    for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
