"""Admission's counters on real Redis (and in process): exact under concurrency, across replicas, on Redis' clock.

Each Redis test runs against 127.0.0.1:6379 with keys of its own; "replicas" are separate clients with their own
connection pools, as two wrappers would be. Windows are shortened (1-2 s instead of 60 s) so the tests wait seconds,
not minutes; the scripts take the window as an argument, so the logic under test is the one that runs.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from wrapper.redis_link import RedisLink

from wrapper.limits.charges import MICRO, Charge, Kind, micro_usd
from wrapper.limits.local_store import LocalLimits, budget_period
from wrapper.limits.redis_store import _CALENDAR, RedisLimits

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def replicas():
    """Two stores on one Redis, as two wrapper replicas would hold them."""
    links = [RedisLink(REDIS_URL) for _ in range(2)]
    # settlements sent at once (settle_delay None): these tests read them from the other replica straight after
    yield [RedisLimits(link, lease_seconds=0.5, window_ms=2000, settle_delay=None) for link in links]
    for link in links:
        await link.close()


def key(kind: str) -> str:
    return f"gw:test:{{t-{uuid.uuid4().hex[:12]}}}:{kind}"


async def admit_many(stores, charges_of, count: int):
    """`count` admissions at once, spread over the stores; their answers in order."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    return ids, await asyncio.gather(*(stores[i % len(stores)].admit(ids[i], charges_of(i)) for i in range(count)))


async def test_sixty_four_concurrent_requests_against_two_replicas_admit_exactly_the_limit(replicas):
    rpm = Charge(key("requests"), Kind.requests, limit=25, amount=1)
    _, answers = await admit_many(replicas, lambda i: [rpm], 64)
    assert sum(a.admitted for a in answers) == 25
    refused = [a for a in answers if not a.admitted]
    assert all(a.refused == rpm and 0 < a.retry_after <= 2.0 for a in refused)
    assert sorted(a.remaining[rpm.key] for a in answers if a.admitted) == list(range(25))


async def test_retry_after_is_when_the_window_really_admits_again(replicas):
    rpm = Charge(key("requests"), Kind.requests, limit=3, amount=1)
    for _ in range(3):
        assert (await replicas[0].admit(uuid.uuid4().hex, [rpm])).admitted
    refused = await replicas[1].admit(uuid.uuid4().hex, [rpm])
    assert not refused.admitted and 1.8 < refused.retry_after <= 2.0
    await asyncio.sleep(refused.retry_after - 0.15)
    assert not (await replicas[1].admit(uuid.uuid4().hex, [rpm])).admitted  # not yet
    await asyncio.sleep(0.3)
    assert (await replicas[1].admit(uuid.uuid4().hex, [rpm])).admitted  # and now it is


async def test_in_any_window_no_more_than_the_limit_is_admitted_under_steady_demand(replicas):
    """Demand above the limit for 5 windows: admissions, as Redis timed them, never exceed it in any window."""
    rpm = Charge(key("requests"), Kind.requests, limit=20, amount=1)
    stamps = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, answers = await admit_many(replicas, lambda i: [rpm], 8)
        now = time.monotonic()
        stamps += [now] * sum(a.admitted for a in answers)
        await asyncio.sleep(0.02)
    # Client-side times lag Redis' by a round trip at most: allow 50 ms at the window's edges.
    for start in stamps:
        assert sum(start <= s < start + 2.0 - 0.05 for s in stamps) <= 20
    assert len(stamps) >= 20 * 2  # and the limit was used, window after window


async def test_tokens_are_reserved_and_settled_to_what_was_used(replicas):
    tpm = Charge(key("tokens"), Kind.tokens, limit=1000, amount=600)
    first = await replicas[0].admit("first", [tpm])
    assert first.admitted and first.remaining[tpm.key] == 400
    assert not (await replicas[1].admit("second", [tpm])).admitted  # 600 reserved + 600 > 1000
    await replicas[0].settle("first", tpm, 100, first)  # the answer used 100
    assert (await replicas[1].admit("second", [tpm])).admitted  # 100 + 600 <= 1000
    assert not (await replicas[1].admit("third", [Charge(tpm.key, Kind.tokens, 1000, 1001)])).admitted


@pytest.mark.parametrize("where", ["redis", "in process"])
async def test_a_scopes_requests_and_tokens_are_counted_together_exactly(replicas, where):
    """One scope with both limits (one log on Redis): each refuses on its own, in either order, and settles."""
    scope = key("x").rpartition(":")[0]
    stores = replicas if where == "redis" else [LocalLimits(window_ms=2000)] * 2
    rpm, tpm = Charge(f"{scope}:requests", Kind.requests, 3, 1), Charge(f"{scope}:tokens", Kind.tokens, 100, 40)
    first = await stores[0].admit("first", [rpm, tpm])
    second = await stores[1].admit("second", [tpm, rpm])  # listed the other way round
    assert (first.remaining, second.remaining) == ({rpm.key: 2, tpm.key: 60}, {rpm.key: 1, tpm.key: 20})
    refused = await stores[1].admit("third", [rpm, tpm])  # 80 + 40 tokens > 100
    assert not refused.admitted and refused.refused == tpm and 1.8 < refused.retry_after <= 2.0
    await stores[0].settle("first", tpm, 10, first)  # the first used 10
    third = await stores[1].admit("third", [rpm, tpm])
    assert third.admitted and third.remaining == {rpm.key: 0, tpm.key: 10}
    fourth = await stores[0].admit("fourth", [Charge(tpm.key, Kind.tokens, 100, 1), rpm])  # 3 requests already
    assert not fourth.admitted and fourth.refused == rpm and 1.8 < fourth.retry_after <= 2.0
    assert await stores[0].used([(rpm.key, Kind.requests), (tpm.key, Kind.tokens)]) == [3, 90]
    await asyncio.sleep(2.1)  # all left the window: it is empty, tokens and all
    assert await stores[0].used([(rpm.key, Kind.requests), (tpm.key, Kind.tokens)]) == [0, 0]
    again = await stores[1].admit("again", [rpm, tpm])
    assert again.remaining == {rpm.key: 2, tpm.key: 60}


async def test_concurrency_leases_are_exact_released_and_heal_when_a_replica_dies(replicas):
    slots = Charge(key("concurrency"), Kind.concurrency, limit=8, amount=1)
    ids, answers = await admit_many(replicas, lambda i: [slots], 64)
    held = [request_id for request_id, answer in zip(ids, answers) if answer.admitted]
    assert len(held) == 8
    await replicas[0].release(held[0], slots)
    assert (await replicas[1].admit("next", [slots])).admitted
    assert not (await replicas[1].admit("one-more", [slots])).admitted
    await asyncio.sleep(0.6)  # nobody releases (the replica that held them died): the leases expire
    _, answers = await admit_many(replicas, lambda i: [slots], 16)
    assert sum(a.admitted for a in answers) == 8


async def test_a_daily_budget_hit_by_concurrent_requests_is_never_overspent(replicas):
    budget = Charge(key("usd_day"), Kind.usd_day, limit=micro_usd(1.00), amount=micro_usd(0.05))
    ids, answers = await admit_many(replicas, lambda i: [budget], 64)
    admitted = [(i, a) for i, a in zip(ids, answers) if a.admitted]
    assert len(admitted) == 20  # $0.05 reserved each: 20 fit in $1.00
    refused = next(a for a in answers if not a.admitted)
    now = datetime.now(UTC)
    seconds_to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6)
    assert abs(refused.retry_after - seconds_to_midnight) < 2  # the day's end, UTC
    for request_id, admission in admitted:  # each really cost $0.03
        await replicas[0].settle(request_id, budget, micro_usd(0.03), admission)
    _, more = await admit_many(replicas, lambda i: [budget], 64)
    # $0.60 spent: $0.40 left holds 8 more reservations of $0.05
    assert sum(a.admitted for a in more) == 8


async def test_all_limits_of_a_request_are_taken_together_or_not_at_all(replicas):
    rpm = Charge(key("requests"), Kind.requests, limit=100, amount=1)
    slots = Charge(key("concurrency"), Kind.concurrency, limit=1, amount=1)
    assert (await replicas[0].admit("a", [rpm, slots])).admitted
    refused = await replicas[1].admit("b", [rpm, slots])
    assert not refused.admitted and refused.refused == slots
    again = await replicas[1].admit("c", [rpm])
    assert again.remaining[rpm.key] == 98  # the refused request took nothing from the rate limit


async def test_the_scripts_calendar_is_pythons():
    """Budget periods (UTC day, calendar month) as the Lua script computes them, across month and year ends."""
    redis = Redis.from_url(REDIS_URL)
    period = redis.register_script(_CALENDAR + "local p, e = period(ARGV[1], tonumber(ARGV[2])) return {p, e}")
    moments = [datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC),
               datetime(2026, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
               datetime(2100, 2, 28, 12, tzinfo=UTC), datetime(2000, 2, 29, tzinfo=UTC)]
    rng = random.Random(11)
    moments += [datetime.fromtimestamp(rng.uniform(0, 4e9), UTC) for _ in range(300)]
    try:
        for moment in moments:
            now_ms = int(moment.timestamp() * 1000)
            for kind in (Kind.usd_day, Kind.usd_month):
                name, ends = await period(args=[kind.value, now_ms])
                assert (name.decode(), int(ends)) == budget_period(kind, now_ms), (moment, kind)
    finally:
        await redis.aclose()


async def test_in_process_the_same_semantics_hold_on_its_own_clock():
    now = [1_800_000_000.0]
    store = LocalLimits(lease_seconds=0.5, clock=lambda: now[0], window_ms=60_000)
    rpm = Charge("r", Kind.requests, limit=100, amount=1)
    answers = [await store.admit(str(i), [rpm]) for i in range(130)]
    assert sum(a.admitted for a in answers) == 100 and answers[100].retry_after == 60.0
    now[0] += 59.999
    assert not (await store.admit("x", [rpm])).admitted
    now[0] += 0.001  # the first admission leaves the window exactly now
    assert (await store.admit("y", [rpm])).admitted
    budget = Charge("b", Kind.usd_month, limit=MICRO, amount=micro_usd(0.5))
    first = await store.admit("m1", [budget])
    assert first.admitted and (await store.admit("m2", [budget])).admitted
    assert not (await store.admit("m3", [budget])).admitted
    await store.settle("m1", budget, 0, first)  # cost nothing after all
    assert (await store.admit("m3", [budget])).admitted


async def test_resets_say_when_the_oldest_entry_leaves_the_window_on_both_stores(replicas):
    """x-ratelimit-reset-*: Redis and in process agree; a budget's reset is its period's end."""
    rpm = Charge(key("requests"), Kind.requests, limit=10, amount=1)
    first = await replicas[0].admit("a", [rpm])
    await asyncio.sleep(0.5)
    second = await replicas[1].admit("b", [rpm])
    assert 1.9 <= first.resets[rpm.key] <= 2.0 and 1.4 <= second.resets[rpm.key] <= 1.55  # a 2 s window
    assert abs(second.at_ms - first.at_ms - 500) < 100  # admission times on Redis' clock

    now = [1_000_000.0]
    local = LocalLimits(clock=lambda: now[0], window_ms=2000)
    budget = Charge("local:usd_day", Kind.usd_day, limit=100, amount=1)
    assert (await local.admit("a", [rpm, budget])).resets[rpm.key] == 2.0
    now[0] += 0.5
    admitted = await local.admit("b", [rpm, budget])
    assert admitted.resets[rpm.key] == 1.5 and admitted.at_ms == 1_000_000_500
    assert admitted.resets[budget.key] == (budget_period(Kind.usd_day, 1_000_000_500)[1] - 1_000_000_500) / 1000


def test_reset_durations_are_written_as_openai_writes_them():
    from wrapper.limits.step import duration

    assert [duration(s) for s in (0.02, 0.9994, 1.5, 59.25, 60, 361, 7322)] == \
        ["20ms", "999ms", "1.5s", "59.25s", "1m0s", "6m1s", "2h2m2s"]


@pytest.mark.parametrize("where", ["redis", "in process"])
async def test_the_report_reads_each_keys_counters_without_charging_them(replicas, where):
    """What `gateway limits show` and /v1/costs/budgets read: per-key counters found, their use now, nothing taken."""
    from wrapper.config.models import Tenant
    from wrapper.limits.report import usage

    tenant_id = f"t-{uuid.uuid4().hex[:8]}"
    tenant = Tenant.model_validate({"models": ["*"], "limits": {"mode": "enforce", "per_key": {
        "requests_per_minute": 10, "concurrency": 4, "usd_per_day": 2.0}}})
    store = replicas[0] if where == "redis" else LocalLimits(window_ms=2000)
    for key_id, calls in (("k1", 3), ("k2", 1)):
        for _ in range(calls):
            charges = [Charge(f"gw:lim:{{{tenant_id}}}:key:{key_id}:{kind.value}", kind, limit, amount)
                       for kind, limit, amount in ((Kind.requests, 10, 1), (Kind.concurrency, 4, 1),
                                                   (Kind.usd_day, micro_usd(2.0), micro_usd(0.25)))]
            assert (await store.admit(uuid.uuid4().hex, charges)).admitted
    for _ in range(2):  # read twice: reading takes nothing
        rows = {(row["scope"], row["kind"]): row["used"] for row in await usage(store, tenant_id, tenant)}
    assert rows == {("key:k1", "requests"): 3, ("key:k2", "requests"): 1, ("key:k1", "concurrency"): 3,
                    ("key:k2", "concurrency"): 1, ("key:k1", "usd_day"): 0.75, ("key:k2", "usd_day"): 0.25}


async def test_a_settlement_rides_on_the_next_admission_or_goes_alone_within_its_delay():
    links = [RedisLink(REDIS_URL) for _ in range(2)]
    stores = [RedisLimits(link, window_ms=2000, settle_delay=0.05) for link in links]
    slots = Charge(key("concurrency"), Kind.concurrency, limit=1, amount=1)
    rpm = Charge(slots.key.replace("concurrency", "requests"), Kind.requests, limit=100, amount=1)  # same tenant
    try:
        held = await stores[0].admit("a", [slots])
        await stores[0].release("a", slots)  # waits for the tenant's next admission on this replica...
        assert not (await stores[1].admit("b", [slots])).admitted  # ...so another replica still sees it held
        assert (await stores[0].admit("c", [rpm])).admitted  # this admission carries the release
        assert (await stores[1].admit("d", [slots])).admitted  # applied: the slot is free
        await stores[1].release("d", slots)  # nobody admits after it: sent alone once the delay is up
        await asyncio.sleep(0.1)
        assert (await stores[0].admit("e", [slots])).admitted and held.admitted
        await stores[0].release("e", slots)
        await stores[0].close()  # a replica shutting down sends what waits at once
        assert (await stores[1].admit("f", [slots])).admitted
    finally:
        for link in links:
            await link.close()


async def test_an_idle_tenants_counters_leave_redis_and_a_busy_ones_last_as_long_as_they_count(replicas):
    """Every key admission writes expires (Redis' memory does not grow with every tenant, key and user ever seen),
    but never before what it counts: a window outlives its last entry by its span, a lease key its last lease by
    a lease's length (a lease a hang-up extends keeps its key), a budget its period by a day. The expiry is renewed
    only when less than that is left (a write less per key and call)."""
    redis = Redis.from_url(REDIS_URL)
    try:
        scope = key("x").rpartition(":")[0]
        rpm, tpm = Charge(f"{scope}:requests", Kind.requests, 100, 1), Charge(f"{scope}:tokens", Kind.tokens, 10**6, 7)
        slots, day = Charge(f"{scope}:concurrency", Kind.concurrency, 10, 1), Charge(f"{scope}:usd_day", Kind.usd_day, 10**9, 5)
        store = replicas[0]  # window 2 s, leases 0.5 s
        first = await store.admit(uuid.uuid4().hex, [rpm, tpm, slots, day])
        budget_key = f"{day.key}:{first.periods[day.key]}"
        ttl = {k: await redis.pttl(k) for k in (f"{scope}:window", f"{scope}:window:t", slots.key, budget_key)}
        assert 2000 < ttl[f"{scope}:window"] <= 4000 and 2000 < ttl[f"{scope}:window:t"] <= 4000
        assert 1000 < ttl[slots.key] <= 2000
        ends_in = (int(first.periods[day.key]) + 1) * 86_400_000 - first.at_ms
        assert ends_in + 86_400_000 < ttl[budget_key] <= 2 * (ends_in + 86_400_000)

        await asyncio.sleep(0.3)
        second = await store.admit(uuid.uuid4().hex, [rpm, tpm, slots, day])
        assert second.admitted and await redis.pttl(f"{scope}:window") < ttl[f"{scope}:window"] - 200  # not renewed yet

        await asyncio.sleep(1.9)  # past half its life: the next admission renews it
        assert (await store.admit(uuid.uuid4().hex, [rpm, tpm, slots])).admitted
        assert await redis.pttl(f"{scope}:window") > 3000 and await redis.pttl(f"{scope}:window:t") > 3000
        assert (await store.used([(rpm.key, Kind.requests)]))[0] == 2  # the first left the window; two count

        await asyncio.sleep(4.1)  # idle: every window and lease key is gone
        assert not await redis.exists(f"{scope}:window", f"{scope}:window:t", slots.key)
    finally:
        await redis.aclose()
