"""What `gateway limits show --tenant T` prints: the limits in force for each scope of a tenant and, on Redis, their
current use (read only, on Redis' clock: what the admission script would count now)."""

from __future__ import annotations

from redis.asyncio import Redis

from wrapper.config.models import LimitSet, Tenant
from wrapper.limits.charges import BUDGET_KINDS, MICRO, WINDOW_MS, Kind
from wrapper.limits.local_store import budget_period
from wrapper.limits.step import _FIELDS


def scopes_of(tenant: Tenant) -> list[tuple[str, LimitSet, str]]:
    """(scope, its limits, how it is counted) for the tenant, its endpoints, and each user and key."""
    scopes = [("tenant", tenant.limits, "all its requests")]
    for name in tenant.endpoints:
        policy = tenant.policy(name)
        scopes.append((f"endpoint:{name}", policy.endpoint_limits, f"mode {policy.limits.mode.value}"))
    scopes.append(("user:*", tenant.limits.per_user, "each user on its own"))
    scopes.append(("key:*", tenant.limits.per_key, "each API key on its own"))
    return scopes


async def usage(redis: Redis | None, tenant_id: str, tenant: Tenant) -> list[dict]:
    """One row per limit set: scope, kind, limit, and what is used now (per counter, for user:* and key:*); with no
    Redis (limits kept in process), the limits only."""
    now = 0
    if redis is not None:
        seconds, micros = await redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000
    rows = []
    for scope, limits, counted in scopes_of(tenant):
        for kind, field in _FIELDS.items():
            limit = getattr(limits, field)
            if limit is None:
                continue
            pattern = f"gw:lim:{{{tenant_id}}}:{scope}:{kind.value}"
            if redis is None:
                rows.append({"scope": scope, "kind": kind.value, "limit": limit, "used": None, "counted": counted})
                continue
            keys = [pattern] if "*" not in scope else sorted(
                {key.decode() for key in await redis.keys(pattern) if not key.endswith((b":a", b":t"))})
            for key in keys or [pattern]:
                rows.append({"scope": key.split("}:", 1)[1].rsplit(":", 1)[0], "kind": kind.value, "limit": limit,
                             "used": await _used(redis, key, kind, now), "counted": counted})
    return rows


async def _used(redis: Redis, key: str, kind: Kind, now: int) -> float | None:
    if "*" in key:
        return None
    if kind is Kind.requests:
        return await redis.zcount(key, f"({now - WINDOW_MS}", "+inf")
    if kind is Kind.tokens:
        members = await redis.zrangebyscore(key, f"({now - WINDOW_MS}", "+inf")
        amounts = await redis.hmget(f"{key}:a", members) if members else []
        return sum(int(amount or 0) for amount in amounts)
    if kind is Kind.concurrency:
        return await redis.zcount(key, f"({now}", "+inf")
    if kind in BUDGET_KINDS:
        period, _ = budget_period(kind, now)
        return int(await redis.get(f"{key}:{period}") or 0) / MICRO
    return None
