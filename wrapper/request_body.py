"""Read a request body once, bounded, and check it against its route's allow-list.

Every field is checked against wrapper.request_fields before any step reads
the body: a field the route does not know is a 400 naming it, so is a wrong
type (never a 500 further on), and so is a free-form value nested more than
MAX_DEPTH levels (wrapper.shapes). JSON nested beyond what the parser builds
(1,024 levels) is refused as it is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from wrapper.errors import bad_request
from wrapper.request_fields import CHAT, EMBEDDINGS
from wrapper.shapes import MAX_DEPTH, Object

# Bodies larger than this are parsed and checked in a worker thread, so one large request does not hold every other
# one on the event loop for the time it takes.
INLINE_PARSE_BYTES = 256 * 1024


def parse_json_object(raw: bytes) -> dict:
    if not raw:
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _too_deep() from None
        raise bad_request(f"The request body is not valid JSON ({exc.args[0].split(':')[0]}).") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _too_deep():
    return bad_request(f"The request body is nested more than {MAX_DEPTH} levels deep.")


def _parser(shape: Object) -> Callable[[bytes, frozenset[str]], dict]:
    def parse(raw: bytes, extra_fields: frozenset[str] = frozenset()) -> dict:
        body = parse_json_object(raw)
        shape.check(body, "", extra_fields)
        return body

    return parse


parse_chat_request = _parser(CHAT)
parse_embeddings_request = _parser(EMBEDDINGS)


async def parse_request(parse: Callable[[bytes, frozenset[str]], dict], raw: bytes, extra_fields: frozenset[str]) -> dict:
    if len(raw) > INLINE_PARSE_BYTES:
        return await asyncio.to_thread(parse, raw, extra_fields)
    return parse(raw, extra_fields)
