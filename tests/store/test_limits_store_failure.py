"""Admission when Redis goes away and comes back, through the app itself (in process, a Redis server of its own):
closed policies refuse at once (503), open ones answer, both say so in the record; back, limits hold again."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis
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


async def test_an_admission_whose_answer_came_too_late_gives_its_slot_back(tmp_path, redis_server):
    """Redis frozen: the open policy serves without waiting (0.25 s), but Redis still runs the admission when it
    thaws and takes the slot. Unread, that slot would stay taken for its whole lease (15 minutes): one slow second
    of Redis, and a tenant with a concurrency of 1 is refused for a quarter of an hour. It is given back."""
    import signal

    tenant = {**TENANT, "limits": {"mode": "enforce", "concurrency": 1, "on_store_failure": "open"}}
    async with in_process_gateway(tmp_path, tenant, redis_url=redis_server["url"]) as app:
        assert (await app.client.post("/v1/chat/completions", json=BODY, headers=app.auth("acme"))).status_code == 200
        redis_server["process"].send_signal(signal.SIGSTOP)
        try:
            reply = await app.client.post("/v1/chat/completions", json=BODY, headers=app.auth("acme"))
            assert reply.status_code == 200  # open: served without the store
        finally:
            redis_server["process"].send_signal(signal.SIGCONT)
        await asyncio.sleep(0.3)  # the late admission, then its release, run as Redis thaws
        for _ in range(3):  # the slot is free: one request at a time is served
            assert (await app.client.post("/v1/chat/completions", json=BODY,
                                          headers=app.auth("acme"))).status_code == 200
            await asyncio.sleep(0.01)  # a client's turnaround: the last one's release is queued a loop turn later
        await asyncio.sleep(0.1)  # the last one's release goes out at the loop's next turn
        assert redis.Redis.from_url(redis_server["url"]).zcard("gw:lim:{acme}:tenant:concurrency") == 0
