"""The audit API for compliance: list, look up, verify and export a tenant's records.

An `auditor` reads its own tenant only; an `admin` reads every tenant. The
tenant scope is decided here, once, from the principal, and handed to the
query layer, which applies it in SQL on every path.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from wrapper.audit.export import check_window, export_lines
from wrapper.audit.query import MAX_LIMIT, EventFilter, events_for_request, list_events, text_params, time_param
from wrapper.audit.signing import Signer
from wrapper.audit.store import AuditStore
from wrapper.auth.principal import readable_tenants
from wrapper.config import Role
from wrapper.context import RequestContext
from wrapper.errors import GatewayError, bad_request

Admit = Callable[[Request, Role], Awaitable[RequestContext]]


def audit_router(store: AuditStore, signer: Signer, admit: Admit) -> APIRouter:
    router = APIRouter(prefix="/v1/audit")
    engine = store.engine

    @router.get("/events")
    async def events(request: Request) -> Response:
        ctx = await admit(request, Role.auditor)
        query = request.query_params
        text_params(query)
        limit = _integer(query.get("limit", "100"), "limit", 1, MAX_LIMIT)
        status = _integer(query["status"], "status", 100, 599) if "status" in query else None
        flt = EventFilter(
            tenants=readable_tenants(ctx.principal, query.get("tenant")),
            since=time_param(query.get("since"), "since"), until=time_param(query.get("until"), "until"),
            user=query.get("user"), endpoint=query.get("endpoint"), model=query.get("model"),
            status=status, request_id=query.get("request_id"),
        )
        try:
            page, next_cursor = await list_events(engine, flt, query.get("cursor"), limit)
        except ValueError as exc:  # the one thing left to refuse: a cursor this API did not make
            raise bad_request(str(exc), param="cursor") from None
        return _json({"object": "list", "data": page, "next_cursor": next_cursor, "has_more": next_cursor is not None})

    @router.get("/events/{request_id}")
    async def event(request: Request, request_id: str) -> Response:
        ctx = await admit(request, Role.auditor)
        text_params(request.query_params, request_id)
        found = await events_for_request(engine, request_id, readable_tenants(ctx.principal, None))
        if not found:
            raise GatewayError(404, f"No audit record of request '{request_id}' is visible to this credential.",
                               code="audit_record_not_found")
        return _json({"object": "list", "data": found})

    @router.get("/verify")
    async def verify(request: Request) -> Response:
        ctx = await admit(request, Role.auditor)
        text_params(request.query_params)
        scope = readable_tenants(ctx.principal, request.query_params.get("tenant"))
        tenants = scope if scope is not None else await store.tenants()
        verdicts = [await store.verify(tenant, {signer.key_id: signer.public_key}) for tenant in tenants]
        return _json({
            "ok": all(v.ok for v in verdicts),
            "tenants": [{"tenant": v.tenant, "ok": v.ok, "checked": v.checked,
                         "first_bad_seq": v.first_bad_seq, "reason": v.reason} for v in verdicts],
        })

    @router.get("/export")
    async def export(request: Request) -> Response:
        ctx = await admit(request, Role.auditor)
        query = request.query_params
        text_params(query)
        tenant = query.get("tenant") or (None if Role.admin in ctx.principal.roles else ctx.principal.tenant)
        if tenant is None:
            raise bad_request("An export is of one tenant: pass ?tenant=.", param="tenant")
        readable_tenants(ctx.principal, tenant)
        try:
            since, until = check_window(time_param(query.get("since"), "since"), time_param(query.get("until"), "until"))
        except ValueError as exc:
            raise bad_request(str(exc), param="since") from None
        filename = f"audit-{tenant}.ndjson"
        return StreamingResponse(export_lines(engine, tenant, since, until, signer), media_type="application/x-ndjson",
                                 headers={"content-disposition": f'attachment; filename="{filename}"'})

    return router


def _integer(value: str, name: str, lowest: int, highest: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not lowest <= number <= highest:
        raise bad_request(f"{name} must be an integer from {lowest} to {highest}.", param=name)
    return number


def _json(content: dict) -> Response:
    try:
        body = orjson.dumps(content)
    except orjson.JSONEncodeError:  # a record nested deeper than orjson writes (kept from before bodies were bounded)
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")
