"""GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items: a stored response, for its tenant only.

The id must be one sealed for the caller's tenant (wrapper.ownership.ids), else
404 as for an id that does not exist, before LiteLLM is asked anything. LiteLLM
finds the deployment from the id inside; its answer's ids are sealed again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from wrapper.config import Role
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.ownership.step import OwnershipStep, SealIds, not_found
from wrapper.routes.shapes import Integer, String, invalid_value
from wrapper.upstream.client import LiteLLMClient, passed_headers
from wrapper.upstream.forward import sealed_body

_LIMIT, _ORDER = Integer(1, 100), String(choices=("asc", "desc"))


class _Lookup:
    """What sealed_body needs to know of a lookup: the seal travels as on the Responses route; no model."""

    name = "responses.lookup"
    metadata_field = "litellm_metadata"
    stream_usage_option = False


LOOKUP = _Lookup()


def response_lookups(litellm: LiteLLMClient, ownership: OwnershipStep, secret: bytes,
                     admit_caller: Callable[[Request, Role], Awaitable[RequestContext]]) -> APIRouter:
    router = APIRouter()

    async def call(ctx: RequestContext, method: str, response_id: str, suffix: str = "", body: dict | None = None):
        tenant = ctx.principal.tenant
        inner = ownership.opened(tenant, response_id, "Response")
        ctx.route, ctx.body, ctx.model_group = LOOKUP, body or {}, None
        try:
            reply = await litellm.call(method, f"/v1/responses/{quote(inner, safe='')}{suffix}",
                                       sealed_body(ctx, secret), ctx.request_id)
        except GatewayError as refusal:
            if refusal.status == 404 and not {"after", "before"} & set(ctx.body):
                # The provider no longer has it (deleted): its message names its own id and LiteLLM's its deployment.
                # Said with the id the client knows, as for an id that was never the tenant's.
                raise not_found("Response", response_id) from None
            raise
        return orjson.loads(reply.body), SealIds(ownership.ids, tenant), passed_headers(reply.headers)

    @router.get("/v1/responses/{response_id}")
    async def retrieve(request: Request, response_id: str) -> Response:
        answer, seal, headers = await call(await admit_caller(request, Role.app), "GET", response_id)
        seal.response(answer)
        return _json(answer, headers)

    @router.delete("/v1/responses/{response_id}")
    async def delete(request: Request, response_id: str) -> Response:
        answer, _, headers = await call(await admit_caller(request, Role.app), "DELETE", response_id)
        answer["id"] = response_id  # the id the client knows it by
        return _json(answer, headers)

    @router.get("/v1/responses/{response_id}/input_items")
    async def input_items(request: Request, response_id: str) -> Response:
        """One page of the items a response was given (`limit`, `order`, and `after`/`before` an item id)."""
        ctx = await admit_caller(request, Role.app)
        query, page = request.query_params, {}
        if "limit" in query:
            if not query["limit"].isdigit():
                raise invalid_value("limit", "must be an integer between 1 and 100.")
            page["limit"] = int(query["limit"])
            _LIMIT.check(page["limit"], "limit")
        if "order" in query:
            _ORDER.check(query["order"], "order")
            page["order"] = query["order"]
        for cursor in ("after", "before"):
            if cursor in query:  # an item id the client was given: sealed like every other
                page[cursor] = ownership.opened(ctx.principal.tenant, query[cursor], "Item", cursor)
        answer, seal, headers = await call(ctx, "GET", response_id, "/input_items", page)
        seal.items(answer)
        return _json(answer, headers)

    return router


def _json(answer: dict, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)
