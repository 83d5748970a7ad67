"""The hot path's Redis connection: scripts pipelined on one connection, each caller gets its own reply, and every
way Redis can fail (unknown script, a script error, a killed connection, a stopped or dead server, a password)
ends in a clear error or a reconnect, never a wrong reply or a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from wrapper.redis_link import RedisLink, Script

ECHO = Script("return {KEYS[1], ARGV[1]}")
INCR = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def test_many_callers_at_once_each_get_their_own_reply():
    link = RedisLink("redis://127.0.0.1:6379/0")
    try:
        replies = await asyncio.gather(*(link.run(ECHO, [f"k{i}"], [f"v{i}"]) for i in range(500)))
        assert replies == [[f"k{i}".encode(), f"v{i}".encode()] for i in range(500)]
        assert len({id(link._protocol)}) == 1  # one connection carried them all
    finally:
        await link.close()


async def test_start_sends_at_once_so_the_caller_works_while_redis_answers():
    link = RedisLink("redis://127.0.0.1:6379/0")
    key = f"gw:test:{uuid.uuid4().hex}"
    try:
        await link.run(INCR, [key], [0])  # connected, the script known
        pending = link.start(INCR, [key], [5])
        # Without yielding to the event loop once, Redis has already run it: the command left at `start`.
        other = redis.Redis()
        deadline = time.monotonic() + 5
        while other.get(key) != b"5" and time.monotonic() < deadline:
            time.sleep(0.001)
        assert other.get(key) == b"5"
        assert await pending == 5
    finally:
        await link.close()


async def test_a_script_redis_has_not_seen_is_sent_once_whole():
    link = RedisLink("redis://127.0.0.1:6379/0")
    fresh = Script(f"return '{uuid.uuid4().hex}'")  # never loaded
    try:
        assert (await link.run(fresh, [], [])).decode() == fresh.source.split("'")[1]
        redis.Redis().script_flush()
        assert await link.run(INCR, [f"gw:test:{uuid.uuid4().hex}"], [3]) == 3
    finally:
        await link.close()


async def test_a_script_error_is_a_response_error_and_the_connection_goes_on():
    link = RedisLink("redis://127.0.0.1:6379/0")
    try:
        with pytest.raises(ResponseError, match="not an integer"):
            await link.run(INCR, [f"gw:test:{uuid.uuid4().hex}"], ["seven"])
        assert await link.run(INCR, [f"gw:test:{uuid.uuid4().hex}"], [7]) == 7
    finally:
        await link.close()


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects():
    link = RedisLink("redis://127.0.0.1:6379/0")
    key = f"gw:test:{uuid.uuid4().hex}"
    try:
        await link.run(INCR, [key], [1])
        host, port = link._protocol.transport.get_extra_info("sockname")[:2]
        redis.Redis().client_kill(f"{host}:{port}")
        with pytest.raises(RedisConnectionError):
            for _ in range(50):  # the loss is seen at the next read
                await link.run(INCR, [key], [1])
                await asyncio.sleep(0.01)
        assert await link.run(INCR, [key], [1]) >= 2  # reconnected by itself
    finally:
        await link.close()


async def test_a_dead_server_is_an_error_within_the_connect_timeout_and_its_return_is_seen(redis_server):
    link = RedisLink(redis_server["url"], connect_timeout=0.5)
    key = "gw:test:back"
    try:
        assert await link.run(INCR, [key], [1]) == 1
        redis_server["process"].kill()
        redis_server["process"].wait()
        started = time.monotonic()
        for _ in range(2):  # the lost connection, then a refused reconnect
            with pytest.raises(RedisConnectionError):
                await link.run(INCR, [key], [1])
        assert time.monotonic() - started < 1.5
        redis_server["process"] = redis_server["start"]()
        assert await link.run(INCR, [key], [5]) == 5  # a new, empty server
    finally:
        await link.close()


async def test_a_stopped_server_times_callers_out_and_a_stalled_connection_is_replaced(redis_server):
    link = RedisLink(redis_server["url"], connect_timeout=0.5, stall_seconds=0.5)
    key = "gw:test:stall"
    try:
        await link.run(INCR, [key], [1])
        os.kill(redis_server["process"].pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.25):
                    await link.run(INCR, [key], [1])
            await asyncio.sleep(0.5)
            stalled = link._protocol
            with pytest.raises((TimeoutError, RedisConnectionError)):
                async with asyncio.timeout(0.25):
                    await link.run(INCR, [key], [1])  # the stalled connection is dropped, a new one tried
            assert link._protocol is not stalled or stalled.lost
        finally:
            os.kill(redis_server["process"].pid, signal.SIGCONT)
        for _ in range(40):  # back: answered again, on a connection whose replies match its callers
            try:
                value = await link.run(INCR, [key], [100])
                break
            except (RedisConnectionError, TimeoutError):
                await asyncio.sleep(0.05)
        assert value >= 101 and await link.run(INCR, [key], [0]) == value
    finally:
        await link.close()


async def test_a_deadline_fails_a_call_in_time_and_its_late_reply_goes_to_nobody_else(redis_server):
    """The limits step's bound is the link's: a stopped server fails each waiting call at its own deadline (one timer
    for all of them), and once the server runs again its late replies are dropped, not given to the next callers."""
    link = RedisLink(redis_server["url"], connect_timeout=0.5, stall_seconds=5)
    key = "gw:test:deadline"
    try:
        assert await link.run(INCR, [key], [1]) == 1
        os.kill(redis_server["process"].pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            early, late = link.start(INCR, [key], [10], deadline=0.2), link.start(INCR, [key], [100], deadline=0.6)
            outcomes = await asyncio.gather(early, late, return_exceptions=True)
            waited = time.monotonic() - started
            assert all(isinstance(outcome, TimeoutError) for outcome in outcomes), outcomes
            assert 0.55 <= waited < 1.5, waited
        finally:
            os.kill(redis_server["process"].pid, signal.SIGCONT)
        assert await link.start(INCR, [key], [1000], deadline=2) == 1111  # both late ones ran; their replies dropped
    finally:
        await link.close()


async def test_password_and_database_come_from_the_url(redis_server):
    redis_server["process"].kill()
    redis_server["process"].wait()
    redis_server["process"] = redis_server["start"]("--requirepass", "s3cret")
    port, key = redis_server["port"], "gw:test:db"
    good = RedisLink(f"redis://:s3cret@127.0.0.1:{port}/5")
    bad = RedisLink(f"redis://:wrong@127.0.0.1:{port}/5")
    try:
        assert await good.run(INCR, [key], [4]) == 4
        assert redis.Redis(port=port, password="s3cret", db=5).get(key) == b"4"  # in database 5, not 0
        with pytest.raises(RedisConnectionError, match="refused the connection's setup"):
            await bad.run(INCR, [key], [1])
    finally:
        await good.close()
        await bad.close()
