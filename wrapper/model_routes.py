"""The model routes as one plain ASGI layer: a model call goes straight to its handler, the rest to FastAPI.

Model calls are the hot path and read and check their own bodies (wrapper.request), so FastAPI's
routing, dependency solving, exception and body-limit middleware do nothing for them but cost
~40 µs per request (bench/results/hot_path.md). The API routes (audit, costs, models, probes)
keep FastAPI. Errors take the same envelope either way (wrapper.errors).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from wrapper.errors import CLIENT_CLOSED, GatewayError

logger = logging.getLogger("wrapper.errors")


class ModelRoutes:
    def __init__(self, routes: dict, handle: Callable[[Request, object], Awaitable[Response]], app) -> None:
        self.routes = routes  # path -> route adapter (wrapper.routes)
        self.handle = handle  # the request flow of a model call
        self.app = app  # everything else

    async def __call__(self, scope, receive, send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            response = GatewayError(405, "Use POST for this route.", code="method_not_allowed",
                                    headers={"allow": "POST"}).to_response()
        else:
            try:
                response = await self.handle(Request(scope, receive), route)
            except GatewayError as refusal:
                response = refusal.to_response()
            except ClientDisconnect:  # it left while its body was read: recorded as gone, not as our failure
                response = GatewayError(CLIENT_CLOSED, "The client closed the connection.",
                                        type="client_closed_request").to_response()
            except Exception:
                logger.exception("unexpected error")
                response = GatewayError(500, "internal gateway error", type="api_error").to_response()
        await response(scope, receive, send)
