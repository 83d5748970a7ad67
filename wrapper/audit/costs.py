"""The cost API for finance: spend summed from the cost ledger.

The ledger is the audit log's cost columns (migration 0004): one row per
request, written in the same statement as its audit record, so the two never
disagree. `finance` reads its own tenant, `admin` every tenant. Sums are done
in the database, grouped by any of tenant, user, endpoint, model (requested),
model_served and tier, and optionally by day or hour (UTC).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson
from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from wrapper.audit.query import text_params, time_param
from wrapper.audit.schema import audit_events
from wrapper.auth.principal import readable_tenants
from wrapper.config import Role
from wrapper.context import RequestContext
from wrapper.errors import bad_request

_C = audit_events.c
GROUPS = {"tenant": _C.tenant, "user": _C.user_id, "endpoint": _C.endpoint, "model": _C.model,
          "model_served": _C.model_served, "tier": _C.tier}
GRANULARITIES = {"day": ("day", "%Y-%m-%d"), "hour": ("hour", "%Y-%m-%dT%H:00")}

Admit = Callable[[Request, Role], Awaitable[RequestContext]]


def costs_router(engine: AsyncEngine, admit: Admit) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/costs")
    async def costs(request: Request) -> Response:
        ctx = await admit(request, Role.finance)
        query = request.query_params
        text_params(query)
        tenants = readable_tenants(ctx.principal, query.get("tenant"))
        group_by = _group_by(query.get("group_by", "tenant"))
        granularity = query.get("granularity")
        if granularity is not None and granularity not in GRANULARITIES:
            raise bad_request(f"granularity must be one of {sorted(GRANULARITIES)}.", param="granularity")
        since, until = time_param(query.get("since"), "since"), time_param(query.get("until"), "until")
        rows = await spend(engine, tenants, group_by, granularity, since, until)
        total = {key: sum(row[key] for row in rows) for key in ("requests", "tokens_in", "tokens_out", "cost")}
        return Response(orjson.dumps({"object": "list", "group_by": group_by, "granularity": granularity,
                                      "data": rows, "total": total}), media_type="application/json")

    return router


async def spend(engine: AsyncEngine, tenants: list[str] | None, group_by: list[str], granularity: str | None,
                since: datetime | None, until: datetime | None) -> list[dict]:
    """Requests, tokens and cost of model calls, summed per group (and period)."""
    if tenants is not None and not tenants:
        return []
    keys = [GROUPS[name].label(name) for name in group_by]
    if granularity is not None:
        keys.append(_period(engine, granularity).label("period"))
    statement = (
        select(*keys, func.count().label("requests"), func.coalesce(func.sum(_C.tokens_in), 0).label("tokens_in"),
               func.coalesce(func.sum(_C.tokens_out), 0).label("tokens_out"), func.coalesce(func.sum(_C.cost), 0.0).label("cost"))
        .where(_C.model.is_not(None))  # model calls only: not audit reads, refusals before parsing, retention cuts
        .group_by(*[key.name for key in keys]).order_by(*[key.name for key in keys])
    )
    if tenants is not None:
        statement = statement.where(_C.tenant.in_(tenants))
    if since is not None:
        statement = statement.where(_C.occurred_at >= since)
    if until is not None:
        statement = statement.where(_C.occurred_at < until)
    async with engine.connect() as conn:
        rows = (await conn.execute(statement)).mappings().all()
    return [{**row, "period": _text(row["period"], granularity)} if granularity else dict(row) for row in rows]


def _period(engine: AsyncEngine, granularity: str):
    unit, pattern = GRANULARITIES[granularity]
    if engine.dialect.name == "postgresql":
        return func.date_trunc(unit, func.timezone("UTC", _C.occurred_at))
    return func.strftime(pattern, _C.occurred_at)  # SQLite keeps UTC wall time


def _text(period: object, granularity: str) -> str:
    if isinstance(period, datetime):
        return period.strftime(GRANULARITIES[granularity][1])
    return str(period)


def _group_by(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or len(set(names)) != len(names):
        raise bad_request(f"group_by takes distinct names from {sorted(GROUPS)}; got {value!r}.", param="group_by")
    return names
