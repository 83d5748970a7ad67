"""Read a request body once, bounded, and check it against its route's allow-list.

Every field is checked against the route's `fields` (wrapper/routes) before
any step reads the body: a field the route does not know is a 400 naming it,
so is a wrong type (never a 500 further on), and so is a free-form value nested
more than MAX_DEPTH levels (wrapper/routes/shapes.py). JSON nested beyond what
the parser builds (1,024 levels) is refused as it is read.
"""

from __future__ import annotations

import asyncio
import re

import orjson
from starlette.requests import Request

from wrapper.errors import GatewayError, bad_request
from wrapper.routes import Route
from wrapper.routes.shapes import MAX_DEPTH, Object
from wrapper.upload import Upload, read_form

# Bodies larger than this are parsed and checked in a worker thread, so one large request does not hold every other
# one on the event loop for the time it takes.
INLINE_PARSE_BYTES = 256 * 1024


async def read_request(request: Request, route: Route, extra_fields: frozenset[str],
                       limit: int, timeout: float | None = None) -> tuple[dict, Upload | None]:
    """The body of a model call, checked: the route's fields, and the tenant's own extra ones; and the file of a
    multipart upload. A body that has not all arrived `timeout` seconds after its headers is a 408."""
    raw = await read_body(request, limit, timeout)
    if route.multipart:
        body, upload = await read_form(request.headers, raw, route.fields, extra_fields)
        route.check(body)
        return body, upload
    if len(raw) > INLINE_PARSE_BYTES:
        body = await asyncio.to_thread(parse, raw, route.fields, extra_fields)
    else:
        body = parse(raw, route.fields, extra_fields)
    route.check(body)
    return body, None


_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,256}")  # versions and feature names: printable, bounded


def api_headers(headers, names: tuple[str, ...]) -> dict[str, str]:
    """The route's API headers (anthropic-version ...) for LiteLLM; a malformed one is a 400 naming it."""
    passed = {}
    for name in names:
        value = headers.get(name)
        if value is not None:
            if not _HEADER_VALUE.fullmatch(value):
                raise GatewayError(400, f"The header '{name}' has a value that is not allowed.", code="invalid_header",
                                   param=name)
            passed[name] = value
    return passed


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):  # a client trickling its body must not hold the request for ever
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
                chunks.append(chunk)
    except TimeoutError:
        raise GatewayError(408, f"The request body did not arrive within {timeout:g} s.", code="request_timeout",
                           headers={"connection": "close"}) from None  # the rest of it must not be read as a request
    return b"".join(chunks)


def parse(raw: bytes, fields: Object, extra_fields: frozenset[str] = frozenset()) -> dict:
    body = parse_json_object(raw)
    fields.check(body, "", extra_fields)
    # null means absent (as the check read it), and is sent on as absent: LiteLLM's error path fails on a null
    # `metadata` (a 500 where its 400 was due)
    return {key: value for key, value in body.items() if value is not None}


def parse_json_object(raw: bytes) -> dict:
    if not raw:
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise bad_request(f"The request body is nested more than {MAX_DEPTH} levels deep.") from None
        raise bad_request(f"The request body is not valid JSON ({exc.args[0].split(':')[0]}).") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body
