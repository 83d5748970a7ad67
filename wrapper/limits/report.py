"""The limits in force for each scope of a tenant and their use now, read from the store without charging anything:
`gateway limits show --tenant T` (operators) and `GET /v1/costs/budgets` (finance)."""

from __future__ import annotations

from datetime import UTC, datetime

from wrapper.config.models import LimitSet, Tenant
from wrapper.limits.charges import BUDGET_KINDS, MICRO, Kind
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


async def usage(store, tenant_id: str, tenant: Tenant, kinds: frozenset[Kind] = frozenset(Kind)) -> list[dict]:
    """One row per counter: scope, kind, limit, and what is used now (budgets in dollars); `user:*` and `key:*` as
    one row per user or key seen. With no store (the CLI without Redis: the counters live in the replica), the
    limits alone, `used` None."""
    rows, counters = [], []
    for scope, limits, counted in scopes_of(tenant):
        for kind, field in _FIELDS.items():
            limit = getattr(limits, field)
            if limit is None or kind not in kinds:
                continue
            key = f"gw:lim:{{{tenant_id}}}:{scope}:{kind.value}"
            found = [key] if "*" not in scope or store is None else await _each(store, key, kind)
            for each in found:
                rows.append({"scope": each.split("}:", 1)[1].rsplit(":", 1)[0], "kind": kind.value, "limit": limit,
                             "used": None, "counted": counted})
                counters.append((each, kind))
    if store is not None:
        for row, (_, kind), used in zip(rows, counters, await store.used(counters), strict=True):
            row["used"] = used / MICRO if kind in BUDGET_KINDS else used
    return rows


async def _each(store, pattern: str, kind: Kind) -> list[str]:
    """Every user's or key's counter of this kind (a budget's, of any period: its current one is read)."""
    if kind in BUDGET_KINDS:  # its counters are the key and a period: `key:<day number>`, `key:<yyyymm>`
        return sorted({key.rsplit(":", 1)[0] for key in await store.keys_like(f"{pattern}:*")})
    return await store.keys_like(pattern)


def current_period(kind: Kind, now_ms: int) -> str:
    """A budget's period as people read it: 2026-12-02 for a day, 2026-12 for a month (UTC)."""
    name, _ = budget_period(kind, now_ms)
    if kind is Kind.usd_day:
        return datetime.fromtimestamp(int(name) * 86400, UTC).strftime("%Y-%m-%d")
    return f"{name[:4]}-{name[4:]}"
