"""`gateway limits show --tenant T`: the limits in force for a tenant and, with GATEWAY_REDIS_URL, their use now."""

from __future__ import annotations

import asyncio
import json
import sys

from redis.exceptions import RedisError

from wrapper.config import ConfigStore
from wrapper.limits.report import usage
from wrapper.settings import Settings


def run(args, settings: Settings) -> int:
    config = ConfigStore(settings.config).current()
    tenant = config.tenants.get(args.tenant)
    if tenant is None:
        print(f"gateway: no tenant {args.tenant!r}", file=sys.stderr)
        return 1
    # in process (no Redis), only the running replica knows its counters: the limits alone are shown
    try:
        rows = asyncio.run(_usage(settings.redis_url, args.tenant, tenant))
    except (OSError, TimeoutError, RedisError) as exc:
        print(f"gateway: cannot read the limits' use from Redis ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    policy = tenant.limits
    head = {"tenant": args.tenant, "mode": policy.mode.value, "on_store_failure": policy.on_store_failure,
            "store": "redis" if settings.redis_url else "in process (usage known to the running replica only)"}
    if args.json:
        print(json.dumps({**head, "limits": rows}, indent=2))
        return 0
    print(" ".join(f"{key}: {value}" for key, value in head.items()))
    print(f"{'scope':<28} {'kind':<12} {'limit':>12} {'used now':>12}  counted")
    for row in rows:
        used = "-" if row["used"] is None else f"{row['used']:g}"
        print(f"{row['scope']:<28} {row['kind']:<12} {row['limit']:>12g} {used:>12}  {row['counted']}")
    return 0


async def _usage(url: str | None, tenant_id: str, tenant) -> list[dict]:
    from wrapper.limits.redis_store import RedisLimits
    from wrapper.redis_link import RedisLink

    if url is None:
        return await usage(None, tenant_id, tenant)
    link = RedisLink(url, connect_timeout=2)
    try:
        async with asyncio.timeout(10):
            return await usage(RedisLimits(link), tenant_id, tenant)
    finally:
        await link.close()
