"""`GET /v1/costs/budgets`: finance's view of budget use — each USD budget of a tenant (its own, its endpoints', each
user's and key's), the period it counts (UTC day or month), its limit, what is spent or reserved now and what is left.

Read from the same store admission charges (Redis, or this replica's memory when limits are kept in process), on
the store's counters as they are now: spent and settled, plus the reservations of requests still in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from wrapper.auth.principal import readable_tenants
from wrapper.config import ConfigStore, Role
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.limits.charges import BUDGET_KINDS, Kind
from wrapper.limits.report import current_period, usage

Admit = Callable[[Request, Role], Awaitable[RequestContext]]


def budgets_router(store, config: ConfigStore, admit: Admit, shared: bool) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/costs/budgets")
    async def budgets(request: Request) -> Response:
        ctx = await admit(request, Role.finance)
        tenants = config.current().tenants
        names = readable_tenants(ctx.principal, request.query_params.get("tenant")) or sorted(tenants)
        now_ms = int(time.time() * 1000)
        rows = []
        try:
            async with asyncio.timeout(5):
                for name in names:
                    if name not in tenants:
                        continue
                    for row in await usage(store, name, tenants[name], BUDGET_KINDS):
                        rows.append(_budget_row(name, row, now_ms))
        except (OSError, TimeoutError, RedisError):
            raise GatewayError(503, "Budget use cannot be read from the limits store right now.",
                               code="limits_unavailable") from None
        return Response(orjson.dumps({"object": "list", "store": "redis" if shared else "in process (this replica)",
                                      "data": rows}), media_type="application/json")

    return router


def _budget_row(tenant: str, row: dict, now_ms: int) -> dict:
    limit, used = float(row["limit"]), float(row["used"] or 0)
    return {"tenant": tenant, "scope": row["scope"], "kind": row["kind"],
            "period": current_period(Kind(row["kind"]), now_ms), "limit_usd": limit, "used_usd": round(used, 6),
            "remaining_usd": round(max(0.0, limit - used), 6), "used_percent": round(100 * used / limit, 1)}
