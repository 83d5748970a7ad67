"""Errors in the OpenAI envelope: {"error": {"message", "type", "code"}}.

Every refusal the gateway makes is a GatewayError; the handlers installed by
`install_error_handlers` turn it, and anything unexpected, into that envelope.
Nothing unexpected ever leaks a stack trace or a secret to the client.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("wrapper.errors")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


# nginx's convention for "the client closed the connection before the answer": recorded, never seen.
CLIENT_CLOSED = 499


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "api_error")
        self.code = code
        self.param = param
        self.headers = headers or {}

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_response(self) -> Response:
        return Response(
            orjson.dumps(self.envelope()),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )

    def sse_event(self) -> bytes:
        """The error as a final SSE event, for failures after a stream has started."""
        return b"data: " + orjson.dumps(self.envelope()) + b"\n\n"


def error_in(body: bytes) -> dict | None:
    """The inner object of an OpenAI error envelope in a response body, if the body is one."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return error if isinstance(error, dict) else None


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


async def _gateway_error(request: Request, exc: GatewayError) -> Response:
    return exc.to_response()


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) else "request refused"
    served = getattr(request.app.state, "routes_served", None)
    if exc.status_code == 404 and served:  # a wrong path: say which exist
        served = served()
        message = f"No such route: {request.method} {request.url.path}. The gateway serves: {', '.join(served)}."
        return GatewayError(404, message, code="route_not_found").to_response()
    return GatewayError(exc.status_code, message, headers=dict(exc.headers or {})).to_response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error")
    return GatewayError(500, "internal gateway error", type="api_error").to_response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
